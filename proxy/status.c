/*
 * status.c: GET /healthz, /metrics and /status on the status listener.
 * Runs on the main thread, which owns the current generation of routes;
 * counters are atomics shared with the workers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config.h"

#include "../policy/certset.h"
#include "../policy/policy.h"
#include "addr.h"
#include "log.h"
#include "route.h"
#include "status.h"
#include "worker.h"

struct status {
	struct daemon	*st_d;
	struct evhttp	*st_http;
	int		 st_fd;
	time_t		 st_start;
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

static void
metrics(struct status *st, struct evbuffer *b)
{
	struct daemon *d = st->st_d;
	struct routeset *set = &d->d_routes;
	size_t i;
	int k;

#define EACH for (i = 0; i < set->rs_n; i++)
#define RT (set->rs_v[i])
#define ST (set->rs_v[i]->rt_stats)
#define LD(x) ((unsigned long long)atomic_load(&(x)))
	M_HEAD(b, "dmtls_connections_total", "counter",
	    "Connections ended, by result.");
	EACH {
		evbuffer_add_printf(b, "dmtls_connections_total{route=\"%s\","
		    "result=\"allowed\"} %llu\n", RT->rt_conf->name,
		    LD(ST->rs_allowed));
		evbuffer_add_printf(b, "dmtls_connections_total{route=\"%s\","
		    "result=\"denied\"} %llu\n", RT->rt_conf->name,
		    LD(ST->rs_denied));
		evbuffer_add_printf(b, "dmtls_connections_total{route=\"%s\","
		    "result=\"failed\"} %llu\n", RT->rt_conf->name,
		    LD(ST->rs_failed));
	}
	M_HEAD(b, "dmtls_active_connections", "gauge",
	    "Connections open now.");
	EACH evbuffer_add_printf(b, "dmtls_active_connections{route=\"%s\"} "
	    "%ld\n", RT->rt_conf->name, atomic_load(&ST->rs_active));
	M_HEAD(b, "dmtls_denials_total", "counter",
	    "Peers refused by the identity policy.");
	EACH evbuffer_add_printf(b, "dmtls_denials_total{route=\"%s\","
	    "reason=\"identity_not_allowed\"} %llu\n", RT->rt_conf->name,
	    LD(ST->rs_deny_policy));
	M_HEAD(b, "dmtls_handshake_failures_total", "counter",
	    "TLS handshakes that failed, by reason.");
	EACH {
		static const char *why[] = { "verify", "no_client_cert",
		    "timeout", "other" };
		unsigned long long v[4] = { LD(ST->rs_fail_verify),
		    LD(ST->rs_fail_nocert), LD(ST->rs_fail_timeout),
		    LD(ST->rs_fail_other) };
		for (k = 0; k < 4; k++)
			evbuffer_add_printf(b, "dmtls_handshake_failures_total"
			    "{route=\"%s\",reason=\"%s\"} %llu\n",
			    RT->rt_conf->name, why[k], v[k]);
	}
	M_HEAD(b, "dmtls_connect_failures_total", "counter",
	    "Connections to the target that failed or timed out.");
	EACH evbuffer_add_printf(b, "dmtls_connect_failures_total{route="
	    "\"%s\"} %llu\n", RT->rt_conf->name, LD(ST->rs_fail_connect));
	M_HEAD(b, "dmtls_bytes_total", "counter",
	    "Bytes relayed: in = from the accepted side, out = to it.");
	EACH {
		evbuffer_add_printf(b, "dmtls_bytes_total{route=\"%s\","
		    "direction=\"in\"} %llu\n", RT->rt_conf->name,
		    LD(ST->rs_bytes_in));
		evbuffer_add_printf(b, "dmtls_bytes_total{route=\"%s\","
		    "direction=\"out\"} %llu\n", RT->rt_conf->name,
		    LD(ST->rs_bytes_out));
	}
	M_HEAD(b, "dmtls_cert_reloads_total", "counter",
	    "Certificate sets built (ok) and broken states seen (error) "
	    "since the route was (re)loaded.");
	EACH {
		uint64_t ok, err;
		certsrc_stats(RT->rt_certs, &ok, &err);
		evbuffer_add_printf(b, "dmtls_cert_reloads_total{route=\"%s\","
		    "result=\"ok\"} %llu\n", RT->rt_conf->name,
		    (unsigned long long)ok);
		evbuffer_add_printf(b, "dmtls_cert_reloads_total{route=\"%s\","
		    "result=\"error\"} %llu\n", RT->rt_conf->name,
		    (unsigned long long)err);
	}
	M_HEAD(b, "dmtls_cert_not_after_seconds", "gauge",
	    "Not-after of the certificate in use, as a Unix time.");
	EACH {
		struct certset *cs = certsrc_current(RT->rt_certs);
		if (certset_not_after(cs) != 0)
			evbuffer_add_printf(b, "dmtls_cert_not_after_seconds{"
			    "route=\"%s\",file=\"%s\"} %lld\n",
			    RT->rt_conf->name, RT->rt_conf->sec.ssl_cert,
			    (long long)certset_not_after(cs));
		certset_release(cs);
	}
	M_HEAD(b, "dmtls_connection_duration_seconds", "histogram",
	    "How long connections lasted.");
	EACH {
		unsigned long long cum = 0;
		for (k = 0; k < DUR_BUCKETS; k++) {
			cum += LD(ST->rs_dur[k]);
			evbuffer_add_printf(b, "dmtls_connection_duration_"
			    "seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
			    RT->rt_conf->name, route_dur_bounds[k], cum);
		}
		cum += LD(ST->rs_dur[DUR_BUCKETS]);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_"
		    "bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
		    RT->rt_conf->name, cum);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_sum"
		    "{route=\"%s\"} %.3f\n", RT->rt_conf->name,
		    (double)LD(ST->rs_dur_sum_ms) / 1000.0);
		evbuffer_add_printf(b, "dmtls_connection_duration_seconds_"
		    "count{route=\"%s\"} %llu\n", RT->rt_conf->name, cum);
	}
#undef EACH
#undef RT
#undef ST
#undef LD
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
		policy_describe(&rc->sec, rules, sizeof(rules));
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
		certsrc_last(rt->rt_certs, &when, &ok, err, sizeof(err));
		iso_time(when, t, sizeof(t));
		evbuffer_add_printf(b, "},\"last_reload\":{\"ok\":%s,"
		    "\"time\":\"%s\",\"error\":", ok ? "true" : "false", t);
		json_str(b, err);
		evbuffer_add_printf(b, "}}}");
		certset_release(cs);
	}
	evbuffer_add_printf(b, "]}\n");
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
	struct status *st = arg;
	struct evbuffer *b = evbuffer_new();
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(
	    req));
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char why[1024];

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (path == NULL || (strcmp(path, "/healthz") != 0 &&
	    strcmp(path, "/metrics") != 0 && strcmp(path, "/status") != 0)) {
		evhttp_add_header(h, "Content-Type", "text/plain");
		evbuffer_add_printf(b, "not found: try /healthz, /metrics or "
		    "/status\n");
		evhttp_send_reply(req, HTTP_NOTFOUND, "Not Found", b);
		goto out;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(h, "Allow", "GET, HEAD");
		evhttp_add_header(h, "Content-Type", "text/plain");
		evbuffer_add_printf(b, "method not allowed\n");
		evhttp_send_reply(req, 405, "Method Not Allowed", b);
		goto out;
	}
	if (strcmp(path, "/healthz") == 0) {
		evhttp_add_header(h, "Content-Type", "text/plain");
		health(st, why, sizeof(why));
		if (why[0] == '\0') {
			evbuffer_add_printf(b, "ok\n");
			evhttp_send_reply(req, HTTP_OK, "OK", b);
		} else {
			evbuffer_add_printf(b, "%s", why);
			evhttp_send_reply(req, 503, "Service Unavailable", b);
		}
	} else if (strcmp(path, "/metrics") == 0) {
		evhttp_add_header(h, "Content-Type",
		    "text/plain; version=0.0.4");
		metrics(st, b);
		evhttp_send_reply(req, HTTP_OK, "OK", b);
	} else {
		evhttp_add_header(h, "Content-Type", "application/json");
		status_json(st, b);
		evhttp_send_reply(req, HTTP_OK, "OK", b);
	}
out:
	evbuffer_free(b);
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
	if (addr_parse(addr, &a, err, errlen) == -1 ||
	    (st->st_fd = addr_listen(&a, 0, err, errlen)) == -1)
		goto fail;
	if ((st->st_http = evhttp_new(d->d_base)) == NULL ||
	    evhttp_accept_socket(st->st_http, st->st_fd) != 0) {
		snprintf(err, errlen, "cannot start the HTTP server");
		goto fail;
	}
	evhttp_set_allowed_methods(st->st_http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(st->st_http, request_cb, st);
	evhttp_set_timeout(st->st_http, 10);
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
	if (st->st_http != NULL)
		evhttp_free(st->st_http);	/* closes st_fd too */
	else if (st->st_fd != -1)
		close(st->st_fd);
	free(st);
}
