/*
 * linger.h: closing an accepted socket without losing what is queued for
 * its peer (the tail of a reply, a TLS alert, a MySQL ERR).
 */
#ifndef DMTLS_LINGER_H
#define DMTLS_LINGER_H

#include <event2/event.h>

#define LINGER_MS	1000	/* how long a closed peer may keep sending */
#define LINGER_MAX	256	/* sockets lingering per thread at most */

/*
 * linger_close(base, fd): end our side of fd (FIN after what is queued),
 * then read and drop what the peer still sends until it closes, resets or
 * LINGER_MS pass, and only then close fd.  Owns fd from here on.  Past
 * LINGER_MAX lingering sockets in this thread, or out of memory, closes at
 * once.
 */
void linger_close(struct event_base *, int);

/* linger_drain(): close every socket lingering in this thread (exit). */
void linger_drain(void);

#endif
