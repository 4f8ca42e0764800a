/*
 * status.c: GET /healthz, /metrics and /status on the status listener.
 * Runs on the main thread, which owns the current generation of routes;
 * counters are atomics shared with the workers.
 *
 * The HTTP side is a small server of its own on bufferevents, not
 * libevent's evhttp: evhttp 2.1 (Debian 12) reads a whole request body
 * before any callback sees the method, and has no connection limit.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"

#include "../policy/certset.h"
#include "../policy/crl.h"
#include "../policy/policy.h"
#include "addr.h"
#include "daemon.h"
#include "log.h"
#include "route.h"
#include "status.h"

/*
 * DESIGN 7's bounds.  A connection carries one request: its head (request
 * line and headers, STATUS_HEAD_MAX bytes at most, 431 beyond) must arrive
 * within STATUS_IDLE_SEC of the accept; nothing after the head is ever
 * read, so a request body stays in the socket and is dropped with it (a
 * POST gets its 405 without a body being read); the reply carries
 * "Connection: close" and the connection is closed once it is sent, or
 * when the client stops reading it for STATUS_IDLE_SEC.  Beyond
 * STATUS_MAX_CONNS open connections a new one gets a 503 and is closed.
 */
#define STATUS_MAX_CONNS	64
#define STATUS_HEAD_MAX		8192
#define STATUS_IDLE_SEC		10
#define ACCEPT_BACKOFF_MS	100

struct sconn {
	struct status		*sc_st;
	struct bufferevent	*sc_bev;
	struct event		*sc_deadline;	/* for the request head */
	size_t			 sc_scanned;	/* head bytes searched so far */
	LIST_ENTRY(sconn)	 sc_entry;
};

struct status {
	struct daemon		*st_d;
	int			 st_fd;
	struct event		*st_accept;
	struct event		*st_retry;	/* accept again after EMFILE */
	LIST_HEAD(, sconn)	 st_conns;
	int			 st_nconns;
	int			 st_full;	/* warned about the limit */
	time_t			 st_start;
};

/* Append s as a JSON string, escaped by log.c's encoder (bytes that are
 * not UTF-8 become U+FFFD, so the document is always valid JSON). */
static void
json_str(struct evbuffer *b, const char *s)
{
	char chunk[256];
	size_t n, k, used;

	evbuffer_add(b, "\"", 1);
	for (n = s != NULL ? strlen(s) : 0; n > 0; s += k, n -= k) {
		k = log_escape(LOG_FORMAT_JSON, s, n, chunk, sizeof(chunk),
		    &used);
		evbuffer_add(b, chunk, used);
	}
	evbuffer_add(b, "\"", 1);
}

static void
iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t == 0) {
		buf[0] = '\0';
		return;
	}
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reasons the process is not healthy, or "" when it is. */
static void
health(struct status *st, char *buf, size_t len)
{
	struct daemon *d = st->st_d;
	time_t now = time(NULL), na;
	size_t i, off = 0;
	int n;

	buf[0] = '\0';
	if (d->d_stopping)
		off += (size_t)snprintf(buf + off, len - off, "shutting down\n");
	for (i = 0; i < d->d_routes.rs_n && off < len; i++) {
		struct route_rt *rt = d->d_routes.rs_v[i];
		struct certset *cs = certsrc_current(rt->rt_certs);

		na = certset_not_after(cs);
		if (na != 0 && na < now) {
			n = snprintf(buf + off, len - off, "route %s: "
			    "certificate %s expired\n", rt->rt_conf->name,
			    rt->rt_conf->sec.ssl_cert);
			off += n > 0 ? (size_t)n : 0;
		}
		certset_release(cs);
	}
}

#define M_HEAD(b, name, type, help) \
	evbuffer_add_printf((b), "# HELP %s %s\n# TYPE %s %s\n", (name), \
	    (help), (name), (type))

#define OFF(f)	offsetof(struct route_stats, f)
#define LD(x)	((unsigned long long)atomic_load(&(x)))

