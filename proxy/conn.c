/*
 * conn.c: the life of one connection: handshake, connect, MySQL upgrade,
 * relay, the timers of each phase, and the one teardown path.  The phases
 * below it (tls, mysql, relay) report what happened; only this file closes.
 */
#include <sys/socket.h>

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../policy/certset.h"
#include "../policy/policy.h"
#include "addr.h"
#include "conn.h"
#include "endpoint.h"
#include "linger.h"
#include "log.h"
#include "logfold.h"
#include "mysql.h"
#include "relay.h"
#include "resolve.h"
#include "tls.h"
#include "util.h"

static void conn_step(struct conn *);
static void ep_cb(evutil_socket_t, short, void *);
static void conn_fail(struct conn *, enum conn_result, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static const char *state_names[] = {
	"new", "handshake", "connecting", "mysql", "relay", "closed"
};

static void
conn_set_state(struct conn *c, enum conn_state st)
{
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "state", "%s %s: %s -> %s", c->c_p.cp_name,
		    c->c_peer, state_names[c->c_state], state_names[st]);
	c->c_state = st;
	c->c_phase_ms = now_ms();
	if (st == CS_RELAY)
		logfold_ok(c->c_p.cp_fold);	/* the route works (again) */
}

/* The endpoint that speaks TLS: the accepted side on server routes. */
static struct endpoint *
tls_side(struct conn *c)
{
	return (&c->c_ep[c->c_p.cp_kind == ROUTE_SERVER ? 0 : 1]);
}

/* Put endpoint i's event in the base with exactly the flags wanted. */
static void
ep_arm(struct conn *c, int i, short want)
{
	struct conn_side *sd = &c->c_side[i];
	int fd = c->c_ep[i].ep_fd;

	if (fd == -1 || want == sd->cs_armed)
		return;
	if (sd->cs_armed)
		event_del(&sd->cs_ev);
	sd->cs_armed = want;
	if (want == 0)
		return;
	event_assign(&sd->cs_ev, c->c_p.cp_base, fd, want | EV_PERSIST, ep_cb,
	    sd);
	event_add(&sd->cs_ev, NULL);
}

static void
ep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_side *sd = arg;
	struct conn *c = sd->cs_conn;

	(void)fd;
	assert(c->c_magic == CONN_MAGIC);
	endpoint_ready(&c->c_ep[sd - c->c_side], what);
	conn_step(c);
}

/* Deadline of the current phase, in now_ms() time; 0 = none. */
static int64_t
conn_deadline(const struct conn *c)
{
	const struct conn_params *p = &c->c_p;
	int64_t d = 0, t;

	switch (c->c_state) {
	case CS_HANDSHAKE:
		/* Absolute: trickled bytes do not extend it. */
		return (c->c_phase_ms + p->cp_handshake_ms);
	case CS_CONNECTING:
		return (c->c_phase_ms + p->cp_connect_ms);
	case CS_MYSQL:
		/* Greeting, login, TLS and auth: one absolute deadline. */
		return (c->c_phase_ms + p->cp_handshake_ms);
	case CS_RELAY:
		if (p->cp_idle_ms > 0)
			d = c->c_io_ms + p->cp_idle_ms;
		if (c->c_halfclosed_ms != 0) {
			t = (c->c_io_ms > c->c_halfclosed_ms ? c->c_io_ms :
			    c->c_halfclosed_ms) + p->cp_close_ms;
			if (d == 0 || t < d)
				d = t;
		}
		return (d);
	default:
		return (0);
	}
}

/*
 * Make sure the timer fires no later than the phase's deadline.  A timer
 * that fires early (traffic moved the deadline) just sleeps again, so the
 * data path never touches the timer heap.
 */
static void
conn_timer_update(struct conn *c)
{
	struct timeval tv;
	int64_t d, left;

	if ((d = conn_deadline(c)) == 0) {
		if (c->c_timer_at != 0)
			event_del(&c->c_timer);
		c->c_timer_at = 0;
		return;
	}
	if (c->c_timer_at != 0 && c->c_timer_at <= d)
		return;
	left = d - now_ms();
	if (left < 0)
		left = 0;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	event_add(&c->c_timer, &tv);
	c->c_timer_at = d;
}

