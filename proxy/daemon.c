/*
 * daemon.c: the main thread: generations of routes, SIGHUP reloads,
 * SIGTERM/SIGINT drains, systemd notifications and the status listener.
 *
 * A reload builds and binds the whole new generation first; only when
 * every route of it is valid does it take over the old generation's
 * listening sockets (same listen address: nothing is refused meanwhile)
 * and ask each worker to switch.  Old routes stay alive, reference
 * counted, until their last connection ends.
 */
#include <netinet/in.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/thread.h>

#include "../policy/policy.h"
#include "conffile.h"
#include "daemon.h"
#include "log.h"
#include "notify.h"
#include "resolve.h"
#include "route.h"
#include "status.h"
#include "worker.h"

void
routeset_release(struct routeset *set)
{
	size_t i;

	for (i = 0; i < set->rs_n; i++)
		route_release(set->rs_v[i]);
	free(set->rs_v);
	set->rs_v = NULL;
	set->rs_n = 0;
}

static struct route_rt *
find_listen(const struct routeset *set, const char *listen)
{
	size_t i;

	for (i = 0; set != NULL && i < set->rs_n; i++)
		if (strcmp(set->rs_v[i]->rt_conf->listen, listen) == 0)
			return (set->rs_v[i]);
	return (NULL);
}

/* The TCP port of a, or 0 (unix, systemd). */
static int
tcp_port(const struct addr *a)
{
	if (a->a_unix || a->a_systemd)
		return (0);
	if (a->a_ss.ss_family == AF_INET)
		return (ntohs(((const struct sockaddr_in *)&a->a_ss)->sin_port));
	if (a->a_ss.ss_family == AF_INET6)
		return (ntohs(((const struct sockaddr_in6 *)
		    &a->a_ss)->sin6_port));
	return (0);
}

static void
where(const struct route_conf *rc, char *buf, size_t len)
{
	if (rc->src_file != NULL)
		snprintf(buf, len, "%s:%d: route %s: ", rc->src_file,
		    rc->src_line, rc->name);
	else
		snprintf(buf, len, "--");
}

