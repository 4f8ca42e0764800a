/*
 * route.c: a route's listeners, references and counters.
 *
 * Every worker has its own listening socket (SO_REUSEPORT), so the kernel
 * spreads new connections over the workers.  --max-conns counts a route's
 * connections in the whole process: when it is reached every worker stops
 * accepting, and extra clients wait in the kernel backlog until a
 * connection ends.
 */
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../policy/certset.h"
#include "../policy/policy.h"
#include "conn.h"
#include "log.h"
#include "logfold.h"
#include "mysqlkey.h"
#include "route.h"
#include "tls.h"
#include "worker.h"

static void route_conn_done(struct route_rt *);
static void route_conn_ended(void *, const struct conn_end *);

#define EMFILE_BACKOFF_MS	100
/* Descriptors kept free for what an accepted connection still opens. */
#define FD_HEADROOM		16

const double route_dur_bounds[DUR_BUCKETS] = {
	0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 3600
};

/* The counters of every route name, shared across reloads. */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static struct route_stats **stats_v;
static size_t stats_n;

struct route_stats *
route_stats_get(const char *name)
{
	struct route_stats *st = NULL, **v;
	size_t i;

	pthread_mutex_lock(&stats_lock);
	for (i = 0; i < stats_n; i++)
		if (strcmp(stats_v[i]->rs_name, name) == 0) {
			st = stats_v[i];
			atomic_fetch_add(&st->rs_refs, 1);
			goto out;
		}
	if ((st = calloc(1, sizeof(*st))) == NULL)
		goto out;
	if ((st->rs_fold = logfold_new(name)) == NULL ||
	    (v = realloc(stats_v, (stats_n + 1) * sizeof(*v))) == NULL) {
		logfold_free(st->rs_fold);
		free(st);
		st = NULL;
		goto out;
	}
	stats_v = v;
	stats_v[stats_n++] = st;
	atomic_init(&st->rs_refs, 1);
	pthread_mutex_init(&st->rs_lock, NULL);
	snprintf(st->rs_name, sizeof(st->rs_name), "%s", name);
out:
	pthread_mutex_unlock(&stats_lock);
	return (st);
}

void
route_stats_put(struct route_stats *st)
{
	size_t i;

	if (st == NULL)
		return;
	pthread_mutex_lock(&stats_lock);
	if (atomic_fetch_sub(&st->rs_refs, 1) == 1) {
		for (i = 0; i < stats_n; i++)
			if (stats_v[i] == st) {
				stats_v[i] = stats_v[--stats_n];
				break;
			}
		pthread_mutex_destroy(&st->rs_lock);
		logfold_free(st->rs_fold);
		free(st);
	}
	pthread_mutex_unlock(&stats_lock);
}

void
route_fold_tick(void)
{
	size_t i;

	pthread_mutex_lock(&stats_lock);
	for (i = 0; i < stats_n; i++)
		logfold_tick(stats_v[i]->rs_fold);
	pthread_mutex_unlock(&stats_lock);
}

/* certset's notes, as log lines. */
static void
certs_log(void *arg, const struct certset_note *n)
{
	enum log_level lv = n->cn_warn ? LOG_WARN : LOG_INFO;
	struct logline l;

	(void)arg;
	if (n->cn_msg != NULL) {
		log_msg(lv, n->cn_event, "%s", n->cn_msg);
		return;
	}
	log_begin(&l, lv, n->cn_event);
	log_str(&l, "route", n->cn_route);
	log_str(&l, "file", n->cn_file);
	log_str(&l, "key", n->cn_key);
	log_str(&l, "reason", n->cn_reason);
	log_str(&l, "action", n->cn_action);
	log_end(&l);
}

void
route_rules_of(const struct security_conf *sec, struct policy_rules *r)
{
	r->pr_cn.pl_v = sec->allowed_cn.sl_v;
	r->pr_cn.pl_n = sec->allowed_cn.sl_n;
	r->pr_dns.pl_v = sec->allowed_dns.sl_v;
	r->pr_dns.pl_n = sec->allowed_dns.sl_n;
	r->pr_uri.pl_v = sec->allowed_uri.sl_v;
	r->pr_uri.pl_n = sec->allowed_uri.sl_n;
	r->pr_ou.pl_v = sec->allowed_ou.sl_v;
	r->pr_ou.pl_n = sec->allowed_ou.sl_n;
}

