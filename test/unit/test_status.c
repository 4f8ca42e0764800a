/*
 * test_status: the status listener's renderer and its HTTP handling
 * (proxy/status.c, DESIGN 7), through its public interface: a daemon whose
 * routes carry known counters, status_start() on a unix socket, requests
 * from this thread while it runs the main event loop.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>

#include "../../policy/certset.h"
#include "../../proxy/route.h"
#include "../../proxy/status.h"
#include "../../proxy/daemon.h"
#include "unitfiles.h"

static struct daemon d;
static struct status *st;
static char sock_path[100];	/* fits sun_path */

/* A server route NAME presenting leaf CERT (made by uf_leaf). */
static struct route_rt *
route(const char *name, const char *cert)
{
	struct route_conf *rc = malloc(sizeof(*rc));
	struct route_rt *rt;
	char err[512], buf[128];

	assert_non_null(rc);
	route_conf_init(rc, ROUTE_SERVER);
	rc->name = strdup(name);
	rc->listen = strdup("127.0.0.1:1");
	rc->target = strdup("127.0.0.1:2");
	rc->sec.ssl_ca = strdup(uf_path("ca.pem"));
	snprintf(buf, sizeof(buf), "%s.pem", cert);
	rc->sec.ssl_cert = strdup(uf_path(buf));
	snprintf(buf, sizeof(buf), "%s-key.pem", cert);
	rc->sec.ssl_key = strdup(uf_path(buf));
	strlist_add(&rc->sec.allowed_cn, "dm");
	rt = route_new(rc, err, sizeof(err));
	if (rt == NULL)
		fail_msg("route_new: %s", err);
	return (rt);
}

/* Run the main loop until fd has something to read or is closed. */
static void
pump(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int i;

	for (i = 0; i < 5000; i++) {
		event_base_loop(d.d_base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 1) == 1)
			return;
	}
	fail_msg("no reply within 5 s");
}

static int
connect_status(void)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return (fd);
}

/* Read the whole reply on fd (until the listener closes it), close fd;
 * the reply is in a static buffer. */