/* A label value's room: a route name or a path, escaped. */
#define LABEL_MAX	(3 * 1024)

/* The per-route counters of struct route_stats, in /metrics order. */
static const struct family {
	const char	*f_name;
	const char	*f_type;
	const char	*f_help;
	const char	*f_label;	/* NULL: one sample per route */
	const char	*f_val[4];	/* its values, NULL-terminated */
	size_t		 f_off[4];	/* their counters in route_stats */
} families[] = {
	{ "dmtls_connections_total", "counter", "Connections ended, by "
	    "result.", "result", { "allowed", "denied", "failed" },
	    { OFF(rs_allowed), OFF(rs_denied), OFF(rs_failed) } },
	{ "dmtls_active_connections", "gauge", "Connections open now.",
	    NULL, { NULL }, { OFF(rs_active) } },
	{ "dmtls_denials_total", "counter", "Peers refused by the identity "
	    "policy or revocation (ssl-crl).", "reason",
	    { "identity_not_allowed", "revoked", "crl_expired", "crl_missing" },
	    { OFF(rs_deny_policy), OFF(rs_deny_revoked),
	    OFF(rs_deny_crl_expired), OFF(rs_deny_crl_missing) } },
	{ "dmtls_handshake_failures_total", "counter", "TLS handshakes that "
	    "failed, by reason.", "reason", { "verify", "no_client_cert",
	    "timeout", "other" }, { OFF(rs_fail_verify), OFF(rs_fail_nocert),
	    OFF(rs_fail_timeout), OFF(rs_fail_other) } },
	{ "dmtls_connect_failures_total", "counter", "Connections to the "
	    "target that failed or timed out.", NULL, { NULL },
	    { OFF(rs_fail_connect) } },
	{ "dmtls_bytes_total", "counter", "Bytes relayed: in = from the "
	    "accepted side, out = to it.", "direction", { "in", "out" },
	    { OFF(rs_bytes_in), OFF(rs_bytes_out) } },
};

/* s as the inside of a Prometheus label value, in buf (cut if need be). */
static const char *
label(const char *s, char *buf, size_t len)
{
	size_t used;

	(void)log_escape(LOG_FORMAT_PROM, s, strlen(s), buf, len - 1, &used);
	buf[used] = '\0';
	return (buf);
}

/* One sample of family f for route stats rs: its k-th counter. */
static void
family_sample(struct evbuffer *b, const struct family *f, int k,
    const char *route, const struct route_stats *rs)
{
	const char *p = (const char *)rs + f->f_off[k];

	if (f->f_off[k] == OFF(rs_active))	/* the one signed gauge */
		evbuffer_add_printf(b, "%s{route=\"%s\"} %ld\n", f->f_name,
		    route, atomic_load((const atomic_long *)(const void *)p));
	else if (f->f_label == NULL)
		evbuffer_add_printf(b, "%s{route=\"%s\"} %llu\n", f->f_name,
		    route, LD(*(const atomic_uint_least64_t *)(const void *)p));
	else
		evbuffer_add_printf(b, "%s{route=\"%s\",%s=\"%s\"} %llu\n",
		    f->f_name, route, f->f_label, f->f_val[k],
		    LD(*(const atomic_uint_least64_t *)(const void *)p));
}