int
daemon_build(struct daemon *d, struct route_conf *rcs, size_t n,
    const struct routeset *reuse, struct routeset *out, char *err,
    size_t errlen)
{
	struct route_conf *rc;
	struct route_rt *rt;
	char why[1024], at[512];
	size_t i;

	out->rs_n = 0;
	if ((out->rs_v = calloc(n, sizeof(*out->rs_v))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return (-1);
	}
	for (i = 0; i < n; i++) {
		if ((rc = malloc(sizeof(*rc))) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		/* Move the config into the route, which owns it now. */
		*rc = rcs[i];
		memset(&rcs[i], 0, sizeof(rcs[i]));
		where(rc, at, sizeof(at));
		if ((rt = route_new(rc, why, sizeof(why))) == NULL) {
			snprintf(err, errlen, "%s%s", at, why);
			goto fail;
		}
		out->rs_v[out->rs_n++] = rt;
	}
	/* Bind new addresses; reused ones are taken over below. */
	for (i = 0; i < out->rs_n; i++) {
		rt = out->rs_v[i];
		if (find_listen(reuse, rt->rt_conf->listen) != NULL)
			continue;
		if (route_bind(rt, d->d_nworkers, why, sizeof(why)) == -1) {
			int low = (errno == EACCES || errno == EPERM) &&
			    d->d_privs.pv_dropped &&
			    tcp_port(&rt->rt_listen) > 0 &&
			    tcp_port(&rt->rt_listen) < 1024;
			where(rt->rt_conf, at, sizeof(at));
			snprintf(err, errlen, "%s%s%s%s%s", at, why, low ?
			    ": ports below 1024 need root, and dmtls dropped its "
			    "privileges to user " : "", low ?
			    d->d_privs.pv_user : "", low ? " after start-up; "
			    "restart dmtls to bind it, or let systemd pass the "
			    "socket (listen = \"systemd:NAME\") or grant "
			    "CAP_NET_BIND_SERVICE" : "");
			goto fail;
		}
	}
	/* Nothing can fail from here on. */
	for (i = 0; i < out->rs_n; i++) {
		struct route_rt *old = find_listen(reuse,
		    out->rs_v[i]->rt_conf->listen);
		if (old != NULL)
			route_take_listeners(out->rs_v[i], old);
	}
	for (i = 0; i < out->rs_n; i++) {
		rt = out->rs_v[i];
		rc = rt->rt_conf;
		if (rc->kind == ROUTE_SERVER && !rc->sec.verify_client)
			log_msg(LOG_WARN, "no_client_auth", "ROUTE %s DOES NOT "
			    "ASK CLIENTS FOR A CERTIFICATE (verify-client = "
			    "false): anyone who reaches %s gets through to %s%s",
			    rc->name, rc->listen, rc->target,
			    policy_empty(&rt->rt_rules) ? "" : "; its cert-allowed-* "
			    "rules are ignored");
		else if (policy_empty(&rt->rt_rules))
			log_msg(LOG_WARN, "open_policy", "route %s accepts any "
			    "certificate signed by %s; set cert-allowed-cn to "
			    "limit who may connect", rc->name, rc->sec.ssl_ca);
	}
	return (0);
fail:
	for (i = 0; i < out->rs_n; i++)
		route_free(out->rs_v[i]);
	free(out->rs_v);
	out->rs_v = NULL;
	out->rs_n = 0;
	return (-1);
}

/* The workers all serve the new generation: drop the old one. */
static void
switched_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	routeset_release(&d->d_old);
	log_msg(LOG_INFO, "reloaded", "%zu route(s) in service",
	    d->d_routes.rs_n);
	notify_send("READY=1");
}

static void
reload_failed(struct daemon *d, const char *err)
{
	d->d_reload_ok = 0;
	snprintf(d->d_reload_err, sizeof(d->d_reload_err), "%s", err);
	log_msg(LOG_ERROR, "reload_failed", "%s; still serving the previous "
	    "configuration", err);
	notify_send("READY=1");
}

static void
daemon_reload(struct daemon *d)
{
	struct config cf;
	struct routeset set;
	char err[1024];
	size_t i;

	d->d_reload_time = time(NULL);
	d->d_reloads++;
	if (d->d_config == NULL) {
		log_msg(LOG_WARN, "reload_ignored", "SIGHUP: routes came from "
		    "the command line; nothing to reload");
		return;
	}
	if (atomic_load(&d->d_switching) > 0) {
		log_msg(LOG_WARN, "reload_ignored", "SIGHUP: a reload is "
		    "still switching workers; send it again");
		return;
	}
	notify_send("RELOADING=1");
	log_msg(LOG_INFO, "reloading", "reading %s", d->d_config);
	if (config_load(d->d_config, &cf, err, sizeof(err)) == -1) {
		reload_failed(d, err);
		return;
	}
	if (cf.cf_g.workers != d->d_g.workers)
		log_msg(LOG_WARN, "reload", "workers changed; that takes a "
		    "restart");
	if ((cf.cf_g.status == NULL) != (d->d_g.status == NULL) ||
	    (cf.cf_g.status != NULL && strcmp(cf.cf_g.status,
	    d->d_g.status) != 0))
		log_msg(LOG_WARN, "reload", "status address changed; that "
		    "takes a restart");
	if ((cf.cf_g.user == NULL) != (d->d_g.user == NULL) ||
	    (cf.cf_g.user != NULL && strcmp(cf.cf_g.user, d->d_g.user) != 0) ||
	    (cf.cf_g.group == NULL) != (d->d_g.group == NULL) ||
	    (cf.cf_g.group != NULL && strcmp(cf.cf_g.group,
	    d->d_g.group) != 0))
		log_msg(LOG_WARN, "reload", "user or group changed; that "
		    "takes a restart");
	if (cf.cf_g.sandbox != d->d_g.sandbox)
		log_msg(LOG_WARN, "reload", "sandbox changed; that takes a "
		    "restart");
	for (i = 0; i < cf.cf_nroutes; i++) {
		char why[640], at[256];
		if (sandbox_check_route(&d->d_sb, &cf.cf_routes[i], why,
		    sizeof(why)) == -1) {
			where(&cf.cf_routes[i], at, sizeof(at));
			snprintf(err, sizeof(err), "%s%s", at, why);
			config_free(&cf);
			reload_failed(d, err);
			return;
		}
	}
	if (daemon_build(d, cf.cf_routes, cf.cf_nroutes, &d->d_routes, &set,
	    err, sizeof(err)) == -1) {
		config_free(&cf);
		reload_failed(d, err);
		return;
	}
	log_setup(cf.cf_g.log_level ? cf.cf_g.log_level : "info",
	    cf.cf_g.log_format ? cf.cf_g.log_format : "text");
	d->d_g.shutdown_timeout_ms = cf.cf_g.shutdown_timeout_ms;
	config_free(&cf);

	for (i = 0; i < d->d_routes.rs_n; i++)
		route_retire(d->d_routes.rs_v[i]);
	d->d_old = d->d_routes;
	d->d_routes = set;
	d->d_reload_ok = 1;
	d->d_reload_err[0] = '\0';
	atomic_store(&d->d_switching, d->d_nworkers);
	for (i = 0; i < (size_t)d->d_nworkers; i++)
		event_active(&d->d_workers[i].dw_switch, 0, 0);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct timeval tv;
	int i;

	(void)what;
	if (sig == SIGHUP) {
		if (!d->d_stopping)
			daemon_reload(d);
		return;
	}
	if (d->d_stopping)
		return;
	d->d_stopping = 1;
	d->d_signo = (int)sig;
	notify_send("STOPPING=1");
	atomic_store(&d->d_closing, d->d_nworkers);
	for (i = 0; i < d->d_nworkers; i++)
		event_active(&d->d_workers[i].dw_stop, 0, 0);
	tv.tv_sec = d->d_g.shutdown_timeout_ms / 1000;
	tv.tv_usec = (d->d_g.shutdown_timeout_ms % 1000) * 1000;
	/* The main loop ends at the deadline; workers still busy get cut. */
	event_base_loopexit(d->d_base, &tv);
}

/* Every worker closed its listeners: say so only now. */
static void
closed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	log_msg(LOG_INFO, "stopping", "%s: listeners closed, no new "
	    "connections; draining open ones for up to %ldms",
	    d->d_signo == SIGINT ? "SIGINT" : "SIGTERM",
	    d->d_g.shutdown_timeout_ms);
}