/* The relay spent its budget in an earlier wakeup: go on. */
static void
more_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	assert(c->c_magic == CONN_MAGIC);
	conn_step(c);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	int64_t d;

	(void)fd;
	(void)what;
	assert(c->c_magic == CONN_MAGIC);
	c->c_timer_at = 0;
	d = conn_deadline(c);
	if (d == 0)
		return;
	if (now_ms() < d) {
		/* Traffic moved the deadline: sleep until the new one. */
		conn_timer_update(c);
		return;
	}
	switch (c->c_state) {
	case CS_HANDSHAKE:
	case CS_MYSQL:
		c->c_why = WHY_TIMEOUT;
		conn_fail(c, CONN_FAILED, "handshake timeout after %ldms",
		    c->c_p.cp_handshake_ms);
		break;
	case CS_CONNECTING:
		c->c_why = WHY_CONNECT;
		if (c->c_rq != NULL)
			conn_fail(c, CONN_FAILED, "cannot resolve %s: no "
			    "answer within connect-timeout %ldms",
			    c->c_p.cp_addr->a_host, c->c_p.cp_connect_ms);
		else
			conn_fail(c, CONN_FAILED, "connect to %s timed out "
			    "after %ldms", c->c_p.cp_target,
			    c->c_p.cp_connect_ms);
		break;
	default:
		conn_close(c, c->c_halfclosed_ms ? "close timeout" :
		    "idle timeout");
	}
}

struct conn *
conn_new(const struct conn_params *p, int fd, int reserve,
    const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c;
	int i;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		if (reserve != -1)
			close(reserve);
		return (NULL);
	}
	c->c_reserve = reserve;
	c->c_magic = CONN_MAGIC;
	c->c_p = *p;
	c->c_result = CONN_ALLOWED;
	for (i = 0; i < 2; i++) {
		endpoint_init(&c->c_ep[i], -1);
		c->c_side[i].cs_conn = c;
		event_assign(&c->c_side[i].cs_ev, p->cp_base, -1, 0, ep_cb,
		    &c->c_side[i]);
	}
	relay_init(&c->c_relay, &c->c_ep[0], &c->c_ep[1]);
	evtimer_assign(&c->c_timer, p->cp_base, timer_cb, c);
	event_assign(&c->c_more, p->cp_base, -1, 0, more_cb, c);
	c->c_start_ms = c->c_io_ms = now_ms();
	addr_str(sa, salen, c->c_peer, sizeof(c->c_peer));
	c->c_ep[0].ep_fd = fd;
	return (c);
}

/* The upgrade of a mysql route, on both endpoints.  0, or -1 (no memory). */
static int
conn_mysql_begin(struct conn *c)
{
	struct mysql_params mp;

	mp.mp_ep[MYSQL_CLIENT] = &c->c_ep[0];
	mp.mp_ep[MYSQL_SERVER] = &c->c_ep[1];
	mp.mp_tls = &c->c_tls;
	mp.mp_tlsp = c->c_tlsp;
	mp.mp_target = c->c_p.cp_target;
	return ((c->c_my = mysql_begin(&mp)) == NULL ? -1 : 0);
}

void
conn_start(struct conn *c)
{
	const struct conn_params *p = &c->c_p;

	sock_tune(c->c_ep[0].ep_fd);
	/* Reread the certificate files: this connection uses what is on
	 * disk now (or the last good set when the files are broken). */
	c->c_cs = certsrc_acquire(p->cp_certs);
	c->c_tlsp.tp_ctx = certset_ctx(c->c_cs);
	c->c_tlsp.tp_certs = c->c_cs;
	c->c_tlsp.tp_kind = p->cp_kind == ROUTE_SERVER ? TLS_SERVER :
	    TLS_CLIENT;
	c->c_tlsp.tp_alpn = p->cp_alpn;
	c->c_tlsp.tp_sni = p->cp_sni;
	c->c_tlsp.tp_server_name = p->cp_server_name;
	c->c_tlsp.tp_rules = p->cp_rules;

	/* A MySQL client hears about any failure from now on as an ERR. */
	if (p->cp_kind == ROUTE_MYSQL && conn_mysql_begin(c) == -1) {
		conn_fail(c, CONN_FAILED, "out of memory");
		return;
	}
	if (p->cp_kind == ROUTE_SERVER) {
		if (tls_setup(&c->c_tls, &c->c_ep[0], &c->c_tlsp) == -1) {
			conn_fail(c, CONN_FAILED, "cannot create a TLS "
			    "session");
			return;
		}
		conn_set_state(c, CS_HANDSHAKE);
	} else
		conn_set_state(c, CS_CONNECTING);
	conn_step(c);
}