/* The certificate families: sets built and broken, the not-after. */
static void
metrics_certs(const struct routeset *set, struct evbuffer *b)
{
	struct route_rt *rt;
	struct certset *cs;
	char name[LABEL_MAX], file[LABEL_MAX];
	uint64_t ok, err;
	size_t i;

	M_HEAD(b, "dmtls_cert_reloads_total", "counter",
	    "Certificate sets built (ok) and broken states seen (error) "
	    "since the route was (re)loaded.");
	for (i = 0; i < set->rs_n; i++) {
		rt = set->rs_v[i];
		certsrc_stats(rt->rt_certs, &ok, &err);
		label(rt->rt_conf->name, name, sizeof(name));
		evbuffer_add_printf(b, "dmtls_cert_reloads_total{route=\"%s\","
		    "result=\"ok\"} %llu\n", name, (unsigned long long)ok);
		evbuffer_add_printf(b, "dmtls_cert_reloads_total{route=\"%s\","
		    "result=\"error\"} %llu\n", name, (unsigned long long)err);
	}
	M_HEAD(b, "dmtls_cert_not_after_seconds", "gauge",
	    "Not-after of the certificate in use, as a Unix time.");
	for (i = 0; i < set->rs_n; i++) {
		rt = set->rs_v[i];
		cs = certsrc_current(rt->rt_certs);
		if (certset_not_after(cs) != 0)
			evbuffer_add_printf(b, "dmtls_cert_not_after_seconds{"
			    "route=\"%s\",file=\"%s\"} %lld\n",
			    label(rt->rt_conf->name, name, sizeof(name)),
			    label(rt->rt_conf->sec.ssl_cert, file,
			    sizeof(file)), (long long)certset_not_after(cs));
		certset_release(cs);
	}
	M_HEAD(b, "dmtls_crl_next_update_seconds", "gauge",
	    "nextUpdate of each ssl-crl file (its earliest CRL), as a Unix "
	    "time.");
	for (i = 0; i < set->rs_n; i++) {
		const struct strlist *files;
		const struct crl_info *ci;
		time_t next;
		size_t f;
		int k, n;

		rt = set->rs_v[i];
		files = &rt->rt_conf->sec.ssl_crl;
		cs = certsrc_current(rt->rt_certs);
		n = certset_crls(cs, &ci);
		for (f = 0; f < files->sl_n; f++) {
			next = 0;
			for (k = 0; k < n; k++)
				if ((size_t)ci[k].ci_file == f &&
				    ci[k].ci_next_update != 0 && (next == 0 ||
				    ci[k].ci_next_update < next))
					next = ci[k].ci_next_update;
			if (next != 0)
				evbuffer_add_printf(b, "dmtls_crl_next_update_"
				    "seconds{route=\"%s\",file=\"%s\"} %lld\n",
				    label(rt->rt_conf->name, name, sizeof(name)),
				    label(files->sl_v[f], file, sizeof(file)),
				    (long long)next);
		}
		certset_release(cs);
	}
}

/* The connection duration histogram. */
static void
metrics_durations(const struct routeset *set, struct evbuffer *b)
{
	const struct route_stats *rs;
	const char *name;
	char nbuf[LABEL_MAX];
	unsigned long long cum;
	size_t i;
	int k;

	M_HEAD(b, "dmtls_connection_duration_seconds", "histogram",
	    "How long connections lasted.");
	for (i = 0; i < set->rs_n; i++) {
		rs = set->rs_v[i]->rt_stats;
		name = label(set->rs_v[i]->rt_conf->name, nbuf, sizeof(nbuf));
		cum = 0;
		for (k = 0; k < DUR_BUCKETS; k++) {
			cum += LD(rs->rs_dur[k]);
			evbuffer_add_printf(b, "dmtls_connection_duration_"
			    "seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
			    name, route_dur_bounds[k], cum);
		}
		cum += LD(rs->rs_dur[DUR_BUCKETS]);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_"
		    "bucket{route=\"%s\",le=\"+Inf\"} %llu\n", name, cum);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_sum"
		    "{route=\"%s\"} %.3f\n", name,
		    (double)LD(rs->rs_dur_sum_ms) / 1000.0);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_"
		    "count{route=\"%s\"} %llu\n", name, cum);
	}
}

/* /metrics: every family, each with a sample per route of d_routes. */
static void
metrics(struct status *st, struct evbuffer *b)
{
	const struct routeset *set = &st->st_d->d_routes;
	const struct family *f;
	char name[LABEL_MAX];
	size_t i;
	int k;

	for (f = families; f < families + sizeof(families) /
	    sizeof(families[0]); f++) {
		M_HEAD(b, f->f_name, f->f_type, f->f_help);
		for (i = 0; i < set->rs_n; i++)
			for (k = 0; k == 0 || (f->f_label != NULL &&
			    k < 4 && f->f_val[k] != NULL); k++)
				family_sample(b, f, k, label(
				    set->rs_v[i]->rt_conf->name, name,
				    sizeof(name)), set->rs_v[i]->rt_stats);
	}
	metrics_certs(set, b);
	metrics_durations(set, b);
}

