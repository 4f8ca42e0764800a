/*
 * subject.h: the attributes of a certificate's Subject, read straight from
 * its DER.  wolfSSL's decoder keeps only the last CN and one OU of a
 * subject; the policy needs every one (DESIGN section 4).
 */
#ifndef DMTLS_SUBJECT_H
#define DMTLS_SUBJECT_H

#include <stddef.h>
#include <stdint.h>

/* DER tags of the string types a name may be written in. */
#define DER_UTF8STRING		0x0c
#define DER_PRINTABLESTRING	0x13
#define DER_TELETEXSTRING	0x14
#define DER_IA5STRING		0x16
#define DER_VISIBLESTRING	0x1a

/*
 * subject_attr_cb(arg, oid, oidlen, tag, val, vallen): one attribute of the
 * Subject: the contents of its OID, the DER tag of its value and the value's
 * contents.  The pointers point into the certificate.
 */
typedef void subject_attr_cb(void *, const uint8_t *, size_t, int,
    const uint8_t *, size_t);

/*
 * subject_each(der, len, cb, arg): call cb for every attribute of the
 * Subject of the DER certificate der[0..len), in the order of the
 * certificate, every attribute of a multi-valued RDN included.  Every
 * length is checked against what encloses it; nothing past der + len is
 * read.  Returns 0, or -1 when the certificate up to and including its
 * Subject is not well formed (cb may have been called for some attributes
 * before the fault was found).
 */
int subject_each(const uint8_t *, size_t, subject_attr_cb *, void *);

#endif
