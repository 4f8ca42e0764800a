/*
 * crypto: AES-128-GCM and ChaCha20-Poly1305 throughput and ECDSA P-256 sign
 * rate of the linked wolfSSL, so anyone can see whether its assembly paths
 * are in effect (about 6 GB/s AES-GCM per core with them, 0.2 without).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>

#define BUFSZ	16384
#define SECS	0.5

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec + ts.tv_nsec / 1e9);
}

static unsigned char in[BUFSZ], out[BUFSZ];

static double
bench_aesgcm(void)
{
	Aes aes;
	unsigned char key[16] = { 1 }, iv[12] = { 2 }, tag[16];
	double t0 = now(), t;
	long n = 0;

	wc_AesInit(&aes, NULL, INVALID_DEVID);
	wc_AesGcmSetKey(&aes, key, sizeof(key));
	do {
		wc_AesGcmEncrypt(&aes, out, in, BUFSZ, iv, sizeof(iv), tag,
		    sizeof(tag), NULL, 0);
		n++;
	} while ((t = now() - t0) < SECS);
	wc_AesFree(&aes);
	return (n * (double)BUFSZ / t / 1e6);
}

static double
bench_chacha(void)
{
	unsigned char key[32] = { 1 }, iv[12] = { 2 }, tag[16];
	double t0 = now(), t;
	long n = 0;

	do {
		wc_ChaCha20Poly1305_Encrypt(key, iv, NULL, 0, in, BUFSZ, out,
		    tag);
		n++;
	} while ((t = now() - t0) < SECS);
	return (n * (double)BUFSZ / t / 1e6);
}

static double
bench_ecdsa(void)
{
	ecc_key key;
	WC_RNG rng;
	unsigned char hash[32] = { 3 }, sig[128];
	word32 siglen;
	double t0, t;
	long n = 0;

	wc_InitRng(&rng);
	wc_ecc_init(&key);
	wc_ecc_make_key(&rng, 32, &key);
	t0 = now();
	do {
		siglen = sizeof(sig);
		wc_ecc_sign_hash(hash, sizeof(hash), sig, &siglen, &rng, &key);
		n++;
	} while ((t = now() - t0) < SECS);
	wc_ecc_free(&key);
	wc_FreeRng(&rng);
	return (n / t);
}

int
main(void)
{
	memset(in, 0x5a, sizeof(in));
	printf("AES-128-GCM        %8.0f MB/s\n", bench_aesgcm());
	printf("ChaCha20-Poly1305  %8.0f MB/s\n", bench_chacha());
	printf("ECDSA P-256 sign   %8.0f /s\n", bench_ecdsa());
	return (0);
}
