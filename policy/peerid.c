/*
 * peerid.c: read the holder's names out of a DER certificate: the SANs
 * with wolfCrypt, every CN and OU of the subject with subject.c (wolfCrypt
 * keeps only the last CN and one OU).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn.h>

#include "policy.h"
#include "subject.h"

/* Contents of the OIDs id-at-commonName and id-at-organizationalUnitName. */
static const uint8_t oid_cn[] = { 0x55, 0x04, 0x03 };
static const uint8_t oid_ou[] = { 0x55, 0x04, 0x0b };

/*
 * Keep the name s[0..n) in dst, which has room for max bytes and a NUL;
 * bytes: it is a string of bytes (not a BMPString or UniversalString, whose
 * bytes are not its characters).  Returns NULL when dst holds the whole
 * name, else why it is not compared (dst then a cut form for logs, a NUL
 * shown as \0).
 */
static const char *
keep_name(char *dst, size_t max, int bytes, const uint8_t *s, size_t n)
{
	const char *bad;
	size_t i, o = 0;

	if (n == 0)
		bad = "empty";
	else if (n > max)
		bad = max == PEER_URI_MAX ? "longer than 2048 bytes" :
		    "longer than 255 bytes";
	else if (!bytes)
		bad = "not a byte string";
	else if (memchr(s, '\0', n) != NULL)
		bad = "holds a NUL byte";
	else {
		memcpy(dst, s, n);
		dst[n] = '\0';
		return (NULL);
	}
	for (i = 0; i < n; i++) {
		if (s[i] != '\0' && o < max)
			dst[o++] = (char)s[i];
		else if (s[i] == '\0' && o + 1 < max) {
			dst[o++] = '\\';
			dst[o++] = '0';
		} else
			break;
	}
	dst[o] = '\0';
	return (bad);
}

/* Count one more name of a kind; keep it when there is room. */
static void
add_name(struct peer_name *v, size_t *n, int bytes, const uint8_t *s,
    size_t len)
{
	if (*n < PEER_MAX_NAMES) {
		v[*n].pn_len = len;
		v[*n].pn_bad = keep_name(v[*n].pn_s, PEER_NAME_MAX, bytes, s,
		    len);
	}
	(*n)++;
}

/* add_name() for a URI SAN. */
static void
add_uri(struct peer_uri *v, size_t *n, const uint8_t *s, size_t len)
{
	if (*n < PEER_MAX_NAMES) {
		v[*n].pn_len = len;
		v[*n].pn_bad = keep_name(v[*n].pn_s, PEER_URI_MAX, 1, s, len);
	}
	(*n)++;
}

static int
byte_string(int tag)
{
	return (tag == DER_UTF8STRING || tag == DER_PRINTABLESTRING ||
	    tag == DER_TELETEXSTRING || tag == DER_IA5STRING ||
	    tag == DER_VISIBLESTRING);
}

static void
on_attr(void *arg, const uint8_t *oid, size_t oidlen, int tag,
    const uint8_t *val, size_t len)
{
	struct peer_id *id = arg;

	if (oidlen == sizeof(oid_cn) && memcmp(oid, oid_cn, oidlen) == 0)
		add_name(id->pi_cn, &id->pi_ncn, byte_string(tag), val, len);
	else if (oidlen == sizeof(oid_ou) && memcmp(oid, oid_ou, oidlen) == 0)
		add_name(id->pi_ou, &id->pi_nou, byte_string(tag), val, len);
}

int
peer_id_from_der(const uint8_t *der, size_t len, struct peer_id *id)
{
	DecodedCert dc;
	DNS_entry *e;
	int rc = -1;

	memset(id, 0, sizeof(*id));
	InitDecodedCert(&dc, der, (word32)len, NULL);
	if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0 ||
	    subject_each(der, len, on_attr, id) == -1)
		goto done;
	for (e = dc.altNames; e != NULL; e = e->next) {
		if (e->name == NULL || e->len < 0)
			continue;
		switch (e->type) {
		case ASN_DNS_TYPE:
			add_name(id->pi_dns, &id->pi_ndns, 1,
			    (const uint8_t *)e->name, (size_t)e->len);
			break;
		case ASN_URI_TYPE:
			add_uri(id->pi_uri, &id->pi_nuri,
			    (const uint8_t *)e->name, (size_t)e->len);
			break;
		case ASN_IP_TYPE:
			if (id->pi_nip < PEER_MAX_NAMES && (e->len == 4 ||
			    e->len == 16))
				inet_ntop(e->len == 4 ? AF_INET : AF_INET6,
				    e->name, id->pi_ip[id->pi_nip++],
				    sizeof(id->pi_ip[0]));
			break;
		}
	}
	rc = 0;
done:
	FreeDecodedCert(&dc);
	if (rc == -1)
		memset(id, 0, sizeof(*id));
	return (rc);
}
