/*
 * mysqlkey.c: the RSA key pair offered to MySQL clients, shared by every
 * worker under one lock.
 */
#include <pthread.h>
#include <stdio.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include "mysqlkey.h"

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static RsaKey key;
static WC_RNG key_rng;
static int key_ready;
static char key_pem[MYSQLKEY_PEM_MAX];
static size_t key_pem_len;

int
mysqlkey_init(char *err, size_t errlen)
{
	uint8_t der[1024];
	int n, rc = -1;

	pthread_mutex_lock(&key_lock);
	if (key_ready) {
		rc = 0;
		goto out;
	}
	if (wc_InitRng(&key_rng) != 0 || wc_InitRsaKey(&key, NULL) != 0 ||
	    wc_MakeRsaKey(&key, 2048, WC_RSA_EXPONENT, &key_rng) != 0 ||
	    wc_RsaSetRNG(&key, &key_rng) != 0) {
		snprintf(err, errlen, "cannot generate the RSA key offered to "
		    "MySQL clients");
		goto out;
	}
	if ((n = wc_RsaKeyToPublicDer(&key, der, sizeof(der))) <= 0 ||
	    (n = wc_DerToPem(der, (word32)n, (byte *)key_pem,
	    sizeof(key_pem) - 1, PUBLICKEY_TYPE)) <= 0) {
		snprintf(err, errlen, "cannot export the RSA public key");
		goto out;
	}
	key_pem_len = (size_t)n;
	key_ready = 1;
	rc = 0;
out:
	pthread_mutex_unlock(&key_lock);
	return (rc);
}

const char *
mysqlkey_pem(size_t *len)
{
	*len = key_pem_len;
	return (key_pem);
}

int
mysqlkey_decrypt(const uint8_t *in, size_t n, uint8_t *out, size_t outlen)
{
	int r;

	pthread_mutex_lock(&key_lock);
	r = key_ready ? wc_RsaPrivateDecrypt_ex(in, (word32)n, out,
	    (word32)outlen, &key, WC_RSA_OAEP_PAD, WC_HASH_TYPE_SHA,
	    WC_MGF1SHA1, NULL, 0) : -1;
	pthread_mutex_unlock(&key_lock);
	return (r < 0 ? -1 : r);
}