#undef OFF
#undef LD

/* ,"ssl-crl":[...],"crls":[...]: the route's CRL files and their CRLs. */
static void
status_crls(struct evbuffer *b, const struct route_conf *rc,
    const struct certset *cs)
{
	const struct crl_info *ci;
	char t[32];
	size_t f;
	int k, n = certset_crls(cs, &ci);

	evbuffer_add_printf(b, ",\"ssl-crl\":[");
	for (f = 0; f < rc->sec.ssl_crl.sl_n; f++) {
		evbuffer_add_printf(b, "%s", f ? "," : "");
		json_str(b, rc->sec.ssl_crl.sl_v[f]);
	}
	evbuffer_add_printf(b, "]},\"crls\":[");
	for (k = 0; k < n; k++) {
		evbuffer_add_printf(b, "%s{\"file\":", k ? "," : "");
		json_str(b, rc->sec.ssl_crl.sl_v[ci[k].ci_file]);
		evbuffer_add_printf(b, ",\"issuer\":");
		json_str(b, ci[k].ci_issuer);
		iso_time(ci[k].ci_this_update, t, sizeof(t));
		evbuffer_add_printf(b, ",\"this_update\":\"%s\"", t);
		iso_time(ci[k].ci_next_update, t, sizeof(t));
		evbuffer_add_printf(b, ",\"next_update\":\"%s\",\"entries\":%d,"
		    "\"expired\":%s}", t, ci[k].ci_entries,
		    ci[k].ci_next_update != 0 && ci[k].ci_next_update <=
		    time(NULL) ? "true" : "false");
	}
	evbuffer_add_printf(b, "]");
}

