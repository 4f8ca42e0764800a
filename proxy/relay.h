/*
 * relay.h: moving bytes both ways between two endpoints, with bounded
 * buffers, backpressure and half-close in both directions.  The relay
 * reads and writes; it never closes anything, and says what happened.
 *
 * Endpoint 0 is the side dmtls accepted, endpoint 1 the side it dialled;
 * the "up" half carries bytes from 0 to 1, "down" the rest.
 */
#ifndef DMTLS_RELAY_H
#define DMTLS_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "bufpool.h"
#include "endpoint.h"

/* Plaintext read per round: four TLS records, whose framing still fits in
 * one pooled buffer of staged TLS output. */
#define RELAY_READMAX	(BUFPOOL_SZ - 1024)
/* Bytes one relay may move per call before its worker serves the others
 * (relay_pump says RELAY_MORE). */
#define RELAY_BUDGET	(1024 * 1024)

/* One direction. */
struct half {
	struct endpoint	*h_src;
	struct endpoint	*h_dst;
	uint8_t		*h_buf;		/* NULL while empty: memory on demand */
	size_t		 h_off;
	size_t		 h_len;
	uint64_t	 h_bytes;
	unsigned	 h_done:1;	/* EOF passed on to h_dst, or h_dead */
	unsigned	 h_dead:1;	/* h_dst refused a write: nothing more
					 * goes this way, h_src is not read */
};

struct relay {
	struct endpoint	*r_ep[2];
	struct half	 r_up;		/* r_ep[0] -> r_ep[1] */
	struct half	 r_down;	/* r_ep[1] -> r_ep[0] */
	char		 r_reason[200];	/* why a direction or the relay ended */
	unsigned	 r_abort:1;	/* with RELAY_FAILED: the plaintext
					 * side must see a reset, not a FIN */
};

enum relay_status {
	RELAY_BLOCKED,		/* every side would block: wait for events */
	RELAY_MORE,		/* the budget is spent: call again soon */
	RELAY_DONE,		/* both directions ended (r_reason may say
				 * why one of them died) */
	RELAY_FAILED		/* over: r_reason, r_abort */
};

/* relay_init(r, accepted, dialled): an idle relay between two endpoints. */
void relay_init(struct relay *, struct endpoint *, struct endpoint *);

/*
 * relay_give(r, h, buf, len): h (r_up or r_down, empty) starts with the
 * len bytes of the pooled buffer buf, which it owns from here on.
 */
void relay_give(struct relay *, struct half *, uint8_t *, size_t);

/*
 * relay_pump(r): move bytes both ways until every side would block, both
 * directions ended, something failed, or RELAY_BUDGET bytes moved in this
 * call.
 */
enum relay_status relay_pump(struct relay *);

/* relay_interest(r, ep): the events endpoint ep waits for while relaying. */
short relay_interest(const struct relay *, const struct endpoint *);

/* relay_half_closed(r): 1 once a direction has ended. */
int relay_half_closed(const struct relay *);

/* relay_free(r): give the buffers back; the endpoints are not touched. */
void relay_free(struct relay *);

#endif