static const char *
read_reply(int fd)
{
	static char reply[1 << 17];
	size_t got = 0;
	ssize_t n;

	for (;;) {
		pump(fd);
		n = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	reply[got] = '\0';
	return (reply);
}

/* Send raw (len bytes) on a new connection; the whole reply. */
static const char *
request_raw(const char *raw, size_t len)
{
	int fd = connect_status();

	assert_int_equal(write(fd, raw, len), (ssize_t)len);
	return (read_reply(fd));
}

static const char *
request(const char *line)
{
	char raw[1024];

	snprintf(raw, sizeof(raw), "%s\r\nHost: x\r\n\r\n", line);
	return (request_raw(raw, strlen(raw)));
}

/* The body of an HTTP reply (after the blank line). */
static const char *
body(const char *reply)
{
	const char *b = strstr(reply, "\r\n\r\n");

	assert_non_null(b);
	return (b + 4);
}

static void
has(const char *text, const char *want)
{
	if (strstr(text, want) == NULL)
		fail_msg("%s\n--- lacks: %s", text, want);
}

static int
setup(void **state)
{
	struct route_rt **v;
	char addr[sizeof(sock_path) + 8], err[256];

	(void)state;
	if (uf_setup() == -1)
		return (-1);
	uf_leaf("dm", "dm", 30);
	uf_leaf("old", "old", -1);
	memset(&d, 0, sizeof(d));
	d.d_base = event_base_new();
	d.d_reload_ok = 1;
	v = calloc(2, sizeof(*v));
	v[0] = route("api", "dm");
	v[1] = route("q\"b\\c", "dm");
	d.d_routes.rs_v = v;
	d.d_routes.rs_n = 2;
	snprintf(sock_path, sizeof(sock_path), "%.80s/status.sock", uf_dir);
	snprintf(addr, sizeof(addr), "unix:%s", sock_path);
	st = status_start(&d, addr, err, sizeof(err));
	if (st == NULL) {
		fprintf(stderr, "status_start: %s\n", err);
		return (-1);
	}
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	status_free(st);
	routeset_release(&d.d_routes);
	event_base_free(d.d_base);
	uf_teardown();
	return (0);
}

static void
test_metrics_values(void **state)
{
	struct route_stats *s = d.d_routes.rs_v[0]->rt_stats;
	struct certset *cs = certsrc_current(d.d_routes.rs_v[0]->rt_certs);
	const char *r, *b;
	char want[512];

	(void)state;
	atomic_store(&s->rs_allowed, 3);
	atomic_store(&s->rs_denied, 2);
	atomic_store(&s->rs_failed, 4);
	atomic_store(&s->rs_active, 1);
	atomic_store(&s->rs_deny_policy, 2);
	atomic_store(&s->rs_fail_verify, 1);
	atomic_store(&s->rs_fail_nocert, 2);
	atomic_store(&s->rs_fail_timeout, 3);
	atomic_store(&s->rs_fail_other, 4);
	atomic_store(&s->rs_fail_connect, 5);
	atomic_store(&s->rs_bytes_in, 1000);
	atomic_store(&s->rs_bytes_out, 2000);
	atomic_store(&s->rs_dur[0], 1);
	atomic_store(&s->rs_dur[3], 2);
	atomic_store(&s->rs_dur[DUR_BUCKETS], 4);
	atomic_store(&s->rs_dur_sum_ms, 12345);
	r = request("GET /metrics HTTP/1.1");
	has(r, "HTTP/1.1 200 OK\r\n");
	has(r, "Content-Type: text/plain; version=0.0.4\r\n");
	has(r, "Connection: close\r\n");
	b = body(r);
	has(b, "# HELP dmtls_connections_total ");
	has(b, "# TYPE dmtls_connections_total counter\n"
	    "dmtls_connections_total{route=\"api\",result=\"allowed\"} 3\n"
	    "dmtls_connections_total{route=\"api\",result=\"denied\"} 2\n"
	    "dmtls_connections_total{route=\"api\",result=\"failed\"} 4\n");
	has(b, "# TYPE dmtls_active_connections gauge\n"
	    "dmtls_active_connections{route=\"api\"} 1\n");
	has(b, "dmtls_denials_total{route=\"api\",reason=\"identity_not_allowed\"} 2\n");
	has(b, "# TYPE dmtls_handshake_failures_total counter\n"
	    "dmtls_handshake_failures_total{route=\"api\",reason=\"verify\"} 1\n"
	    "dmtls_handshake_failures_total{route=\"api\",reason=\"no_client_cert\"} 2\n"
	    "dmtls_handshake_failures_total{route=\"api\",reason=\"timeout\"} 3\n"
	    "dmtls_handshake_failures_total{route=\"api\",reason=\"other\"} 4\n");
	has(b, "# TYPE dmtls_connect_failures_total counter\n"
	    "dmtls_connect_failures_total{route=\"api\"} 5\n");
	has(b, "dmtls_bytes_total{route=\"api\",direction=\"in\"} 1000\n"
	    "dmtls_bytes_total{route=\"api\",direction=\"out\"} 2000\n");
	has(b, "dmtls_cert_reloads_total{route=\"api\",result=\"ok\"} 1\n"
	    "dmtls_cert_reloads_total{route=\"api\",result=\"error\"} 0\n");
	snprintf(want, sizeof(want), "dmtls_cert_not_after_seconds{route=\"api\","
	    "file=\"%s\"} %lld\n", uf_path("dm.pem"),
	    (long long)certset_not_after(cs));
	has(b, want);
	/* Buckets are cumulative; +Inf and _count hold every connection. */
	has(b, "# TYPE dmtls_connection_duration_seconds histogram\n");
	has(b, "dmtls_connection_duration_seconds_bucket{route=\"api\",le=\"0.005\"} 1\n");
	has(b, "dmtls_connection_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 7\n"
	    "dmtls_connection_duration_seconds_sum{route=\"api\"} 12.345\n"
	    "dmtls_connection_duration_seconds_count{route=\"api\"} 7\n");
	/* Every family lists every route (label escaping: see
	 * test_metrics_label_values_escaped in test_documented.py). */
	assert_non_null(strstr(strstr(b, "dmtls_connect_failures_total{route=\"api\"}"),
	    "dmtls_connect_failures_total{route=\"q"));
	certset_release(cs);
}

static void
test_histogram_buckets_cumulative(void **state)
{
	const char *b, *p;
	unsigned long long v, last = 0;
	int n = 0;

	(void)state;
	b = body(request("GET /metrics HTTP/1.1"));
	for (p = b; (p = strstr(p, "_bucket{route=\"api\",le=\"")) != NULL; p++) {
		const char *sp = strchr(p, ' ');
		assert_non_null(sp);
		v = strtoull(sp + 1, NULL, 10);
		assert_true(v >= last);
		last = v;
		n++;
	}
	assert_int_equal(n, DUR_BUCKETS + 1);
	assert_int_equal(last, 7);
}

static void
test_healthz(void **state)
{
	const char *r;
	char want[512];

	(void)state;
	r = request("GET /healthz HTTP/1.1");
	has(r, "HTTP/1.1 200 OK\r\n");
	assert_string_equal(body(r), "ok\n");
	d.d_stopping = 1;
	r = request("GET /healthz HTTP/1.0");
	has(r, "HTTP/1.1 503 Service Unavailable\r\n");
	assert_string_equal(body(r), "shutting down\n");
	d.d_stopping = 0;
	/* An expired certificate in use makes the process unhealthy. */
	d.d_routes.rs_v[1] = (route_release(d.d_routes.rs_v[1]), route("old", "old"));
	r = request("GET /healthz?verbose=1 HTTP/1.1");
	has(r, "HTTP/1.1 503 Service Unavailable\r\n");
	snprintf(want, sizeof(want), "route old: certificate %s expired\n",
	    uf_path("old.pem"));
	assert_string_equal(body(r), want);
	d.d_routes.rs_v[1] = (route_release(d.d_routes.rs_v[1]),
	    route("q\"b\\c", "dm"));
}

static void
test_status_json(void **state)
{
	const char *r, *b;
	char want[1024];

	(void)state;
	d.d_config = strdup("/etc/dmtls/dm\xff.conf");
	d.d_reload_ok = 0;
	d.d_reloads = 2;
	snprintf(d.d_reload_err, sizeof(d.d_reload_err), "a.conf:3: bad \"x\"\n");
	r = request("GET /status HTTP/1.1");
	has(r, "Content-Type: application/json\r\n");
	b = body(r);
	assert_true(b[0] == '{');
	has(b, "\"config\":\"/etc/dmtls/dm\\ufffd.conf\"");
	has(b, "\"reload\":{\"ok\":false,\"count\":2,");
	has(b, "\"error\":\"a.conf:3: bad \\\"x\\\"\\n\"}");
	has(b, "\"routes\":[{\"name\":\"api\",\"kind\":\"server\","
	    "\"listen\":\"127.0.0.1:1\",\"target\":\"127.0.0.1:2\","
	    "\"identity\":\"cn=dm\",\"active\":1,\"certificate\":{"
	    "\"subject\":\"CN=dm\",");
	snprintf(want, sizeof(want), "\"files\":{\"ssl-ca\":\"%s\",\"ssl-cert\":"
	    "\"%s\",\"ssl-key\":\"%s\",\"ssl-crl\":[]},\"crls\":[],"
	    "\"last_reload\":{\"ok\":true,",
	    uf_path("ca.pem"), uf_path("dm.pem"), uf_path("dm-key.pem"));
	has(b, want);
	has(b, "{\"name\":\"q\\\"b\\\\c\",");
	assert_string_equal(b + strlen(b) - 3, "]}\n");
	free(d.d_config);
	d.d_config = NULL;
	d.d_reload_ok = 1;
}

static void
test_requests_other_than_get(void **state)
{
	const char *r;
	char big[9000];

	(void)state;
	r = request("HEAD /metrics HTTP/1.1");
	has(r, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
	    "Content-Length: ");
	assert_string_equal(body(r), "");	/* the length, without the body */
	assert_true(atoi(strstr(r, "Content-Length: ") + 16) > 1000);
	r = request("POST /metrics HTTP/1.1");
	has(r, "HTTP/1.1 405 Method Not Allowed\r\n");
	has(r, "Allow: GET, HEAD\r\n");
	r = request("GET /nope HTTP/1.1");
	has(r, "HTTP/1.1 404 Not Found\r\n");
	assert_string_equal(body(r), "not found: try /healthz, /metrics or /status\n");
	has(request("GET /healthz HTTP/2.0"), "HTTP/1.1 400 Bad Request\r\n");
	has(request("GET  /healthz HTTP/1.1"), "HTTP/1.1 400 Bad Request\r\n");
	has(request("GET /healthz HTTP/1.1 extra"), "HTTP/1.1 400 Bad Request\r\n");
	has(request_raw("GET /healthz HTTP/1.1\n\n", 23), "HTTP/1.1 200 OK\r\n");
	/* A head that never ends within 8 KiB. */
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /healthz HTTP/1.1\r\nX: ", 26);
	has(request_raw(big, sizeof(big)),
	    "HTTP/1.1 431 Request Header Fields Too Large\r\n");
}

static void
test_a_head_in_pieces(void **state)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	const char *reply;
	size_t i;
	int fd = connect_status();

	(void)state;
	for (i = 0; i < sizeof(req) - 1; i++) {
		assert_int_equal(write(fd, req + i, 1), 1);
		event_base_loop(d.d_base, EVLOOP_NONBLOCK);
	}
	reply = read_reply(fd);
	has(reply, "HTTP/1.1 200 OK\r\n");
	assert_string_equal(body(reply), "ok\n");
}

