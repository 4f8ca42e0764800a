/*
 * mysql.h: the in-band TLS upgrade of a `mysql` route (DESIGN section 2):
 * a plaintext MySQL client on one side, the server's leg upgraded to TLS
 * after its greeting, sequence ids renumbered until the auth phase ends,
 * and RSA password exchanges answered by dmtls for clients that believe
 * the link is plaintext.  After the auth phase, bytes are relayed untouched.
 */
#ifndef DMTLS_MYSQL_H
#define DMTLS_MYSQL_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/*
 * mysql_keys_init(err, errlen): generate the RSA key pair dmtls offers to
 * clients that ask for the server's public key (memory only, once per
 * process).  0, or -1 with a reason.
 */
int mysql_keys_init(char *, size_t);

/* mysql_begin(c): the target is connected; start reading its greeting. */
int mysql_begin(struct conn *);

/*
 * mysql_step(c): advance the upgrade as far as it goes without blocking.
 * Returns 1 when the auth phase is over and bytes may be relayed, 0 while
 * waiting (c's endpoint waits are set), -1 when c was closed.
 */
int mysql_step(struct conn *);

/*
 * mysql_abort(c): on teardown before the auth phase ended, tell the client
 * why in an ERR packet (SQLSTATE 08S01, best effort), then wipe (logins,
 * passwords) and free the state.
 */
void mysql_abort(struct conn *);

/* Parsing helpers, exposed for the unit tests. */

/* Bounds on what the upgrade accepts before the auth phase ends. */
#define MY_MAXPKT	(16384 - 4)

/* A server greeting (HandshakeV10) as far as dmtls needs it. */
struct my_greeting {
	uint32_t	g_caps;
	size_t		g_caps_lo_off;	/* payload offset of the low flags */
	uint8_t		g_nonce[20];
	size_t		g_nonce_len;
	char		g_plugin[64];
	char		g_version[64];
};

/* my_parse_greeting(p, n, g): 0, or -1 when the payload is malformed. */
int my_parse_greeting(const uint8_t *, size_t, struct my_greeting *);

/* A client login (HandshakeResponse41) as far as dmtls needs it. */
struct my_login {
	uint32_t	l_caps;
	char		l_user[128];
	const uint8_t	*l_auth;	/* points into the payload */
	size_t		 l_auth_len;
	char		l_plugin[64];
};

/* my_parse_login(p, n, l): 0, or -1 when the payload is malformed. */
int my_parse_login(const uint8_t *, size_t, struct my_login *);

/* my_err_packet(buf, len, seq, msg): an ERR packet; returns its size. */
size_t my_err_packet(uint8_t *, size_t, uint8_t, const char *);

#endif
