/*
 * conn.h: one proxied connection: two endpoints, one explicit state, its
 * timers, and one way out (conn_close), the only place a connection is
 * closed.  What it needs from its route comes in as parameters; the owner
 * hears of the end through the callback it gave.
 *
 * Endpoint 0 is the side dmtls accepted; endpoint 1 is the side it dialled.
 * On a server route endpoint 0 speaks TLS, on client and mysql routes
 * endpoint 1 does.
 */
#ifndef DMTLS_CONN_H
#define DMTLS_CONN_H

#include <sys/queue.h>
#include <sys/socket.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "conf.h"
#include "endpoint.h"
#include "relay.h"
#include "tls.h"

struct addr;
struct certset;
struct logfold;
struct resolve_answer;
struct resolve_req;
struct certsrc;
struct conn;
struct mysql;
struct policy_rules;
struct strlist;

#define CONN_MAGIC	0x636f6e6eU	/* "conn" */

/* How a connection ended. */
enum conn_result { CONN_ALLOWED = 0, CONN_DENIED, CONN_FAILED };

/* Why a connection was refused or failed, for metrics. */
enum conn_why {
	WHY_NONE = 0,
	WHY_POLICY,		/* identity not in the allow-list */
	WHY_REVOKED,		/* the peer's leaf is in a CRL */
	WHY_CRL_EXPIRED,	/* its CA's CRL is past nextUpdate */
	WHY_CRL_MISSING,	/* ssl-crl holds no CRL of its CA */
	WHY_VERIFY,		/* chain, date or hostname verification */
	WHY_NOCERT,		/* no client certificate */
	WHY_TIMEOUT,		/* handshake deadline */
	WHY_HANDSHAKE,		/* any other handshake failure */
	WHY_CONNECT		/* target unreachable */
};

/* What the owner learns when a connection ends. */
struct conn_end {
	struct conn		*ce_conn;
	enum conn_result	 ce_result;
	enum conn_why		 ce_why;
	uint64_t		 ce_bytes_in;	/* from the accepted side */
	uint64_t		 ce_bytes_out;	/* to the accepted side */
	int64_t			 ce_dur_ms;
};

/*
 * conn_end_cb(arg, end): the connection ended.  Called once, from
 * conn_close(), after the log line and before the sockets are closed;
 * from then on the connection touches nothing its parameters point at.
 */
typedef void conn_end_cb(void *, const struct conn_end *);

/*
 * What a connection is told to do.  The pointers must stay valid until
 * its end callback has been called.
 */
struct conn_params {
	struct event_base	*cp_base;	/* the loop it runs in */
	enum route_kind		 cp_kind;
	const char		*cp_name;	/* the route's, for logs */
	const char		*cp_target;	/* as written, for reasons */
	const struct addr	*cp_addr;	/* the target: an address, or a
						 * name looked up per conn */
	long			 cp_handshake_ms;
	long			 cp_connect_ms;
	long			 cp_idle_ms;	/* 0 = none */
	long			 cp_close_ms;
	struct certsrc		*cp_certs;	/* a set is acquired per conn */
	const struct policy_rules *cp_rules;
	const struct strlist	*cp_alpn;
	const char		*cp_sni;	/* client/mysql: "" for none */
	const char		*cp_server_name; /* client/mysql, or NULL */
	struct logfold		*cp_fold;	/* repeated failures, or NULL */
	conn_end_cb		*cp_end;
	void			*cp_arg;
};

enum conn_state {
	CS_NEW = 0,
	CS_HANDSHAKE,		/* TLS handshake with the TLS side */
	CS_CONNECTING,		/* name lookup, TCP connect to the target */
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
	struct conn_params	 c_p;
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
	enum conn_result	 c_result;
	enum conn_why		 c_why;
	struct mysql		*c_my;		/* mysql routes, until relaying */
	struct resolve_req	*c_rq;		/* the target's lookup running */
	struct resolve_answer	*c_ans;		/* its addresses, until connected */
	int			 c_try;		/* the next of them to dial */
	char			 c_dialled[64];	/* the address dialled last */
	struct tls_params	 c_tlsp;	/* for the TLS side's session */
	struct tls_session	 c_tls;
	int			 c_reserve;	/* held for the target's socket, or
						 * -1 once that socket exists */
	int			 c_abort;	/* a corrupt or cut TLS stream: the
						 * plaintext side gets a reset */
	struct event		 c_more;	/* the relay spent its budget: go
						 * on from the event loop */
	TAILQ_ENTRY(conn)	 c_entry;	/* for the owner's list */
};

/*
 * conn_new(p, fd, reserve, sa, salen): a connection for the accepted
 * socket fd (peer address sa), not started yet.  reserve (or -1) is a
 * descriptor held for the target's socket, so that a process at its
 * descriptor limit still has one for it: the connection owns it and
 * closes it once that socket exists.  NULL when out of memory: fd and
 * reserve are closed and the end callback is not called.
 */
struct conn *conn_new(const struct conn_params *, int, int,
    const struct sockaddr *, socklen_t);

/*
 * conn_start(c): reread the certificates and go: handshake or connect.
 * From here on the end callback is called exactly once, perhaps before
 * conn_start returns.
 */
void conn_start(struct conn *);

/*
 * conn_close(c, reason): the one teardown: logs the end of the connection,
 * calls the end callback, closes the sockets (a reset where a stream was
 * cut, a lingering close where the client may still send) and frees
 * whatever exists (safe on a half-built connection).  reason NULL keeps a
 * reason already recorded.
 */
void conn_close(struct conn *, const char *);

#endif
