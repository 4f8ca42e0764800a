/*
 * fuzz_certset: the certificate-set loader (policy/certset.c) on hostile
 * files: PEM bundles of CAs, a certificate chain and a private key, read
 * by certsrc_new() and, rewritten, by certsrc_acquire() as a rotation
 * would, through wolfSSL's PEM and DER decoders and key checks (the
 * sanitizer-instrumented build).
 *
 * Input: a flags byte, then up to six files split by FUZZ_SEP: ssl-ca,
 * ssl-cert, ssl-key as loaded at start, then ssl-ca, ssl-cert, ssl-key as
 * rewritten before the next connection (absent: left as they are).  Flags:
 * bit 0 a server context (else a client's); bit 1 ask clients for a
 * certificate; bit 2 no ssl-cert and ssl-key (a client route may have
 * none).  The files are memfds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/certset.h"
#include "fuzz.h"

static int fds[3];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fds[0] = fuzz_memfd("ssl-ca");
	fds[1] = fuzz_memfd("ssl-cert");
	fds[2] = fuzz_memfd("ssl-key");
	return (0);
}

/* The log callback: the note must be whole. */
static void
on_note(void *arg, const struct certset_note *n)
{
	(void)arg;
	fuzz_check(n->cn_event != NULL, "a note without an event");
	fuzz_check(n->cn_msg != NULL || (n->cn_file != NULL &&
	    n->cn_key != NULL && n->cn_reason != NULL),
	    "a note without its fields");
}

static void
look(struct certset *cs)
{
	fuzz_check(certset_ctx(cs) != NULL, "a set without a context");
	fuzz_check(strlen(certset_digest(cs)) == 64, "a digest not whole");
	(void)strlen(certset_subject(cs));
	(void)strlen(certset_sans(cs));
	(void)certset_not_after(cs);
	(void)certset_chains(cs);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_part part[6];
	struct certsrc_params p;
	struct certsrc *src;
	struct certset *cs;
	char err[1024];
	size_t n, i;
	int flags;

	if (size < 1)
		return (0);
	flags = data[0];
	n = fuzz_split(data + 1, size - 1, part, 6);
	for (i = 0; i < 3; i++)
		if (i < n)
			fuzz_memfd_set(fds[i], part[i].fp_p, part[i].fp_n);
		else
			fuzz_memfd_set(fds[i], "", 0);
	memset(&p, 0, sizeof(p));
	p.name = "fuzz";
	p.ssl_ca = fuzz_memfd_path(fds[0]);
	if (!(flags & 4)) {
		p.ssl_cert = fuzz_memfd_path(fds[1]);
		p.ssl_key = fuzz_memfd_path(fds[2]);
	}
	p.tls_server = flags & 1;
	p.verify_client = (flags >> 1) & 1;
	p.reread = 1;
	p.log = on_note;
	err[0] = '\0';
	if ((src = certsrc_new(&p, err, sizeof(err))) == NULL) {
		fuzz_check(err[0] != '\0', "refused without a message");
		return (0);
	}
	cs = certsrc_current(src);
	look(cs);
	certset_release(cs);
	/* A rotation: the files rewritten, then the next connection. */
	for (i = 3; i < n; i++)
		fuzz_memfd_set(fds[i - 3], part[i].fp_p, part[i].fp_n);
	cs = certsrc_acquire(src);
	look(cs);
	certset_release(cs);
	certsrc_free(src);
	return (0);
}