static void
status_json(struct status *st, struct evbuffer *b)
{
	struct daemon *d = st->st_d;
	char t[32], rules[512], err[1024];
	size_t i;

	iso_time(d->d_reload_time, t, sizeof(t));
	evbuffer_add_printf(b, "{\"version\":\"%s\",\"pid\":%d,"
	    "\"uptime_seconds\":%lld,\"config\":", PACKAGE_VERSION,
	    (int)getpid(), (long long)(time(NULL) - st->st_start));
	if (d->d_config)
		json_str(b, d->d_config);
	else
		evbuffer_add_printf(b, "null");
	evbuffer_add_printf(b, ",\"reload\":{\"ok\":%s,\"count\":%u,"
	    "\"time\":\"%s\",\"error\":", d->d_reload_ok ? "true" : "false",
	    d->d_reloads, t);
	json_str(b, d->d_reload_err);
	evbuffer_add_printf(b, "},\"sandbox\":{\"no_new_privs\":%s,"
	    "\"landlock\":", d->d_sb.sb_nnp ? "true" : "false");
	if (d->d_sb.sb_landlock > 0)
		evbuffer_add_printf(b, "%d", d->d_sb.sb_landlock);
	else
		evbuffer_add_printf(b, "\"%s\"", d->d_g.sandbox ?
		    "unavailable" : "off");
	evbuffer_add_printf(b, ",\"seccomp\":%s,\"sanitizers\":%s,"
	    "\"user\":", d->d_sb.sb_seccomp ? "true" : "false",
	    sandbox_sanitizers() ? "true" : "false");
	if (d->d_privs.pv_dropped) {
		json_str(b, d->d_privs.pv_user);
		evbuffer_add_printf(b, ",\"group\":");
		json_str(b, d->d_privs.pv_group);
		evbuffer_add_printf(b, ",\"uid\":%lu,\"gid\":%lu",
		    (unsigned long)d->d_privs.pv_uid,
		    (unsigned long)d->d_privs.pv_gid);
	} else
		evbuffer_add_printf(b, "null");
	evbuffer_add_printf(b, "},\"routes\":[");
	for (i = 0; i < d->d_routes.rs_n; i++) {
		struct route_rt *rt = d->d_routes.rs_v[i];
		struct route_conf *rc = rt->rt_conf;
		struct certset *cs = certsrc_current(rt->rt_certs);
		time_t when;
		int ok;

		evbuffer_add_printf(b, "%s{\"name\":", i ? "," : "");
		json_str(b, rc->name);
		evbuffer_add_printf(b, ",\"kind\":\"%s\",\"listen\":",
		    route_kind_name(rc->kind));
		json_str(b, rc->listen);
		evbuffer_add_printf(b, ",\"target\":");
		json_str(b, rc->target);
		policy_describe(&rt->rt_rules, rules, sizeof(rules));
		evbuffer_add_printf(b, ",\"identity\":");
		json_str(b, rules);
		evbuffer_add_printf(b, ",\"active\":%ld,\"certificate\":{"
		    "\"subject\":", atomic_load(&rt->rt_stats->rs_active));
		json_str(b, certset_subject(cs));
		evbuffer_add_printf(b, ",\"sans\":");
		json_str(b, certset_sans(cs));
		iso_time(certset_not_after(cs), t, sizeof(t));
		evbuffer_add_printf(b, ",\"not_after\":\"%s\",\"digest\":\"%s\","
		    "\"files\":{\"ssl-ca\":", t, certset_digest(cs));
		json_str(b, rc->sec.ssl_ca);
		evbuffer_add_printf(b, ",\"ssl-cert\":");
		json_str(b, rc->sec.ssl_cert);
		evbuffer_add_printf(b, ",\"ssl-key\":");
		json_str(b, rc->sec.ssl_key);
		status_crls(b, rc, cs);
		certsrc_last(rt->rt_certs, &when, &ok, err, sizeof(err));
		iso_time(when, t, sizeof(t));
		evbuffer_add_printf(b, ",\"last_reload\":{\"ok\":%s,"
		    "\"time\":\"%s\",\"error\":", ok ? "true" : "false", t);
		json_str(b, err);
		evbuffer_add_printf(b, "}}}");
		certset_release(cs);
	}
	evbuffer_add_printf(b, "]}\n");
}

/* ---- HTTP: one request per connection ------------------------------ */

static const struct timeval idle_tv = { STATUS_IDLE_SEC, 0 };

static void
sconn_free(struct sconn *sc)
{
	LIST_REMOVE(sc, sc_entry);
	sc->sc_st->st_nconns--;
	if (sc->sc_deadline != NULL)
		event_free(sc->sc_deadline);
	bufferevent_free(sc->sc_bev);	/* closes the socket */
	free(sc);
}

static void
sent_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	sconn_free(arg);	/* the whole reply is in the kernel's hands */
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	sconn_free(arg);	/* EOF, error or a stalled reader */
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sconn_free(arg);	/* no whole request head in time */
}

/*
 * Queue the reply (head, and body unless head_only) and close once it is
 * sent.  body may be NULL; extra is "" or more header lines, each ending
 * in CRLF.
 */
static void
reply(struct sconn *sc, int code, const char *reason, const char *ctype,
    const char *extra, struct evbuffer *body, int head_only)
{
	struct evbuffer *out = bufferevent_get_output(sc->sc_bev);
	size_t len = body != NULL ? evbuffer_get_length(body) : 0;

	if (evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	    "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", code,
	    reason, ctype, len, extra) < 0 || (body != NULL && !head_only &&
	    evbuffer_add_buffer(out, body) != 0)) {
		sconn_free(sc);
		return;
	}
	bufferevent_setcb(sc->sc_bev, NULL, sent_cb, event_cb, sc);
	bufferevent_set_timeouts(sc->sc_bev, NULL, &idle_tv);
	bufferevent_enable(sc->sc_bev, EV_WRITE);
}

