/*
 * mysqlkey.h: the RSA key pair dmtls offers to MySQL clients that ask for
 * the server's public key (caching_sha2_password and sha256_password full
 * authentication over what they believe is plaintext).  Generated once per
 * process, in memory only, never written to disk.
 */
#ifndef DMTLS_MYSQLKEY_H
#define DMTLS_MYSQLKEY_H

#include <stddef.h>
#include <stdint.h>

#define MYSQLKEY_PEM_MAX	1024	/* bytes of the public key's PEM */

/*
 * mysqlkey_init(err, errlen): generate the key pair unless it exists.
 * 0, or -1 with a reason.
 */
int mysqlkey_init(char *, size_t);

/* mysqlkey_pem(len): the public key in PEM (*len bytes, no NUL counted). */
const char *mysqlkey_pem(size_t *);

/*
 * mysqlkey_decrypt(in, n, out, outlen): RSA-OAEP (SHA-1, as MySQL clients
 * use) decrypt with the private key.  The plaintext's length, or -1.
 */
int mysqlkey_decrypt(const uint8_t *, size_t, uint8_t *, size_t);

#endif
