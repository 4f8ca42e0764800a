/*
 * conn.h: one proxied connection: two endpoints, two direction halves, one
 * explicit state and one way out (conn_close).
 *
 * Endpoint 0 is the side dmtls accepted; endpoint 1 is the side it dialled.
 * On a server route endpoint 0 speaks TLS, on a client route endpoint 1 does.
 * The "up" half carries bytes from endpoint 0 to endpoint 1, "down" the rest.
 */
#ifndef DMTLS_CONN_H
#define DMTLS_CONN_H

#include <sys/queue.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "bufpool.h"
#include "endpoint.h"
#include "relay.h"
#include "tls.h"

struct route_rt;
struct worker;
struct certset;
struct mysql;

#define CONN_MAGIC	0x636f6e6eU	/* "conn" */
/* Why a connection was refused or failed, for metrics. */
enum conn_why {
	WHY_NONE = 0,
	WHY_POLICY,		/* identity not in the allow-list */
	WHY_VERIFY,		/* chain, date or hostname verification */
	WHY_NOCERT,		/* no client certificate */
	WHY_TIMEOUT,		/* handshake deadline */
	WHY_HANDSHAKE,		/* any other handshake failure */
	WHY_CONNECT		/* target unreachable */
};

enum conn_state {
	CS_NEW = 0,
	CS_HANDSHAKE,		/* TLS handshake with the TLS side */
	CS_CONNECTING,		/* TCP connect to the target */
	CS_MYSQL,		/* MySQL greeting, SSLRequest, TLS, auth */
	CS_RELAY,		/* bytes flow both ways */
	CS_CLOSED
};

/* How the connection polls one of its endpoints. */
struct conn_side {
	struct conn	*cs_conn;
	struct event	 cs_ev;
	short		 cs_armed;	/* EV_READ|EV_WRITE in the event base */
};

struct conn {
	uint32_t		 c_magic;
	enum conn_state		 c_state;
	struct route_rt		*c_route;
	struct worker		*c_worker;
	struct endpoint		 c_ep[2];
	struct conn_side	 c_side[2];	/* their events */
	struct relay		 c_relay;
	struct certset		*c_cs;
	struct event		 c_timer;
	int64_t			 c_start_ms;
	int64_t			 c_phase_ms;	/* when this state began */
	int64_t			 c_io_ms;	/* last byte moved */
	int64_t			 c_halfclosed_ms; /* 0 until one half is done */
	int64_t			 c_timer_at;	/* when c_timer fires, 0 = idle */
	char			 c_peer[64];
	char			 c_reason[200];
	const char		*c_result;	/* "allowed", "denied", "failed" */
	enum conn_why		 c_why;
	struct mysql		*c_my;		/* mysql routes, until relaying */
	struct tls_params	 c_tlsp;	/* for the TLS side's session */
	struct tls_session	 c_tls;
	int			 c_abort;	/* a corrupt or cut TLS stream: the
						 * plaintext side gets a reset */
	struct event		 c_more;	/* the relay spent its budget: go
						 * on from the event loop */
	TAILQ_ENTRY(conn)	 c_entry;
};

/* conn_accept(w, rt, fd, sa, salen): take over an accepted socket. */
void conn_accept(struct worker *, struct route_rt *, int,
    const struct sockaddr *, socklen_t);

/*
 * conn_close(c, reason): the one teardown: logs the end of the connection,
 * frees whatever exists (safe on a half-built connection) and releases the
 * route's slot.  reason NULL keeps a reason already recorded.
 */
void conn_close(struct conn *, const char *);

/* conn_fail(c, result, fmt, ...): record why, then conn_close(). */
void conn_fail(struct conn *, const char *, const char *, ...)
    __attribute__((format(printf, 3, 4)));

#endif