/* What the route's connections get (but their loop and callback arg). */
static void
conn_params_of(struct route_rt *rt, struct conn_params *p)
{
	const struct route_conf *rc = rt->rt_conf;

	memset(p, 0, sizeof(*p));
	p->cp_kind = rc->kind;
	p->cp_name = rc->name;
	p->cp_target = rc->target;
	p->cp_addr = &rt->rt_target;
	p->cp_handshake_ms = rc->handshake_timeout_ms;
	p->cp_connect_ms = rc->connect_timeout_ms;
	p->cp_idle_ms = rc->idle_timeout_ms;
	p->cp_close_ms = rc->close_timeout_ms;
	p->cp_certs = rt->rt_certs;
	p->cp_rules = &rt->rt_rules;
	p->cp_alpn = &rc->alpn;
	p->cp_sni = rt->rt_sni;
	p->cp_server_name = rc->sec.server_name;
	p->cp_fold = rt->rt_stats->rs_fold;
	p->cp_end = route_conn_ended;
}

void
route_certsrc_params(const struct route_conf *rc, struct certsrc_params *p)
{
	memset(p, 0, sizeof(*p));
	p->name = rc->name;
	p->ssl_ca = rc->sec.ssl_ca;
	p->ssl_cert = rc->sec.ssl_cert;
	p->ssl_key = rc->sec.ssl_key;
	p->ssl_crl = rc->sec.ssl_crl.sl_v;
	p->n_crl = rc->sec.ssl_crl.sl_n;
	p->tls_server = rc->kind == ROUTE_SERVER;
	p->verify_client = rc->sec.verify_client;
	p->reread = rc->reread;
}