/* Folded failure lines: the summaries due, also when failures stopped. */
static void
fold_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	route_fold_tick();
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify_send("WATCHDOG=1");
}

/* Start (on) or stop dw's listeners of dw_routes, in its thread (or
 * before that runs). */
static void
serve(struct daemon_worker *dw, int on)
{
	size_t i;

	for (i = 0; i < dw->dw_routes.rs_n; i++)
		if (on)
			route_listen(dw->dw_routes.rs_v[i], &dw->dw_w);
		else
			route_stop_listening(dw->dw_routes.rs_v[i], &dw->dw_w);
}

/*
 * In a worker's thread: stop accepting (the listeners of the generation it
 * serves), then drain.  The last worker to close its listeners says so.
 */
static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_worker *dw = arg;
	struct daemon *d = dw->dw_d;

	(void)fd;
	(void)what;
	serve(dw, 0);
	if (atomic_fetch_sub(&d->d_closing, 1) == 1)
		event_active(&d->d_closed, 0, 0);
	worker_drain(&dw->dw_w);
}

/* In a worker's thread: stop the old generation's listeners, start the
 * new one's.  The last worker to switch says so. */
static void
switch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_worker *dw = arg;
	struct daemon *d = dw->dw_d;

	(void)fd;
	(void)what;
	if (!dw->dw_w.w_draining) {
		serve(dw, 0);
		dw->dw_routes = d->d_routes;
		serve(dw, 1);
	}
	if (atomic_fetch_sub(&d->d_switching, 1) == 1)
		event_active(&d->d_switched, 0, 0);
}

/* After the drop: every file the routes read must stay readable, or
 * rotation would fail later; the config file, or reloads would. */
static int
readable(struct daemon *d, char *err, size_t errlen)
{
	const char *files[ROUTE_CONF_FILES_MAX];
	size_t i, j, n;
	int fd;

	for (i = 0; i < d->d_routes.rs_n; i++) {
		n = route_conf_files(d->d_routes.rs_v[i]->rt_conf, files,
		    ROUTE_CONF_FILES_MAX);
		for (j = 0; j < n; j++) {
			if ((fd = open(files[j], O_RDONLY | O_CLOEXEC)) != -1) {
				close(fd);
				continue;
			}
			snprintf(err, errlen, "route %s: %s: user %s cannot read "
			    "it (%s); make it readable by group %s (chgrp %s "
			    "FILE; chmod g+r FILE)",
			    d->d_routes.rs_v[i]->rt_conf->name, files[j],
			    d->d_privs.pv_user, strerror(errno),
			    d->d_privs.pv_group, d->d_privs.pv_group);
			return (-1);
		}
	}
	if (d->d_config != NULL && access(d->d_config, R_OK) == -1)
		log_msg(LOG_WARN, "privileges", "user %s cannot read %s (%s); "
		    "reloads will fail", d->d_privs.pv_user, d->d_config,
		    strerror(errno));
	return (0);
}