/* Give back the descriptor held for the target's socket. */
static void
unreserve(struct conn *c)
{
	if (c->c_reserve != -1) {
		close(c->c_reserve);
		c->c_reserve = -1;
	}
}

/* In the loop: the target's name was looked up. */
static void
conn_resolved(void *arg, struct resolve_answer *ans, const char *err)
{
	struct conn *c = arg;

	assert(c->c_magic == CONN_MAGIC);
	c->c_rq = NULL;
	if (ans == NULL) {
		c->c_why = WHY_CONNECT;
		conn_fail(c, CONN_FAILED, "%s", err);
		return;
	}
	c->c_ans = ans;
	conn_step(c);
}

/* The next address to dial (the literal target, or the next the lookup
 * gave), with its length; NULL when none is left. */
static const struct sockaddr *
next_addr(struct conn *c, socklen_t *len)
{
	const struct addr *a = c->c_p.cp_addr;
	int i = c->c_try++;

	if (!a->a_name) {
		*len = a->a_len;
		return (i == 0 ? (const struct sockaddr *)&a->a_ss : NULL);
	}
	if (c->c_ans == NULL || i >= c->c_ans->ra_n)
		return (NULL);
	*len = c->c_ans->ra_v[i].len;
	return ((const struct sockaddr *)&c->c_ans->ra_v[i].ss);
}

/* The address dialled last failed with err: say so (debug), close it. */
static void
dial_failed(struct conn *c, int err)
{
	struct endpoint *ep = &c->c_ep[1];
	struct logline l;

	if (log_enabled(LOG_DEBUG)) {
		log_begin(&l, LOG_DEBUG, "connect_next");
		log_str(&l, "route", c->c_p.cp_name);
		log_str(&l, "peer", c->c_peer);
		log_str(&l, "addr", c->c_dialled);
		log_str(&l, "reason", strerror(err));
		log_end(&l);
	}
	if (ep->ep_fd != -1) {
		ep_arm(c, 1, 0);
		close(ep->ep_fd);
		endpoint_init(ep, -1);
	}
}

/*
 * Start or finish the connect to the target: look its name up first (a
 * host name, for every connection), then dial each address in turn until
 * one connects.  1 done, 0 waiting, -1 failed (why and the reason
 * recorded; the caller closes).
 */
static int
conn_connect(struct conn *c)
{
	const struct addr *a = c->c_p.cp_addr;
	struct endpoint *ep = &c->c_ep[1];
	const struct sockaddr *sa;
	socklen_t len = sizeof(int);
	int err = 0;

	if (a->a_name && c->c_ans == NULL) {
		if (c->c_rq == NULL && (c->c_rq = resolve_start(
		    c->c_p.cp_base, a->a_host, a->a_port, conn_resolved, c,
		    c->c_reason, sizeof(c->c_reason))) == NULL)
			goto failed;
		return (0);
	}
	for (;;) {
		if (ep->ep_fd == -1) {
			if ((sa = next_addr(c, &len)) == NULL)
				goto fail;
			addr_str(sa, len, c->c_dialled, sizeof(c->c_dialled));
			ep->ep_fd = addr_dial(sa, len);
			if (ep->ep_fd == -1 && errno == EMFILE &&
			    c->c_reserve != -1) {
				/* At the limit: the descriptor held since
				 * accept is the target's. */
				unreserve(c);
				ep->ep_fd = addr_dial(sa, len);
			}
			if (ep->ep_fd == -1) {
				dial_failed(c, err = errno);
				continue;
			}
			unreserve(c);
			ep->ep_wr_wait = EV_WRITE;
			return (0);
		}
		if (ep->ep_wr_wait)
			return (0);
		len = sizeof(err);
		if (getsockopt(ep->ep_fd, SOL_SOCKET, SO_ERROR, &err, &len) ==
		    -1)
			err = errno;
		if (err == 0)
			break;
		dial_failed(c, err);
	}
	free(c->c_ans);
	c->c_ans = NULL;
	return (1);
fail:
	if (!a->a_name)
		snprintf(c->c_reason, sizeof(c->c_reason), "connect to %s: %s",
		    c->c_p.cp_target, strerror(err));
	else if (c->c_try > 2)
		snprintf(c->c_reason, sizeof(c->c_reason), "connect to %s: "
		    "%s (%d addresses tried, the last %s)", c->c_p.cp_target,
		    strerror(err), c->c_try - 1, c->c_dialled);
	else
		snprintf(c->c_reason, sizeof(c->c_reason), "connect to %s "
		    "(%s): %s", c->c_p.cp_target, c->c_dialled, strerror(err));
failed:
	c->c_why = WHY_CONNECT;
	c->c_result = CONN_FAILED;
	return (-1);
}

