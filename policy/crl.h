/*
 * crl.h: certificate revocation lists of a certificate set (DESIGN 4).
 *
 * A route's ssl-crl files hold CRLs (PEM blocks, or one DER CRL) of the CAs
 * in its ssl-ca.  crl_load() parses each with wolfSSL, checks that a CA of
 * the set signed it, describes it, and gives wolfSSL's revocation check the
 * ones still current; a CRL past its nextUpdate is kept out, so the peers
 * of its CA are refused (fail closed).
 */
#ifndef DMTLS_CRL_H
#define DMTLS_CRL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#define CRL_FILES_MAX	16	/* ssl-crl files of one route */
#define CRL_MAX		32	/* CRLs of one set, all files together */

/* What one CRL says, for /status, /metrics and `dmtls check`. */
struct crl_info {
	int	ci_file;		/* index into the route's ssl-crl */
	char	ci_issuer[300];		/* "CN=..." of the CA that signed it */
	time_t	ci_this_update;
	time_t	ci_next_update;		/* 0 when it has none */
	int	ci_entries;		/* revoked serials listed */
	int	ci_expired;		/* past nextUpdate when loaded */
};

/*
 * crl_load(ctx, ca, calen, buf, len, file, now, out, n, max, err, errlen):
 * parse the CRLs in buf (one ssl-crl file's bytes: PEM blocks, or DER) with
 * ctx's CAs (loaded from the PEM bytes ca, which name them), append one
 * crl_info per CRL to out[*n] (at most max in all, file as ci_file), and
 * load into ctx, with revocation checking of the peer's leaf enabled, each
 * one whose nextUpdate is after now.  0, or -1 with the reason in err: a
 * block that does not parse, a CRL that no CA of ssl-ca signed, a bad
 * signature, too many CRLs.
 */
int crl_load(WOLFSSL_CTX *, const uint8_t *, size_t, const uint8_t *, size_t,
    int, time_t, struct crl_info *, int *, int, char *, size_t);

/*
 * crl_serial_hex(der, len, buf, buflen): the serial number of the DER
 * certificate der as colon-free upper-case hex ("1A2B"), or "?" when it
 * does not parse.
 */
void crl_serial_hex(const uint8_t *, size_t, char *, size_t);

#endif