/*
 * Drop privileges (user set), then confine (sandbox on), before any
 * thread is started: Landlock binds only this thread and its children.
 * 0, or an exit status.
 */
static int
confine(struct daemon *d)
{
	char err[1024];
	size_t i;

	if (d->d_g.user != NULL) {
		if (privs_resolve(d->d_g.user, d->d_g.group, &d->d_privs, err,
		    sizeof(err)) == -1 ||
		    privs_drop(&d->d_privs, err, sizeof(err)) == -1 ||
		    (d->d_privs.pv_dropped && readable(d, err, sizeof(err)) ==
		    -1)) {
			log_msg(LOG_ERROR, "privileges", "%s", err);
			return (2);
		}
		if (d->d_privs.pv_dropped)
			log_msg(LOG_INFO, "privileges", "running as user %s "
			    "(uid %lu), group %s (gid %lu), %d supplementary "
			    "group(s)", d->d_privs.pv_user,
			    (unsigned long)d->d_privs.pv_uid,
			    d->d_privs.pv_group,
			    (unsigned long)d->d_privs.pv_gid,
			    d->d_privs.pv_ngroups);
	}
	if (!d->d_g.sandbox) {
		log_msg(LOG_INFO, "sandbox", "off (sandbox = false)");
		return (0);
	}
	if ((d->d_config != NULL && sandbox_add_config(&d->d_sb,
	    d->d_config) == -1) || sandbox_add_listen(&d->d_sb,
	    d->d_g.status) == -1)
		return (1);
	for (i = 0; i < d->d_routes.rs_n; i++)
		if (sandbox_add_route(&d->d_sb, d->d_routes.rs_v[i]->rt_conf) ==
		    -1)
			return (1);
	sandbox_apply(&d->d_sb);
	return (0);
}

/* Make the workers' loops, with d_routes listening in each, and start
 * their threads.  0 or -1. */
/*
 * Target names are looked up for every connection; at start each one is
 * also looked up once, off the loop, so a name that does not resolve yet
 * is a warning in the log at once rather than only at the first client.
 */
struct target_probe {
	struct resolve_req	*tp_rq;		/* NULL once answered */
	char			 tp_route[128];
	char			 tp_target[300];
};

static void
target_probed(void *arg, struct resolve_answer *ans, const char *err)
{
	struct target_probe *tp = arg;

	tp->tp_rq = NULL;
	if (ans == NULL)
		log_msg(LOG_WARN, "target_unresolved", "route %s: target %s: "
		    "%s; its connections fail until the name resolves",
		    tp->tp_route, tp->tp_target, err);
	free(ans);
}

static void
probe_targets(struct daemon *d)
{
	struct target_probe *tp;
	char err[256];
	size_t i;

	d->d_probes = calloc(d->d_routes.rs_n + 1, sizeof(*d->d_probes));
	if (d->d_probes == NULL)
		return;
	for (i = 0; i < d->d_routes.rs_n; i++) {
		const struct route_rt *rt = d->d_routes.rs_v[i];

		if (!rt->rt_target.a_name)
			continue;
		tp = &d->d_probes[d->d_nprobes];
		snprintf(tp->tp_route, sizeof(tp->tp_route), "%s",
		    rt->rt_conf->name);
		snprintf(tp->tp_target, sizeof(tp->tp_target), "%s",
		    rt->rt_conf->target);
		tp->tp_rq = resolve_start(d->d_base, rt->rt_target.a_host,
		    rt->rt_target.a_port, target_probed, tp, err, sizeof(err));
		if (tp->tp_rq != NULL)
			d->d_nprobes++;
	}
}

static void
probes_cancel(struct daemon *d)
{
	size_t i;

	for (i = 0; i < d->d_nprobes; i++)
		if (d->d_probes[i].tp_rq != NULL)
			resolve_cancel(d->d_probes[i].tp_rq);
	free(d->d_probes);
	d->d_probes = NULL;
	d->d_nprobes = 0;
}