/* Arm both endpoints for what the current state waits for. */
static void
conn_arm(struct conn *c)
{
	int i;
	short want;

	for (i = 0; i < 2; i++) {
		struct endpoint *ep = &c->c_ep[i];

		switch (c->c_state) {
		case CS_HANDSHAKE:
		case CS_CONNECTING:
		case CS_MYSQL:
			want = ep->ep_rd_wait | ep->ep_wr_wait;
			break;
		case CS_RELAY:
			want = relay_interest(&c->c_relay, ep);
			break;
		default:
			want = 0;
		}
		ep_arm(c, i, want);
	}
}

/* The TLS side's handshake failed: close with the session's verdict. */
static void
conn_tls_failed(struct conn *c)
{
	const struct tls_verdict *v = &c->c_tls.ts_v;

	c->c_result = v->tv_denied ? CONN_DENIED : CONN_FAILED;
	switch (v->tv_why) {
	case TLS_WHY_POLICY:	c->c_why = WHY_POLICY; break;
	case TLS_WHY_REVOKED:	c->c_why = WHY_REVOKED; break;
	case TLS_WHY_CRL_EXPIRED: c->c_why = WHY_CRL_EXPIRED; break;
	case TLS_WHY_CRL_MISSING: c->c_why = WHY_CRL_MISSING; break;
	case TLS_WHY_VERIFY:	c->c_why = WHY_VERIFY; break;
	case TLS_WHY_NOCERT:	c->c_why = WHY_NOCERT; break;
	case TLS_WHY_HANDSHAKE:	c->c_why = WHY_HANDSHAKE; break;
	case TLS_WHY_NONE:	break;
	}
	conn_close(c, v->tv_reason[0] != '\0' ? v->tv_reason : NULL);
}

/* The MySQL upgrade is over: what it read beyond it goes on by relay. */
static void
conn_mysql_done(struct conn *c)
{
	uint8_t *b;
	size_t n;

	if ((b = mysql_take(c->c_my, MYSQL_CLIENT, &n)) != NULL)
		relay_give(&c->c_relay, &c->c_relay.r_up, b, n);
	if ((b = mysql_take(c->c_my, MYSQL_SERVER, &n)) != NULL)
		relay_give(&c->c_relay, &c->c_relay.r_down, b, n);
	mysql_end(c->c_my, NULL);
	c->c_my = NULL;
	conn_set_state(c, CS_RELAY);
}

/* The handshake phase; 0, or -1 when the connection was closed. */
static int
step_handshake(struct conn *c)
{
	switch (tls_handshake(&c->c_tls, tls_side(c))) {
	case TLS_WAIT:
		break;
	case TLS_FAIL:
		conn_tls_failed(c);
		return (-1);
	case TLS_DONE:
		conn_set_state(c, c->c_p.cp_kind == ROUTE_SERVER ?
		    CS_CONNECTING : CS_RELAY);
		break;
	}
	return (0);
}