/* A reply with a one-line text body. */
static void
reply_text(struct sconn *sc, int code, const char *reason,
    const char *extra, const char *text)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL || evbuffer_add(b, text, strlen(text)) != 0) {
		if (b != NULL)
			evbuffer_free(b);
		sconn_free(sc);
		return;
	}
	reply(sc, code, reason, "text/plain", extra, b, 0);
	evbuffer_free(b);
}

/*
 * Offset just past the empty line that ends the head in p[0..n), or 0;
 * p[0..from) was searched before (so a head that trickles in byte by byte
 * costs linear time, not quadratic).
 */
static size_t
head_end(const char *p, size_t n, size_t from)
{
	size_t i;

	for (i = from > 2 ? from - 2 : 0; i + 1 < n; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return (i + 2);
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
			return (i + 3);
	}
	return (0);
}

/* Answer the request whose head is p[0..n): only its request line counts. */
static void
serve(struct sconn *sc, const char *p, size_t n)
{
	struct status *st = sc->sc_st;
	char line[STATUS_HEAD_MAX + 1], why[1024], *method, *target, *version;
	struct evbuffer *b;
	const char *eol;
	size_t len;
	int head_only;

	eol = memchr(p, '\n', n);	/* there is one: head_end found it */
	len = (size_t)(eol - p);
	if (len > 0 && p[len - 1] == '\r')
		len--;
	memcpy(line, p, len);
	line[len] = '\0';
	method = line;
	if ((target = strchr(method, ' ')) == NULL ||
	    (*target++ = '\0', version = strchr(target, ' ')) == NULL ||
	    (*version++ = '\0', strchr(version, ' ') != NULL) ||
	    *method == '\0' || *target == '\0' ||
	    (strcmp(version, "HTTP/1.1") != 0 &&
	    strcmp(version, "HTTP/1.0") != 0)) {
		reply_text(sc, 400, "Bad Request", "", "bad request: send "
		    "GET /healthz HTTP/1.1\n");
		return;
	}
	head_only = strcmp(method, "HEAD") == 0;
	if (!head_only && strcmp(method, "GET") != 0) {
		reply_text(sc, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
		    "method not allowed: use GET or HEAD\n");
		return;
	}
	target[strcspn(target, "?#")] = '\0';
	if (strcmp(target, "/healthz") != 0 &&
	    strcmp(target, "/metrics") != 0 && strcmp(target, "/status") != 0) {
		reply_text(sc, 404, "Not Found", "", "not found: try /healthz, "
		    "/metrics or /status\n");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		sconn_free(sc);
		return;
	}
	if (strcmp(target, "/healthz") == 0) {
		health(st, why, sizeof(why));
		evbuffer_add_printf(b, "%s", why[0] == '\0' ? "ok\n" : why);
		reply(sc, why[0] == '\0' ? 200 : 503, why[0] == '\0' ? "OK" :
		    "Service Unavailable", "text/plain", "", b, head_only);
	} else if (strcmp(target, "/metrics") == 0) {
		metrics(st, b);
		reply(sc, 200, "OK", "text/plain; version=0.0.4", "", b,
		    head_only);
	} else {
		status_json(st, b);
		reply(sc, 200, "OK", "application/json", "", b, head_only);
	}
	evbuffer_free(b);
}

/*
 * Wait for a whole head.  The read watermark stops reading at one byte
 * past STATUS_HEAD_MAX, so the input never holds more than that.
 */
static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct sconn *sc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in), end;
	const char *p = (const char *)evbuffer_pullup(in, -1);

	end = p != NULL ? head_end(p, n, sc->sc_scanned) : 0;
	sc->sc_scanned = n;
	if (end == 0 && n <= STATUS_HEAD_MAX)
		return;
	/* Never read again: what follows the head stays in the socket. */
	bufferevent_disable(bev, EV_READ);
	event_free(sc->sc_deadline);
	sc->sc_deadline = NULL;
	if (end == 0 || end > STATUS_HEAD_MAX)
		reply_text(sc, 431, "Request Header Fields Too Large", "",
		    "request head over 8192 bytes\n");
	else
		serve(sc, p, end);
	/* sc may be gone now; the head stays in its input until it goes. */
}