struct route_rt *
route_new(struct route_conf *rc, char *err, size_t errlen)
{
	struct certsrc_params p;
	struct route_rt *rt;
	char why[256];

	if ((rt = calloc(1, sizeof(*rt))) == NULL) {
		snprintf(err, errlen, "out of memory");
		route_conf_free(rc);
		free(rc);
		return (NULL);
	}
	rt->rt_conf = rc;
	route_rules_of(&rc->sec, &rt->rt_rules);
	rt->rt_shared_fd = -1;
	atomic_init(&rt->rt_refs, 1);
	if (addr_parse(rc->listen, &rt->rt_listen, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "listen %s: %s", rc->listen, why);
		goto fail;
	}
	/* A target host name is looked up for every connection. */
	if (addr_parse_target(rc->target, &rt->rt_target, why, sizeof(why)) ==
	    -1) {
		snprintf(err, errlen, "target %s: %s", rc->target, why);
		goto fail;
	}
	if (rc->kind != ROUTE_SERVER) {
		/* SNI carries a host name, never an address (RFC 6066). */
		const char *sni = rc->sec.server_name ? rc->sec.server_name :
		    (rt->rt_target.a_is_ip || rt->rt_target.a_unix ? "" :
		    rt->rt_target.a_host);
		struct in6_addr ip;

		if (inet_pton(AF_INET, sni, &ip) == 1 ||
		    inet_pton(AF_INET6, sni, &ip) == 1)
			sni = "";
		snprintf(rt->rt_sni, sizeof(rt->rt_sni), "%s", sni);
	}
	route_certsrc_params(rc, &p);
	p.verify_cb = tls_verify_cb;
	p.log = certs_log;
	if ((rt->rt_certs = certsrc_new(&p, err, errlen)) == NULL)
		goto fail;
	if (rc->kind == ROUTE_MYSQL && mysqlkey_init(err, errlen) == -1)
		goto fail;
	if ((rt->rt_stats = route_stats_get(rc->name ? rc->name : "")) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	conn_params_of(rt, &rt->rt_cp);
	return (rt);
fail:
	route_free(rt);
	return (NULL);
}

int
route_bind(struct route_rt *rt, int nworkers, char *err, size_t errlen)
{
	char why[256];
	int i, fd;

	if ((rt->rt_lst = calloc((size_t)nworkers, sizeof(*rt->rt_lst))) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		return (-1);
	}
	rt->rt_nlst = nworkers;
	for (i = 0; i < nworkers; i++)
		rt->rt_lst[i].l_fd = -1;
	if (rt->rt_listen.a_systemd) {
		/* Inherited: shared by the workers, never closed, so a later
		 * reload can serve it again. */
		if ((fd = addr_systemd_fd(rt->rt_listen.a_host, why,
		    sizeof(why))) == -1)
			goto fail;
		rt->rt_shared_fd = fd;
		for (i = 0; i < nworkers; i++)
			rt->rt_lst[i].l_fd = fd;
		return (0);
	}
	if (rt->rt_listen.a_unix) {
		if ((fd = addr_listen(&rt->rt_listen, 0, why, sizeof(why))) ==
		    -1)
			goto fail;
		rt->rt_shared_fd = fd;
		rt->rt_shared_owned = 1;
		for (i = 0; i < nworkers; i++)
			rt->rt_lst[i].l_fd = fd;
		return (0);
	}
	/* A plain bind first: another process on the port (even one using
	 * SO_REUSEPORT) must be an error, never a silent share. */
	if ((fd = addr_listen(&rt->rt_listen, 0, why, sizeof(why))) == -1)
		goto fail;
	close(fd);
	for (i = 0; i < nworkers; i++) {
		fd = addr_listen(&rt->rt_listen, 1, why, sizeof(why));
		if (fd == -1)
			goto fail;
		rt->rt_lst[i].l_fd = fd;
		rt->rt_lst[i].l_owned = 1;
	}
	return (0);
fail:
	snprintf(err, errlen, "listen %s: %s", rt->rt_conf->listen, why);
	return (-1);
}

void
route_take_listeners(struct route_rt *rt, struct route_rt *old)
{
	int i;

	rt->rt_lst = calloc((size_t)old->rt_nlst, sizeof(*rt->rt_lst));
	rt->rt_nlst = old->rt_nlst;
	for (i = 0; i < old->rt_nlst; i++) {
		rt->rt_lst[i].l_fd = old->rt_lst[i].l_fd;
		rt->rt_lst[i].l_owned = old->rt_lst[i].l_owned;
		old->rt_lst[i].l_owned = 0;
	}
	rt->rt_shared_fd = old->rt_shared_fd;
	rt->rt_shared_owned = old->rt_shared_owned;
	old->rt_shared_owned = 0;
}

static void
listener_pause(struct listener *l)
{
	if (!l->l_paused) {
		event_del(&l->l_ev);
		l->l_paused = 1;
		log_msg(LOG_DEBUG, "listener", "route %s worker %d: paused",
		    l->l_rt->rt_conf->name, l->l_w->w_id);
	}
}

static void
listener_resume(struct listener *l)
{
	if (l->l_paused && l->l_fd != -1) {
		event_add(&l->l_ev, NULL);
		l->l_paused = 0;
		log_msg(LOG_DEBUG, "listener", "route %s worker %d: accepting",
		    l->l_rt->rt_conf->name, l->l_w->w_id);
	}
}

/* The route name's open connections, of every generation, fill max-conns. */
static int
route_full(struct route_rt *rt)
{
	return (rt->rt_conf->max_conns > 0 &&
	    atomic_load(&rt->rt_stats->rs_active) >= rt->rt_conf->max_conns);
}

/* Stop accepting for a moment: out of descriptors (or nearly). */
static void
listener_backoff(struct listener *l, const char *why)
{
	struct timeval tv = { 0, EMFILE_BACKOFF_MS * 1000 };

	if (!l->l_paused)
		log_msg(LOG_WARN, "accept_paused", "route %s: %s; pausing "
		    "%dms", l->l_rt->rt_conf->name, why, EMFILE_BACKOFF_MS);
	listener_pause(l);
	evtimer_add(&l->l_retry, &tv);
}

/* The soft descriptor limit, read once. */
static long
fd_limit(void)
{
	static long lim;
	struct rlimit rl;

	if (lim == 0)
		lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 1L << 20;
	return (lim);
}

/*
 * A descriptor to hold for an accepted connection's target socket (a dup
 * of one eventfd the process keeps), or -1 with errno set.  A server route
 * makes that socket only after the handshake; holding its descriptor from
 * accept on means a process at its descriptor limit stops accepting
 * instead of accepting clients it then cannot connect.
 */
static int
fd_reserve(void)
{
	static atomic_int anchor = -1;
	int a = atomic_load(&anchor), fd;

	if (a == -1) {
		if ((fd = eventfd(0, EFD_CLOEXEC)) == -1)
			return (-1);
		if (atomic_compare_exchange_strong(&anchor, &a, fd))
			a = fd;
		else
			close(fd);	/* another worker's came first: a */
	}
	return (fcntl(a, F_DUPFD_CLOEXEC, 0));
}

/* Hand an accepted socket, and the descriptor held for its target's, to a
 * new connection of l's worker. */
static void
route_accepted(struct listener *l, int fd, int reserve,
    const struct sockaddr *sa, socklen_t len)
{
	struct route_rt *rt = l->l_rt;
	struct conn_params p = rt->rt_cp;
	struct conn *c;

	atomic_fetch_add(&rt->rt_stats->rs_active, 1);
	route_hold(rt);
	p.cp_base = l->l_w->w_base;
	p.cp_arg = l;
	if ((c = conn_new(&p, fd, reserve, sa, len)) == NULL) {
		route_conn_done(rt);
		route_release(rt);
		return;
	}
	worker_conn_add(l->l_w, c);
	conn_start(c);
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct listener *l = arg;
	struct route_rt *rt = l->l_rt;
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, n, reserve, saved;

	(void)what;
	/* A bounded batch per wakeup keeps the loop fair to open conns. */
	for (n = 0; n < 32; n++) {
		if (route_full(rt)) {
			listener_pause(l);
			/* A connection may have ended meanwhile. */
			if (!route_full(rt))
				listener_resume(l);
			return;
		}
		/* Two descriptors per client, both taken before it is. */
		if ((reserve = fd_reserve()) == -1) {
			listener_backoff(l, strerror(errno));
			return;
		}
		len = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			saved = errno;
			close(reserve);
			if (saved == EMFILE || saved == ENFILE ||
			    saved == ENOBUFS || saved == ENOMEM)
				listener_backoff(l, strerror(saved));
			return;
		}
		route_accepted(l, fd, reserve, (struct sockaddr *)&ss, len);
		/* Descriptors are handed out lowest first: a high one means
		 * few are left for target sockets.  Serve this client, then
		 * let the next ones wait in the backlog for a moment. */
		if (fd >= fd_limit() - FD_HEADROOM) {
			listener_backoff(l, "few file descriptors left");
			return;
		}
	}
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	if (!route_full(l->l_rt))
		listener_resume(l);
}