/* The connect phase; 0, or -1 when the connection was closed. */
static int
step_connect(struct conn *c)
{
	switch (conn_connect(c)) {
	case -1:
		conn_close(c, NULL);
		return (-1);
	case 0:
		return (0);
	}
	if (c->c_p.cp_kind == ROUTE_SERVER)
		conn_set_state(c, CS_RELAY);
	else if (c->c_p.cp_kind == ROUTE_MYSQL)
		conn_set_state(c, CS_MYSQL);
	else if (tls_setup(&c->c_tls, &c->c_ep[1], &c->c_tlsp) == -1) {
		conn_fail(c, CONN_FAILED, "cannot create a TLS session");
		return (-1);
	} else
		conn_set_state(c, CS_HANDSHAKE);
	return (0);
}

/* The MySQL phase; 0, or -1 when the connection was closed. */
static int
step_mysql(struct conn *c)
{
	switch (mysql_step(c->c_my)) {
	case MYSQL_WAIT:
		break;
	case MYSQL_DONE:
		conn_mysql_done(c);
		break;
	case MYSQL_FAIL:
		conn_fail(c, CONN_FAILED, "%s", mysql_reason(c->c_my));
		return (-1);
	case MYSQL_TLS_FAIL:
		conn_tls_failed(c);
		return (-1);
	}
	return (0);
}

/* The relay phase; 0, or -1 when the connection was closed. */
static int
step_relay(struct conn *c)
{
	c->c_io_ms = now_ms();
	switch (relay_pump(&c->c_relay)) {
	case RELAY_FAILED:
		c->c_abort = c->c_relay.r_abort;
		conn_close(c, c->c_relay.r_reason);
		return (-1);
	case RELAY_DONE:
		/* A direction that died keeps its reason. */
		conn_close(c, c->c_relay.r_reason[0] ? c->c_relay.r_reason :
		    "eof");
		return (-1);
	case RELAY_MORE:
		/* Budget spent: the other connections of this worker
		 * first, then on from here. */
		event_active(&c->c_more, 0, 0);
		break;
	case RELAY_BLOCKED:
		break;
	}
	if (relay_half_closed(&c->c_relay) && c->c_halfclosed_ms == 0)
		c->c_halfclosed_ms = now_ms();
	return (0);
}

/* Advance the state machine as far as it goes without blocking. */
static void
conn_step(struct conn *c)
{
	enum conn_state before;
	int r;

	do {
		before = c->c_state;
		switch (c->c_state) {
		case CS_HANDSHAKE:
			r = step_handshake(c);
			break;
		case CS_CONNECTING:
			r = step_connect(c);
			break;
		case CS_MYSQL:
			r = step_mysql(c);
			break;
		case CS_RELAY:
			r = step_relay(c);
			break;
		default:
			return;
		}
		if (r == -1)
			return;		/* closed: c is gone */
	} while (c->c_state != before);
	conn_arm(c);
	conn_timer_update(c);
}

/* Record the result and why, then close. */
static void
conn_fail(struct conn *c, enum conn_result result, const char *fmt, ...)
{
	va_list ap;

	c->c_result = result;
	va_start(ap, fmt);
	vsnprintf(c->c_reason, sizeof(c->c_reason), fmt, ap);
	va_end(ap);
	conn_close(c, NULL);
}

/*
 * 1 when the failure is the target's: unreachable, unresolvable, or (on a
 * client route, where the target is the TLS side) its handshake or its
 * identity.  A peer that redials a failing target floods the log with
 * these; failures the accepted side caused are audit lines.
 */
static int
target_failed(const struct conn *c)
{
	return (c->c_why == WHY_CONNECT || c->c_p.cp_kind == ROUTE_CLIENT);
}

