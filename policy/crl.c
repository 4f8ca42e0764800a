/*
 * crl.c: the CRLs of a certificate set, parsed and checked by wolfSSL.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "crl.h"

#define PEM_BEGIN	"-----BEGIN "
#define CRL_BEGIN	"-----BEGIN X509 CRL-----"

/* An ASN.1 date of DecodedCRL (format is its tag) as a time_t, or 0. */
static time_t
crl_time(const uint8_t *d, uint8_t format)
{
	struct tm tm;
	int len = format == ASN_UTC_TIME ? 13 : 15;

	if (format != ASN_UTC_TIME && format != ASN_GENERALIZED_TIME)
		return (0);
	memset(&tm, 0, sizeof(tm));
	if (wc_GetDateAsCalendarTime(d, len, format, &tm) != 0)
		return (0);
	return (timegm(&tm));
}

/*
 * The "CN=..." of the CA in the PEM bytes ca whose subject hashes to hash
 * (the CRL's issuer), into buf; 0, or -1 when none does.
 */
static int
issuer_name(const uint8_t *ca, size_t calen, const uint8_t *hash, char *buf,
    size_t len)
{
	static __thread uint8_t der[64 * 1024];
	const uint8_t *p = ca, *end = ca + calen, *b, *e;
	DecodedCert dc;
	int n, found = -1;

	while (found == -1 && (b = memmem(p, (size_t)(end - p), PEM_BEGIN,
	    sizeof(PEM_BEGIN) - 1)) != NULL) {
		e = memmem(b + 1, (size_t)(end - b - 1), PEM_BEGIN,
		    sizeof(PEM_BEGIN) - 1);
		if (e == NULL)
			e = end;
		p = e;
		n = wolfSSL_CertPemToDer(b, (int)(e - b), der, sizeof(der),
		    CERT_TYPE);
		if (n <= 0)
			continue;
		InitDecodedCert(&dc, der, (word32)n, NULL);
		if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) == 0 &&
		    memcmp(dc.subjectHash, hash, KEYID_SIZE) == 0) {
			snprintf(buf, len, "CN=%.*s", dc.subjectCNLen > 0 ?
			    dc.subjectCNLen : 0, dc.subjectCN ? dc.subjectCN :
			    "");
			found = 0;
		}
		FreeDecodedCert(&dc);
	}
	return (found);
}

/* Why ParseCRL refused a CRL, for people. */
static const char *
parse_error(int r)
{
	switch (r) {
	case ASN_CRL_NO_SIGNER_E:
		return ("is signed by none of the CAs in ssl-ca: give the "
		    "CRLs of the CAs that issue the peers' certificates");
	case ASN_CRL_CONFIRM_E:
	case ASN_SIG_CONFIRM_E:
	case SIG_VERIFY_E:
		return ("has a signature that does not verify with its CA in "
		    "ssl-ca");
	case ASN_CRIT_EXT_E:
		return ("has a critical extension dmtls does not know");
	default:
		return ("does not parse as a CRL (truncated, or not a CRL)");
	}
}

/* One DER CRL: parse, check, describe, load.  0 or -1. */
static int
one_crl(WOLFSSL_CTX *ctx, const uint8_t *ca, size_t calen, const uint8_t *der,
    size_t len, int nth, time_t now, struct crl_info *ci, char *err,
    size_t errlen)
{
	WOLFSSL_CERT_MANAGER *cm = wolfSSL_CTX_GetCertManager(ctx);
	DecodedCRL dcrl;
	int r;

	if (len == 0 || len > 0x7fffffff) {
		snprintf(err, errlen, "CRL %d is empty", nth);
		return (-1);
	}
	/* NO_VERIFY skips only the date check: the signature is verified
	 * with the CAs of cm, and a CRL no CA of ssl-ca signed is refused. */
	InitDecodedCRL(&dcrl, NULL);
	r = ParseCRL(NULL, &dcrl, der, (word32)len, NO_VERIFY, cm);
	if (r != 0) {
		FreeDecodedCRL(&dcrl);
		snprintf(err, errlen, "CRL %d %s", nth, parse_error(r));
		return (-1);
	}
	memset(ci, 0, sizeof(*ci));
	if (issuer_name(ca, calen, dcrl.issuerHash, ci->ci_issuer,
	    sizeof(ci->ci_issuer)) == -1)
		snprintf(ci->ci_issuer, sizeof(ci->ci_issuer), "?");
	ci->ci_this_update = crl_time(dcrl.lastDate, dcrl.lastDateFormat);
	ci->ci_next_update = dcrl.nextDateFormat != 0 ?
	    crl_time(dcrl.nextDate, dcrl.nextDateFormat) : 0;
	ci->ci_entries = dcrl.totalCerts;
	ci->ci_expired = ci->ci_next_update != 0 && ci->ci_next_update <= now;
	FreeDecodedCRL(&dcrl);
	if (ci->ci_expired)
		return (0);	/* left out: its CA's peers are refused */
	r = wolfSSL_CTX_LoadCRLBuffer(ctx, der, (long)len,
	    WOLFSSL_FILETYPE_ASN1);
	if (r != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "CRL %d %s", nth, parse_error(r));
		return (-1);
	}
	return (0);
}

