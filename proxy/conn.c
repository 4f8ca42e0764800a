/*
 * conn.c: the life of one connection: accept, handshake, connect, relay,
 * timers, and the one teardown path.
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
#include "linger.h"
#include "log.h"
#include "mysql.h"
#include "relay.h"
#include "route.h"
#include "util.h"
#include "worker.h"

static void conn_step(struct conn *);
static void conn_tls_failed(struct conn *);
static void ep_cb(evutil_socket_t, short, void *);

static const char *state_names[] = {
	"new", "handshake", "connecting", "mysql", "relay", "closed"
};

static void
conn_set_state(struct conn *c, enum conn_state st)
{
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "state", "%s %s: %s -> %s",
		    c->c_route->rt_conf->name, c->c_peer,
		    state_names[c->c_state], state_names[st]);
	c->c_state = st;
	c->c_phase_ms = now_ms();
}

/* The endpoint that speaks TLS: the accepted side on server routes. */
static struct endpoint *
tls_side(struct conn *c)
{
	return (&c->c_ep[c->c_route->rt_conf->kind == ROUTE_SERVER ? 0 : 1]);
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
	event_assign(&sd->cs_ev, c->c_worker->w_base, fd, want | EV_PERSIST,
	    ep_cb, sd);
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
	const struct route_conf *rc = c->c_route->rt_conf;
	int64_t d = 0, t;

	switch (c->c_state) {
	case CS_HANDSHAKE:
		/* Absolute: trickled bytes do not extend it. */
		return (c->c_phase_ms + rc->handshake_timeout_ms);
	case CS_CONNECTING:
		return (c->c_phase_ms + rc->connect_timeout_ms);
	case CS_MYSQL:
		/* Greeting, login, TLS and auth: one absolute deadline. */
		return (c->c_phase_ms + rc->handshake_timeout_ms);
	case CS_RELAY:
		if (rc->idle_timeout_ms > 0)
			d = c->c_io_ms + rc->idle_timeout_ms;
		if (c->c_halfclosed_ms != 0) {
			t = (c->c_io_ms > c->c_halfclosed_ms ? c->c_io_ms :
			    c->c_halfclosed_ms) + rc->close_timeout_ms;
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
		conn_fail(c, "failed", "handshake timeout after %ldms",
		    c->c_route->rt_conf->handshake_timeout_ms);
		break;
	case CS_CONNECTING:
		c->c_why = WHY_CONNECT;
		conn_fail(c, NULL, "connect to %s timed out after %ldms",
		    c->c_route->rt_conf->target,
		    c->c_route->rt_conf->connect_timeout_ms);
		break;
	default:
		conn_close(c, c->c_halfclosed_ms ? "close timeout" :
		    "idle timeout");
	}
}

void
conn_accept(struct worker *w, struct route_rt *rt, int fd,
    const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c;
	int i;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		route_conn_done(rt);
		route_release(rt);
		return;
	}
	c->c_magic = CONN_MAGIC;
	c->c_route = rt;
	c->c_worker = w;
	c->c_result = "allowed";
	for (i = 0; i < 2; i++) {
		endpoint_init(&c->c_ep[i], -1);
		c->c_side[i].cs_conn = c;
		event_assign(&c->c_side[i].cs_ev, w->w_base, -1, 0, ep_cb,
		    &c->c_side[i]);
	}
	relay_init(&c->c_relay, &c->c_ep[0], &c->c_ep[1]);
	evtimer_assign(&c->c_timer, w->w_base, timer_cb, c);
	event_assign(&c->c_more, w->w_base, -1, 0, more_cb, c);
	c->c_start_ms = c->c_io_ms = now_ms();
	addr_str(sa, salen, c->c_peer, sizeof(c->c_peer));
	worker_conn_add(w, c);

	c->c_ep[0].ep_fd = fd;
	sock_tune(fd);
	/* Reread the certificate files: this connection uses what is on
	 * disk now (or the last good set when the files are broken). */
	c->c_cs = certsrc_acquire(rt->rt_certs);
	c->c_tlsp.tp_ctx = certset_ctx(c->c_cs);
	c->c_tlsp.tp_kind = rt->rt_conf->kind == ROUTE_SERVER ? TLS_SERVER :
	    TLS_CLIENT;
	c->c_tlsp.tp_alpn = &rt->rt_conf->alpn;
	c->c_tlsp.tp_sni = rt->rt_sni;
	c->c_tlsp.tp_server_name = rt->rt_conf->sec.server_name;
	c->c_tlsp.tp_rules = &rt->rt_rules;

	/* A MySQL client hears about any failure from now on as an ERR. */
	if (rt->rt_conf->kind == ROUTE_MYSQL) {
		struct mysql_params mp;

		mp.mp_ep[MYSQL_CLIENT] = &c->c_ep[0];
		mp.mp_ep[MYSQL_SERVER] = &c->c_ep[1];
		mp.mp_tls = &c->c_tls;
		mp.mp_tlsp = c->c_tlsp;
		mp.mp_target = rt->rt_conf->target;
		if ((c->c_my = mysql_begin(&mp)) == NULL) {
			conn_fail(c, "failed", "out of memory");
			return;
		}
	}
	if (rt->rt_conf->kind == ROUTE_SERVER) {
		if (tls_setup(&c->c_tls, &c->c_ep[0], &c->c_tlsp) == -1) {
			conn_fail(c, "failed", "cannot create a TLS session");
			return;
		}
		conn_set_state(c, CS_HANDSHAKE);
	} else
		conn_set_state(c, CS_CONNECTING);
	conn_step(c);
}