int
route_listen(struct route_rt *rt, struct worker *w)
{
	struct listener *l = &rt->rt_lst[w->w_id];
	struct route_stats *st = rt->rt_stats;

	l->l_rt = rt;
	event_assign(&l->l_ev, w->w_base, l->l_fd, EV_READ | EV_PERSIST,
	    accept_cb, l);
	event_assign(&l->l_resume, w->w_base, -1, 0, resume_cb, l);
	evtimer_assign(&l->l_retry, w->w_base, resume_cb, l);
	l->l_paused = 1;
	/* Published only now that its events exist: route_conn_done()
	 * activates l_resume from other threads. */
	pthread_mutex_lock(&st->rs_lock);
	l->l_w = l->l_home = w;
	if (!rt->rt_retired)
		st->rs_live = rt;
	pthread_mutex_unlock(&st->rs_lock);
	if (!route_full(rt))
		listener_resume(l);
	return (0);
}

void
route_stop_listening(struct route_rt *rt, struct worker *w)
{
	struct listener *l = &rt->rt_lst[w->w_id];
	struct route_stats *st = rt->rt_stats;

	if (l->l_w == NULL)
		return;
	listener_pause(l);
	pthread_mutex_lock(&st->rs_lock);
	l->l_w = NULL;		/* no wakeup from now on */
	pthread_mutex_unlock(&st->rs_lock);
	event_del(&l->l_resume);
	event_del(&l->l_retry);
	if (l->l_owned && l->l_fd != -1)
		close(l->l_fd);
	l->l_owned = 0;
	l->l_fd = -1;
}

void
route_retire(struct route_rt *rt)
{
	struct route_stats *st = rt->rt_stats;

	pthread_mutex_lock(&st->rs_lock);
	rt->rt_retired = 1;
	if (st->rs_live == rt)
		st->rs_live = NULL;
	pthread_mutex_unlock(&st->rs_lock);
}

