/*
 * peerid.c: read the holder's names out of a DER certificate with wolfCrypt.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn.h>

#include "policy.h"

static void
copy_name(char *dst, size_t dstlen, const char *src, int srclen)
{
	size_t n;

	if (src == NULL || srclen <= 0) {
		dst[0] = '\0';
		return;
	}
	n = (size_t)srclen < dstlen - 1 ? (size_t)srclen : dstlen - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	/* A NUL inside a name must not shorten what the policy compares. */
	if (strlen(dst) != n)
		dst[0] = '\0';
}

int
peer_id_from_der(const uint8_t *der, size_t len, struct peer_id *id)
{
	DecodedCert dc;
	DNS_entry *e;
	int rc = -1;

	memset(id, 0, sizeof(*id));
	InitDecodedCert(&dc, der, (word32)len, NULL);
	if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0)
		goto done;
	copy_name(id->pi_cn, sizeof(id->pi_cn), dc.subjectCN, dc.subjectCNLen);
	if (dc.subjectOU != NULL && dc.subjectOULen > 0) {
		copy_name(id->pi_ou[0], sizeof(id->pi_ou[0]), dc.subjectOU,
		    dc.subjectOULen);
		id->pi_nou = id->pi_ou[0][0] != '\0';
	}
	for (e = dc.altNames; e != NULL; e = e->next) {
		switch (e->type) {
		case ASN_DNS_TYPE:
			if (id->pi_ndns < PEER_MAX_NAMES)
				copy_name(id->pi_dns[id->pi_ndns++],
				    sizeof(id->pi_dns[0]), e->name, e->len);
			break;
		case ASN_URI_TYPE:
			if (id->pi_nuri < PEER_MAX_NAMES)
				copy_name(id->pi_uri[id->pi_nuri++],
				    sizeof(id->pi_uri[0]), e->name, e->len);
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
	return (rc);
}