int
crl_load(WOLFSSL_CTX *ctx, const uint8_t *ca, size_t calen,
    const uint8_t *buf, size_t len, int file, time_t now,
    struct crl_info *out, int *n, int max, char *err, size_t errlen)
{
	const uint8_t *p = buf, *end = buf + len, *b, *e;
	DerBuffer *der = NULL;
	int nth = 0, r;

	if (len == 0) {
		snprintf(err, errlen, "is empty");
		return (-1);
	}
	if (wolfSSL_CTX_EnableCRL(ctx, WOLFSSL_CRL_CHECK) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot enable CRL checking");
		return (-1);
	}
	if (memmem(buf, len, PEM_BEGIN, sizeof(PEM_BEGIN) - 1) == NULL) {
		/* DER: the whole file is one CRL. */
		if (*n >= max) {
			snprintf(err, errlen, "is one CRL too many (at most %d "
			    "per route)", max);
			return (-1);
		}
		if (one_crl(ctx, ca, calen, buf, len, 1, now, &out[*n], err,
		    errlen) == -1)
			return (-1);
		out[(*n)++].ci_file = file;
		return (0);
	}
	while ((b = memmem(p, (size_t)(end - p), PEM_BEGIN,
	    sizeof(PEM_BEGIN) - 1)) != NULL) {
		nth++;
		e = memmem(b + 1, (size_t)(end - b - 1), PEM_BEGIN,
		    sizeof(PEM_BEGIN) - 1);
		if (e == NULL)
			e = end;
		p = e;
		if ((size_t)(e - b) < sizeof(CRL_BEGIN) - 1 ||
		    memcmp(b, CRL_BEGIN, sizeof(CRL_BEGIN) - 1) != 0) {
			snprintf(err, errlen, "PEM block %d is not an X509 CRL",
			    nth);
			return (-1);
		}
		if (*n >= max) {
			snprintf(err, errlen, "holds more CRLs than a route "
			    "takes (%d)", max);
			return (-1);
		}
		if (wc_PemToDer(b, (long)(e - b), CRL_TYPE, &der, NULL, NULL,
		    NULL) != 0 || der == NULL) {
			wc_FreeDer(&der);
			snprintf(err, errlen, "PEM block %d is cut short or "
			    "not valid (truncated or half-written file)", nth);
			return (-1);
		}
		r = one_crl(ctx, ca, calen, der->buffer, der->length, nth, now,
		    &out[*n], err, errlen);
		wc_FreeDer(&der);
		if (r == -1)
			return (-1);
		out[(*n)++].ci_file = file;
	}
	return (0);
}

void
crl_serial_hex(const uint8_t *der, size_t len, char *buf, size_t buflen)
{
	DecodedCert dc;
	size_t o = 0;
	int i;

	snprintf(buf, buflen, "?");
	if (der == NULL || len == 0 || len > 0x7fffffff)
		return;
	InitDecodedCert(&dc, der, (word32)len, NULL);
	if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) == 0 &&
	    dc.serialSz > 0) {
		for (i = 0; i < dc.serialSz && o + 3 <= buflen; i++, o += 2)
			snprintf(buf + o, buflen - o, "%02X", dc.serial[i]);
	}
	FreeDecodedCert(&dc);
}