static void
conn_log(struct conn *c)
{
	const struct tls_verdict *v = &c->c_tls.ts_v;
	struct logline l;
	const char *ev = "close";
	enum log_level lv = LOG_INFO;
	char rules[512];

	if (c->c_result == CONN_DENIED) {
		ev = "denied";
		lv = LOG_WARN;
	} else if (c->c_result == CONN_FAILED) {
		ev = c->c_why == WHY_VERIFY || c->c_why == WHY_NOCERT ||
		    c->c_why == WHY_TIMEOUT || c->c_why == WHY_HANDSHAKE ||
		    c->c_state == CS_HANDSHAKE ? "handshake_failed" :
		    "conn_failed";
		lv = LOG_WARN;
	}
	/* The repeats of a target's failure are folded into summaries;
	 * what a connecting peer did wrong is logged whole, every time. */
	if (c->c_result != CONN_ALLOWED && target_failed(c) &&
	    !logfold_fail(c->c_p.cp_fold, ev, c->c_reason))
		return;
	log_begin(&l, lv, ev);
	log_str(&l, "route", c->c_p.cp_name);
	log_str(&l, "peer", c->c_peer);
	log_str(&l, "cn", v->tv_cn[0] ? v->tv_cn : NULL);
	if (c->c_result == CONN_DENIED) {
		log_str(&l, "sans", v->tv_sans);
		policy_describe(c->c_p.cp_rules, rules, sizeof(rules));
		log_str(&l, "allowed", rules);
	}
	if (c->c_state != CS_HANDSHAKE)
		tls_log_fields(tls_side(c), &l);
	log_int(&l, "bytes_in", (int64_t)c->c_relay.r_up.h_bytes);
	log_int(&l, "bytes_out", (int64_t)c->c_relay.r_down.h_bytes);
	log_int(&l, "dur_ms", now_ms() - c->c_start_ms);
	log_str(&l, "reason", c->c_reason);
	log_end(&l);
}

/*
 * Read and drop what the peer already sent, so close() sends a FIN rather
 * than a reset: a refused client then sees a clean EOF.  Bounded.
 */
static void
drain(int fd)
{
	char junk[4096];
	int i;

	for (i = 0; i < 16; i++)
		if (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) <= 0)
			break;
}

/* Close with a reset (RST), so the peer cannot take the end for a FIN. */
static void
abort_close(int fd)
{
	struct linger lg = { 1, 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Close endpoint i's socket the way the end of the connection wants. */
static void
close_side(struct conn *c, int i, int plain)
{
	struct endpoint *ep = &c->c_ep[i];

	if (ep->ep_fd == -1)
		return;
	if (c->c_abort && plain)
		abort_close(ep->ep_fd);
	else if (i == 0 && !ep->ep_rd_eof)
		/* The client may still be sending: let what is queued for
		 * it (an alert, a reply's tail, an ERR) reach it before its
		 * bytes force a reset. */
		linger_close(c->c_p.cp_base, ep->ep_fd);
	else {
		drain(ep->ep_fd);
		close(ep->ep_fd);
	}
	ep->ep_fd = -1;
}

void
conn_close(struct conn *c, const char *reason)
{
	struct conn_end e;
	char msg[512];
	int i, plain;

	assert(c->c_magic == CONN_MAGIC);
	if (reason != NULL)
		snprintf(c->c_reason, sizeof(c->c_reason), "%s", reason);
	if (c->c_reason[0] == '\0')
		snprintf(c->c_reason, sizeof(c->c_reason), "closed");
	conn_log(c);
	/* What a MySQL client will hear, while the route's name is ours. */
	snprintf(msg, sizeof(msg), "dmtls (route %s): %s", c->c_p.cp_name,
	    c->c_reason);

	memset(&e, 0, sizeof(e));
	e.ce_conn = c;
	e.ce_result = c->c_result;
	e.ce_why = c->c_why;
	e.ce_bytes_in = c->c_relay.r_up.h_bytes;
	e.ce_bytes_out = c->c_relay.r_down.h_bytes;
	e.ce_dur_ms = now_ms() - c->c_start_ms;
	c->c_p.cp_end(c->c_p.cp_arg, &e);

	mysql_end(c->c_my, msg);	/* the client hears why, as an ERR */
	c->c_my = NULL;
	resolve_cancel(c->c_rq);	/* its answer will never come here */
	c->c_rq = NULL;
	free(c->c_ans);
	c->c_ans = NULL;
	event_del(&c->c_timer);
	event_del(&c->c_more);
	for (i = 0; i < 2; i++) {
		plain = c->c_ep[i].ep_ssl == NULL;
		if (c->c_side[i].cs_armed)
			event_del(&c->c_side[i].cs_ev);
		endpoint_release(&c->c_ep[i]);
		close_side(c, i, plain);
	}
	unreserve(c);
	relay_free(&c->c_relay);
	certset_release(c->c_cs);
	c->c_magic = 0;
	c->c_state = CS_CLOSED;
	free(c);
}