static int
workers_start(struct daemon *d)
{
	struct daemon_worker *dw;
	int i;

	for (i = 0; i < d->d_nworkers; i++) {
		dw = &d->d_workers[i];
		dw->dw_d = d;
		if (worker_init(&dw->dw_w, i) == -1)
			return (-1);
		event_assign(&dw->dw_stop, dw->dw_w.w_base, -1, 0, stop_cb, dw);
		event_assign(&dw->dw_switch, dw->dw_w.w_base, -1, 0, switch_cb,
		    dw);
		dw->dw_routes = d->d_routes;
		serve(dw, 1);	/* from the main thread, before it runs */
	}
	for (i = 0; i < d->d_nworkers; i++)
		if (worker_run(&d->d_workers[i].dw_w) == -1)
			return (-1);
	return (0);
}

/* Stop the main loop early once every worker has finished draining. */
static void *
joiner_main(void *arg)
{
	struct daemon *d = arg;
	int i;

	for (i = 0; i < d->d_nworkers; i++)
		pthread_join(d->d_workers[i].dw_w.w_thread, NULL);
	event_base_loopbreak(d->d_base);
	return (NULL);
}

int
daemon_run(struct daemon *d)
{
	struct event *sig[3], *wd = NULL, *fold;
	struct timeval fold_tv = { 1, 0 };
	static const int signos[3] = { SIGTERM, SIGINT, SIGHUP };
	pthread_t joiner;
	uint64_t wdusec;
	char err[512];
	int i, forced = 0;

	signal(SIGPIPE, SIG_IGN);
	if ((d->d_base = event_base_new()) == NULL)
		return (1);
	for (i = 0; i < 3; i++) {
		sig[i] = evsignal_new(d->d_base, signos[i], signal_cb, d);
		evsignal_add(sig[i], NULL);
	}
	event_assign(&d->d_switched, d->d_base, -1, 0, switched_cb, d);
	event_assign(&d->d_closed, d->d_base, -1, 0, closed_cb, d);
	if (d->d_g.status != NULL &&
	    (d->d_status = status_start(d, d->d_g.status, err,
	    sizeof(err))) == NULL) {
		log_msg(LOG_ERROR, "status_failed", "status %s: %s",
		    d->d_g.status, err);
		return (2);
	}
	if ((i = confine(d)) != 0) {
		int k;
		for (k = 0; k < 3; k++)
			event_free(sig[k]);
		status_free(d->d_status);
		sandbox_free(&d->d_sb);
		routeset_release(&d->d_routes);
		event_base_free(d->d_base);
		return (i);
	}
	if (workers_start(d) == -1) {
		log_msg(LOG_ERROR, "start_failed", "cannot start the workers");
		return (1);
	}
	if ((wdusec = notify_watchdog_usec()) > 0) {
		struct timeval tv;
		wdusec /= 2;
		tv.tv_sec = (time_t)(wdusec / 1000000);
		tv.tv_usec = (suseconds_t)(wdusec % 1000000);
		wd = event_new(d->d_base, -1, EV_PERSIST, watchdog_cb, d);
		event_add(wd, &tv);
	}
	if ((fold = event_new(d->d_base, -1, EV_PERSIST, fold_cb, d)) != NULL)
		event_add(fold, &fold_tv);
	d->d_reload_ok = 1;
	d->d_reload_time = time(NULL);
	log_msg(LOG_INFO, "ready", "%zu route(s), %d worker(s)",
	    d->d_routes.rs_n, d->d_nworkers);
	notify_send("READY=1");
	probe_targets(d);
	pthread_create(&joiner, NULL, joiner_main, d);

	event_base_dispatch(d->d_base);
	probes_cancel(d);
	/* Either every worker drained, or the shutdown deadline passed. */
	for (i = 0; i < d->d_nworkers; i++)
		worker_kill(&d->d_workers[i].dw_w);
	pthread_join(joiner, NULL);

	if (wd != NULL)
		event_free(wd);
	if (fold != NULL)
		event_free(fold);
	for (i = 0; i < 3; i++)
		event_free(sig[i]);
	status_free(d->d_status);
	routeset_release(&d->d_old);
	routeset_release(&d->d_routes);
	for (i = 0; i < d->d_nworkers; i++) {
		forced |= atomic_load(&d->d_workers[i].dw_w.w_forced);
		worker_free(&d->d_workers[i].dw_w);
	}
	event_base_free(d->d_base);
	sandbox_free(&d->d_sb);
	if (forced) {
		log_msg(LOG_WARN, "stopped", "shutdown timeout: open "
		    "connections were cut");
		return (1);
	}
	log_msg(LOG_INFO, "stopped", "all connections finished");
	return (0);
}