/* A connection ended: free its slot and wake paused listeners. */
static void
route_conn_done(struct route_rt *rt)
{
	struct route_stats *st = rt->rt_stats;
	struct route_rt *live;
	long before;
	int i;

	before = atomic_fetch_sub(&st->rs_active, 1);
	/* A slot came free: wake the paused listeners of the generation
	 * serving now, whichever generation this connection belonged to. */
	pthread_mutex_lock(&st->rs_lock);
	live = st->rs_live;
	if (live != NULL && live->rt_conf->max_conns > 0 &&
	    before >= live->rt_conf->max_conns)
		for (i = 0; i < live->rt_nlst; i++)
			if (live->rt_lst[i].l_w != NULL)
				event_active(&live->rt_lst[i].l_resume, 0, 0);
	pthread_mutex_unlock(&st->rs_lock);
}

/* Count an ended connection in its route's metrics. */
static void
route_count(struct route_stats *st, const struct conn_end *e)
{
	int b;

	if (e->ce_result == CONN_DENIED)
		atomic_fetch_add(&st->rs_denied, 1);
	else if (e->ce_result == CONN_FAILED)
		atomic_fetch_add(&st->rs_failed, 1);
	else
		atomic_fetch_add(&st->rs_allowed, 1);
	switch (e->ce_why) {
	case WHY_POLICY:	atomic_fetch_add(&st->rs_deny_policy, 1); break;
	case WHY_REVOKED:	atomic_fetch_add(&st->rs_deny_revoked, 1); break;
	case WHY_CRL_EXPIRED:
		atomic_fetch_add(&st->rs_deny_crl_expired, 1);
		break;
	case WHY_CRL_MISSING:
		atomic_fetch_add(&st->rs_deny_crl_missing, 1);
		break;
	case WHY_VERIFY:	atomic_fetch_add(&st->rs_fail_verify, 1); break;
	case WHY_NOCERT:	atomic_fetch_add(&st->rs_fail_nocert, 1); break;
	case WHY_TIMEOUT:	atomic_fetch_add(&st->rs_fail_timeout, 1); break;
	case WHY_HANDSHAKE:	atomic_fetch_add(&st->rs_fail_other, 1); break;
	case WHY_CONNECT:	atomic_fetch_add(&st->rs_fail_connect, 1); break;
	case WHY_NONE:		break;
	}
	atomic_fetch_add(&st->rs_bytes_in, e->ce_bytes_in);
	atomic_fetch_add(&st->rs_bytes_out, e->ce_bytes_out);
	for (b = 0; b < DUR_BUCKETS; b++)
		if ((double)e->ce_dur_ms / 1000.0 <= route_dur_bounds[b])
			break;
	atomic_fetch_add(&st->rs_dur[b], 1);
	atomic_fetch_add(&st->rs_dur_sum_ms, (uint64_t)e->ce_dur_ms);
}

/*
 * The end callback of every connection a listener accepted: count it,
 * take it off its worker's list, free its slot, drop its reference.
 */
static void
route_conn_ended(void *arg, const struct conn_end *e)
{
	struct listener *l = arg;
	struct route_rt *rt = l->l_rt;

	route_count(rt->rt_stats, e);
	worker_conn_del(l->l_home, e->ce_conn);
	route_conn_done(rt);
	route_release(rt);
}

void
route_hold(struct route_rt *rt)
{
	atomic_fetch_add(&rt->rt_refs, 1);
}

void
route_release(struct route_rt *rt)
{
	if (rt != NULL && atomic_fetch_sub(&rt->rt_refs, 1) == 1)
		route_free(rt);
}

void
route_free(struct route_rt *rt)
{
	int i;

	if (rt == NULL)
		return;
	if (rt->rt_stats != NULL)
		route_retire(rt);
	for (i = 0; i < rt->rt_nlst; i++)
		if (rt->rt_lst[i].l_owned && rt->rt_lst[i].l_fd != -1)
			close(rt->rt_lst[i].l_fd);
	if (rt->rt_shared_owned && rt->rt_shared_fd != -1)
		close(rt->rt_shared_fd);
	certsrc_free(rt->rt_certs);
	route_stats_put(rt->rt_stats);
	route_conf_free(rt->rt_conf);
	free(rt->rt_conf);
	free(rt->rt_lst);
	free(rt);
}