/* Start or finish the connect to the target.  1 done, 0 waiting, -1 failed. */
static int
conn_connect(struct conn *c)
{
	struct endpoint *ep = &c->c_ep[1];
	socklen_t len = sizeof(int);
	int err = 0;

	if (ep->ep_fd == -1) {
		ep->ep_fd = addr_connect(&c->c_route->rt_target);
		if (ep->ep_fd == -1) {
			c->c_why = WHY_CONNECT;
			conn_fail(c, NULL, "connect to %s: %s",
			    c->c_route->rt_conf->target, strerror(errno));
			return (-1);
		}
		ep->ep_wr_wait = EV_WRITE;
		return (0);
	}
	if (ep->ep_wr_wait)
		return (0);
	if (getsockopt(ep->ep_fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		c->c_why = WHY_CONNECT;
		conn_fail(c, NULL, "connect to %s: %s",
		    c->c_route->rt_conf->target, strerror(err));
		return (-1);
	}
	return (1);
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

/* Advance the state machine as far as it goes without blocking. */
static void
conn_step(struct conn *c)
{
	enum conn_state before;
	enum tls_status st;
	int r;

	do {
		before = c->c_state;
		switch (c->c_state) {
		case CS_HANDSHAKE:
			st = tls_handshake(&c->c_tls, tls_side(c));
			if (st == TLS_FAIL) {
				conn_tls_failed(c);
				return;
			}
			if (st == TLS_WAIT)
				break;
			conn_set_state(c, c->c_route->rt_conf->kind ==
			    ROUTE_SERVER ? CS_CONNECTING : CS_RELAY);
			break;
		case CS_CONNECTING:
			r = conn_connect(c);
			if (r == -1)
				return;
			if (r == 0)
				break;
			if (c->c_route->rt_conf->kind == ROUTE_SERVER) {
				conn_set_state(c, CS_RELAY);
				break;
			}
			if (c->c_route->rt_conf->kind == ROUTE_MYSQL) {
				conn_set_state(c, CS_MYSQL);
				break;
			}
			if (tls_setup(&c->c_tls, &c->c_ep[1], &c->c_tlsp) ==
			    -1) {
				conn_fail(c, "failed", "cannot create a TLS "
				    "session");
				return;
			}
			conn_set_state(c, CS_HANDSHAKE);
			break;
		case CS_MYSQL:
			switch (mysql_step(c->c_my)) {
			case MYSQL_WAIT:
				break;
			case MYSQL_DONE:
				conn_mysql_done(c);
				break;
			case MYSQL_FAIL:
				conn_fail(c, "failed", "%s",
				    mysql_reason(c->c_my));
				return;
			case MYSQL_TLS_FAIL:
				conn_tls_failed(c);
				return;
			}
			break;
		case CS_RELAY:
			c->c_io_ms = now_ms();
			switch (relay_pump(&c->c_relay)) {
			case RELAY_FAILED:
				c->c_abort = c->c_relay.r_abort;
				conn_close(c, c->c_relay.r_reason);
				return;
			case RELAY_DONE:
				/* A direction that died keeps its reason. */
				conn_close(c, c->c_relay.r_reason[0] ?
				    c->c_relay.r_reason : "eof");
				return;
			case RELAY_MORE:
				/* Budget spent: the other connections of
				 * this worker first, then on from here. */
				event_active(&c->c_more, 0, 0);
				break;
			case RELAY_BLOCKED:
				break;
			}
			if (relay_half_closed(&c->c_relay) &&
			    c->c_halfclosed_ms == 0)
				c->c_halfclosed_ms = now_ms();
			break;
		default:
			return;
		}
	} while (c->c_state != before);
	conn_arm(c);
	conn_timer_update(c);
}

/* The TLS side's handshake failed: close with the session's verdict. */
static void
conn_tls_failed(struct conn *c)
{
	const struct tls_verdict *v = &c->c_tls.ts_v;

	c->c_result = v->tv_denied ? "denied" : "failed";
	switch (v->tv_why) {
	case TLS_WHY_POLICY:	c->c_why = WHY_POLICY; break;
	case TLS_WHY_VERIFY:	c->c_why = WHY_VERIFY; break;
	case TLS_WHY_NOCERT:	c->c_why = WHY_NOCERT; break;
	case TLS_WHY_HANDSHAKE:	c->c_why = WHY_HANDSHAKE; break;
	case TLS_WHY_NONE:	break;
	}
	conn_close(c, v->tv_reason[0] != '\0' ? v->tv_reason : NULL);
}

void
conn_fail(struct conn *c, const char *result, const char *fmt, ...)
{
	va_list ap;

	if (result != NULL)
		c->c_result = result;
	else
		c->c_result = "failed";
	va_start(ap, fmt);
	vsnprintf(c->c_reason, sizeof(c->c_reason), fmt, ap);
	va_end(ap);
	conn_close(c, NULL);
}

static void
conn_log(struct conn *c)
{
	struct route_conf *rc = c->c_route->rt_conf;
	struct logline l;
	const char *ev = "close";
	enum log_level lv = LOG_INFO;

	if (strcmp(c->c_result, "denied") == 0) {
		ev = "denied";
		lv = LOG_WARN;
	} else if (strcmp(c->c_result, "failed") == 0) {
		ev = c->c_why == WHY_VERIFY || c->c_why == WHY_NOCERT ||
		    c->c_why == WHY_TIMEOUT || c->c_why == WHY_HANDSHAKE ||
		    c->c_state == CS_HANDSHAKE ? "handshake_failed" :
		    "conn_failed";
		lv = LOG_WARN;
	}
	log_begin(&l, lv, ev);
	log_str(&l, "route", rc->name);
	log_str(&l, "peer", c->c_peer);
	log_str(&l, "cn", c->c_tls.ts_v.tv_cn[0] ? c->c_tls.ts_v.tv_cn : NULL);
	if (ev[0] == 'd') {
		char rules[512];
		log_str(&l, "sans", c->c_tls.ts_v.tv_sans);
		policy_describe(&c->c_route->rt_rules, rules, sizeof(rules));
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

/* Count the ended connection in its route's metrics. */
static void
conn_count(struct conn *c)
{
	struct route_stats *st = c->c_route->rt_stats;
	int64_t dur = now_ms() - c->c_start_ms;
	int b;

	if (strcmp(c->c_result, "denied") == 0)
		atomic_fetch_add(&st->rs_denied, 1);
	else if (strcmp(c->c_result, "failed") == 0)
		atomic_fetch_add(&st->rs_failed, 1);
	else
		atomic_fetch_add(&st->rs_allowed, 1);
	switch (c->c_why) {
	case WHY_POLICY:	atomic_fetch_add(&st->rs_deny_policy, 1); break;
	case WHY_VERIFY:	atomic_fetch_add(&st->rs_fail_verify, 1); break;
	case WHY_NOCERT:	atomic_fetch_add(&st->rs_fail_nocert, 1); break;
	case WHY_TIMEOUT:	atomic_fetch_add(&st->rs_fail_timeout, 1); break;
	case WHY_HANDSHAKE:	atomic_fetch_add(&st->rs_fail_other, 1); break;
	case WHY_CONNECT:	atomic_fetch_add(&st->rs_fail_connect, 1); break;
	case WHY_NONE:		break;
	}
	atomic_fetch_add(&st->rs_bytes_in, c->c_relay.r_up.h_bytes);
	atomic_fetch_add(&st->rs_bytes_out, c->c_relay.r_down.h_bytes);
	for (b = 0; b < DUR_BUCKETS; b++)
		if ((double)dur / 1000.0 <= route_dur_bounds[b])
			break;
	atomic_fetch_add(&st->rs_dur[b], 1);
	atomic_fetch_add(&st->rs_dur_sum_ms, (uint64_t)dur);
}

void
conn_close(struct conn *c, const char *reason)
{
	struct route_rt *rt = c->c_route;
	int i;

	assert(c->c_magic == CONN_MAGIC);
	if (reason != NULL)
		snprintf(c->c_reason, sizeof(c->c_reason), "%s", reason);
	if (c->c_reason[0] == '\0')
		snprintf(c->c_reason, sizeof(c->c_reason), "closed");
	conn_log(c);
	conn_count(c);
	if (c->c_my != NULL) {
		char msg[512];

		/* The MySQL client hears why, as an ERR. */
		snprintf(msg, sizeof(msg), "dmtls (route %s): %s",
		    rt->rt_conf->name, c->c_reason);
		mysql_end(c->c_my, msg);
		c->c_my = NULL;
	}

	event_del(&c->c_timer);
	event_del(&c->c_more);
	for (i = 0; i < 2; i++) {
		struct endpoint *ep = &c->c_ep[i];
		int plain = ep->ep_ssl == NULL;

		if (c->c_side[i].cs_armed)
			event_del(&c->c_side[i].cs_ev);
		endpoint_release(ep);
		if (ep->ep_fd == -1)
			continue;
		if (c->c_abort && plain)
			abort_close(ep->ep_fd);
		else if (i == 0 && !ep->ep_rd_eof)
			/* The client may still be sending: let what is
			 * queued for it (an alert, a reply's tail, an ERR)
			 * reach it before its bytes force a reset. */
			linger_close(c->c_worker->w_base, ep->ep_fd);
		else {
			drain(ep->ep_fd);
			close(ep->ep_fd);
		}
	}
	relay_free(&c->c_relay);
	certset_release(c->c_cs);
	worker_conn_del(c->c_worker, c);
	c->c_magic = 0;
	c->c_state = CS_CLOSED;
	free(c);
	route_conn_done(rt);
	route_release(rt);
}
