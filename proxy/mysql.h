/*
 * mysql.h: the in-band TLS upgrade of a `mysql` route (DESIGN section 2),
 * as a protocol phase between two endpoints: a plaintext MySQL client on
 * one side, the server's leg upgraded to TLS after its greeting, sequence
 * ids renumbered until the auth phase ends, and RSA password exchanges
 * answered by dmtls for clients that believe the link is plaintext.  After
 * the auth phase, bytes are relayed untouched (by someone else).
 *
 * The phase reads and writes its endpoints and drives the server leg's TLS
 * session; it never closes anything, and says where it is.
 */
#ifndef DMTLS_MYSQL_H
#define DMTLS_MYSQL_H

#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"
#include "tls.h"

struct mysql;

enum { MYSQL_CLIENT = 0, MYSQL_SERVER = 1 };	/* legs */

/* What the upgrade works on; the pointers must outlive it. */
struct mysql_params {
	struct endpoint		*mp_ep[2];	/* by leg; the server's is
						 * connected */
	struct tls_session	*mp_tls;	/* the server leg's session */
	struct tls_params	 mp_tlsp;	/* ... made from these */
	const char		*mp_target;	/* the server, for reasons */
};

enum mysql_status {
	MYSQL_WAIT,		/* the endpoints' waits say for what */
	MYSQL_DONE,		/* the auth phase is over: relay from here
				 * (after mysql_take) */
	MYSQL_FAIL,		/* over: mysql_reason() says why */
	MYSQL_TLS_FAIL		/* the server leg's handshake failed: its
				 * session's verdict says why */
};

/* mysql_begin(p): the upgrade, waiting for the server's greeting; NULL
 * when out of memory. */
struct mysql *mysql_begin(const struct mysql_params *);

/* mysql_step(ms): advance the upgrade as far as it goes without blocking. */
enum mysql_status mysql_step(struct mysql *);

/* mysql_reason(ms): why the upgrade failed ("" when it did not say). */
const char *mysql_reason(const struct mysql *);

/*
 * mysql_take(ms, leg, buf, len): after MYSQL_DONE, what was read from leg
 * beyond the auth phase, in a pooled buffer the caller owns from here on
 * (for the relay to send on), or NULL with *len 0.  By the plaintext
 * invariant (mysql.c), what the server leg left came through TLS.
 */
uint8_t *mysql_take(struct mysql *, int, size_t *);

/*
 * mysql_end(ms, msg): the end of the upgrade, whatever its outcome.  With
 * msg, a client that has not had the server's OK or ERR hears msg in an
 * ERR packet (SQLSTATE 08S01, best effort).  Then the state is wiped
 * (logins, passwords) and freed.  NULL is fine.
 */
void mysql_end(struct mysql *, const char *);

#endif
