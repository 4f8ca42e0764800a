/*
 * fuzz_crl: the CRL loader (policy/crl.c) on hostile ssl-crl files: PEM
 * blocks or DER, through wolfSSL's PEM decoder, its CRL parser (ParseCRL:
 * CVE-2026-3548 was a heap and a stack overflow on crafted CRL numbers in
 * 5.5.4) and signature check, and wolfSSL_CTX_LoadCRLBuffer.
 *
 * Input: the ssl-ca PEM, FUZZ_SEP, then the ssl-crl file.  Without a
 * separator the whole input is the CRL file and ssl-ca is pki.h's CA.
 * Properties: a refusal says why; every CRL described has an issuer, a
 * count of entries >= 0 and at most CRL_MAX CRLs are kept.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "../../policy/crl.h"
#include "fuzz.h"
#include "pki.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	wolfSSL_Init();
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct crl_info info[CRL_MAX];
	struct fuzz_part part[2];
	const uint8_t *ca = (const uint8_t *)fuzz_ca_pem, *crl = data;
	size_t calen = sizeof(fuzz_ca_pem) - 1, crllen = size;
	WOLFSSL_CTX *ctx;
	char err[512];
	int n = 0, i;

	if (fuzz_split(data, size, part, 2) == 2) {
		ca = part[0].fp_p;
		calen = part[0].fp_n;
		crl = part[1].fp_p;
		crllen = part[1].fp_n;
	}
	if ((ctx = wolfSSL_CTX_new(wolfSSLv23_server_method())) == NULL)
		return (0);
	if (calen == 0 || wolfSSL_CTX_load_verify_buffer(ctx, ca, (long)calen,
	    WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
		goto out;
	err[0] = '\0';
	if (crl_load(ctx, ca, calen, crl, crllen, 0, time(NULL), info, &n,
	    CRL_MAX, err, sizeof(err)) == -1)
		fuzz_check(err[0] != '\0', "a CRL refused without a reason");
	fuzz_check(n >= 0 && n <= CRL_MAX, "more CRLs kept than CRL_MAX");
	for (i = 0; i < n; i++) {
		fuzz_check(info[i].ci_issuer[0] != '\0', "no issuer");
		fuzz_check(info[i].ci_entries >= 0, "a negative entry count");
		fuzz_check(info[i].ci_file == 0, "a CRL of another file");
	}
out:
	wolfSSL_CTX_free(ctx);
	return (0);
}