/* Best effort: tell a client over the limit why, then close. */
static void
refuse(struct status *st, int fd)
{
#define BUSY "too many status connections\n"
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: text/plain\r\nContent-Length: 28\r\n"
	    "Connection: close\r\n\r\n" BUSY;
	_Static_assert(sizeof(BUSY) - 1 == 28, "Content-Length of BUSY");
#undef BUSY
	ssize_t w;

	if (!st->st_full)
		log_msg(LOG_WARN, "status_full", "status listener: %d "
		    "connections open, refusing more until one closes",
		    STATUS_MAX_CONNS);
	st->st_full = 1;
	w = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	close(fd);
}

static int
sconn_new(struct status *st, int fd)
{
	struct event_base *base = st->st_d->d_base;
	struct timeval tv = idle_tv;
	struct sconn *sc;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		goto err0;
	if ((sc->sc_bev = bufferevent_socket_new(base, fd,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL)
		goto err1;
	if ((sc->sc_deadline = evtimer_new(base, deadline_cb, sc)) == NULL)
		goto err2;
	sc->sc_st = st;
	LIST_INSERT_HEAD(&st->st_conns, sc, sc_entry);
	st->st_nconns++;
	bufferevent_setcb(sc->sc_bev, read_cb, NULL, event_cb, sc);
	bufferevent_setwatermark(sc->sc_bev, EV_READ, 0, STATUS_HEAD_MAX + 1);
	evtimer_add(sc->sc_deadline, &tv);
	if (bufferevent_enable(sc->sc_bev, EV_READ) != 0) {
		sconn_free(sc);
		return (-1);
	}
	return (0);
err2:
	bufferevent_free(sc->sc_bev);	/* closes fd */
	free(sc);
	return (-1);
err1:
	free(sc);
err0:
	close(fd);
	return (-1);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct status *st = arg;

	(void)fd;
	(void)what;
	event_add(st->st_accept, NULL);
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct status *st = arg;
	struct timeval tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
	int fd, n;

	(void)what;
	for (n = 0; n < 16; n++) {
		fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			/* Out of descriptors: the listener stays readable,
			 * so pause instead of spinning. */
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				event_del(st->st_accept);
				evtimer_add(st->st_retry, &tv);
			}
			return;
		}
		if (st->st_nconns >= STATUS_MAX_CONNS) {
			refuse(st, fd);
			continue;
		}
		st->st_full = 0;
		sconn_new(st, fd);
	}
}

struct status *
status_start(struct daemon *d, const char *addr, char *err, size_t errlen)
{
	struct status *st;
	struct addr a;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	st->st_d = d;
	st->st_start = time(NULL);
	st->st_fd = -1;
	LIST_INIT(&st->st_conns);
	if (addr_parse(addr, &a, err, errlen) == -1 ||
	    (st->st_fd = addr_listen(&a, 0, err, errlen)) == -1)
		goto fail;
	if ((st->st_accept = event_new(d->d_base, st->st_fd,
	    EV_READ | EV_PERSIST, accept_cb, st)) == NULL ||
	    (st->st_retry = evtimer_new(d->d_base, retry_cb, st)) == NULL ||
	    event_add(st->st_accept, NULL) != 0) {
		snprintf(err, errlen, "cannot start the HTTP server");
		goto fail;
	}
	return (st);
fail:
	status_free(st);
	return (NULL);
}

void
status_free(struct status *st)
{
	if (st == NULL)
		return;
	while (!LIST_EMPTY(&st->st_conns))
		sconn_free(LIST_FIRST(&st->st_conns));
	if (st->st_accept != NULL)
		event_free(st->st_accept);
	if (st->st_retry != NULL)
		event_free(st->st_retry);
	if (st->st_fd != -1)
		close(st->st_fd);
	free(st);
}