static void
test_connection_cap(void **state)
{
	int fds[64], i, extra;
	char reply[512];
	ssize_t n;

	(void)state;
	for (i = 0; i < 64; i++) {
		fds[i] = connect_status();
		event_base_loop(d.d_base, EVLOOP_NONBLOCK);
	}
	extra = connect_status();
	pump(extra);
	n = read(extra, reply, sizeof(reply) - 1);
	assert_true(n > 0);
	reply[n] = '\0';
	has(reply, "HTTP/1.1 503 Service Unavailable\r\n");
	assert_string_equal(body(reply), "too many status connections\n");
	close(extra);
	for (i = 0; i < 64; i++)
		close(fds[i]);
	/* Once they are gone, a request is served again. */
	for (i = 0; i < 50; i++)
		event_base_loop(d.d_base, EVLOOP_NONBLOCK);
	has(request("GET /healthz HTTP/1.1"), "HTTP/1.1 200 OK\r\n");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics_values),
		cmocka_unit_test(test_histogram_buckets_cumulative),
		cmocka_unit_test(test_healthz),
		cmocka_unit_test(test_status_json),
		cmocka_unit_test(test_requests_other_than_get),
		cmocka_unit_test(test_a_head_in_pieces),
		cmocka_unit_test(test_connection_cap),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
