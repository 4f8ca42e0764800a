/*
 * test_mysql: the end of a mysql route's upgrade (issue 9 item 12).
 *
 * The upgrade runs on socketpairs, with link-time wraps (see Makefile.am):
 * tls_setup/tls_handshake succeed without a session (the "TLS" leg stays
 * plaintext), bufpool_get can be made to fail, and free() looks at the
 * upgrade's state as it goes.  The test plays the connection: it takes
 * what the upgrade leaves for the relay and ends it with mysql_end(), as
 * conn.c's one close does.
 */
#include <sys/socket.h>

#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>

#include "../../proxy/bufpool.h"
#include "../../proxy/endpoint.h"
#include "../../proxy/mysql.h"
#include "../../proxy/tls.h"

#define USER	"secret-user-4242"
#define PASS	"hunter2-password"

/* ---- the wraps ---------------------------------------------------------- */

uint8_t *__real_bufpool_get(void);
void __real_free(void *);
uint8_t *__wrap_bufpool_get(void);
void __wrap_free(void *);
int __wrap_tls_setup(struct tls_session *, struct endpoint *,
    const struct tls_params *);
enum tls_status __wrap_tls_handshake(struct tls_session *, struct endpoint *);

static int fail_bufs;		/* bufpool_get() returns NULL */
static void *watched;		/* the upgrade's state */
static int watched_freed;
static int secret_left;		/* ... held USER or PASS when freed */

uint8_t *
__wrap_bufpool_get(void)
{
	return (fail_bufs ? NULL : __real_bufpool_get());
}

void
__wrap_free(void *p)
{
	if (p != NULL && p == watched) {
		size_t n = malloc_usable_size(p);

		watched_freed++;
		if (memmem(p, n, USER, strlen(USER)) != NULL ||
		    memmem(p, n, PASS, strlen(PASS)) != NULL)
			secret_left = 1;
		watched = NULL;
	}
	__real_free(p);
}

int
__wrap_tls_setup(struct tls_session *ts, struct endpoint *ep,
    const struct tls_params *p)
{
	(void)ts;
	(void)ep;
	(void)p;
	return (0);
}

enum tls_status
__wrap_tls_handshake(struct tls_session *ts, struct endpoint *ep)
{
	(void)ts;
	(void)ep;
	return (TLS_DONE);
}

/* ---- a connection on socketpairs ---------------------------------------- */

struct rig {
	struct endpoint		ep[2];	/* the client's leg, the server's */
	struct tls_session	tls;
	struct mysql		*ms;
	int			client;	/* the MySQL client's end */
	int			server;	/* the MySQL server's end */
};

static void
rig_init(struct rig *r)
{
	struct mysql_params p;
	int sv[2], i;

	memset(r, 0, sizeof(*r));
	memset(&p, 0, sizeof(p));
	for (i = 0; i < 2; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
		endpoint_init(&r->ep[i], sv[0]);
		p.mp_ep[i] = &r->ep[i];
		if (i == 0)
			r->client = sv[1];
		else
			r->server = sv[1];
	}
	p.mp_tls = &r->tls;
	p.mp_target = "db:3306";
	fail_bufs = watched_freed = secret_left = 0;
	assert_non_null(r->ms = mysql_begin(&p));
	watched = r->ms;
}

static void
rig_done(struct rig *r)
{
	int i;

	for (i = 0; i < 2; i++)
		close(r->ep[i].ep_fd);
	close(r->client);
	close(r->server);
}

/* One packet on fd. */
static void
put(int fd, uint8_t seq, const void *p, size_t n)
{
	uint8_t b[4 + 256];

	assert_true(n <= 256);
	b[0] = (uint8_t)n;
	b[1] = b[2] = 0;
	b[3] = seq;
	memcpy(b + 4, p, n);
	assert_int_equal(write(fd, b, 4 + n), (ssize_t)(4 + n));
}

/* Read one packet from fd into p; its payload length. */
static size_t
get(int fd, uint8_t *seq, uint8_t *p, size_t cap)
{
	uint8_t h[4];
	size_t n;

	assert_int_equal(read(fd, h, 4), 4);
	n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16;
	assert_true(n <= cap);
	*seq = h[3];
	assert_int_equal(read(fd, p, n), (ssize_t)n);
	return (n);
}

/* Let the state machine run as if both sockets had fired (as conn.c). */
static enum mysql_status
step(struct rig *r)
{
	int i;

	for (i = 0; i < 2; i++)
		endpoint_ready(&r->ep[i], EV_READ | EV_WRITE);
	return (mysql_step(r->ms));
}

static const uint8_t greeting[] =
    "\x0a" "8.0.36-test\0"
    "\x07\0\0\0" "abcdefgh" "\0"
    "\x00\x8a"			/* caps low: PROTOCOL_41 SSL SECURE_CONN */
    "\xff" "\x02\x00"
    "\x08\x00"			/* caps high: PLUGIN_AUTH */
    "\x15" "\0\0\0\0\0\0\0\0\0\0"
    "ijklmnopqrst" "\0"
    "caching_sha2_password";	/* + the literal's NUL */

static const uint8_t login[] =
    "\x00\x82\x28\x00"		/* PROTOCOL_41 SECURE_CONN PLUGIN_AUTH
				   LENENC_AUTH */
    "\x00\x00\x00\x01" "\x2d"
    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
    USER "\0"
    "\x00"			/* empty auth response */
    "caching_sha2_password";

static const uint8_t ok[] = { 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00 };

/*
 * Drive one login through caching_sha2 full auth with a cleartext password
 * up to the server's OK, followed by the first bytes of a result the relay
 * must carry on.  Returns what the last mysql_step() said.
 */
static enum mysql_status
run_login(struct rig *r)
{
	uint8_t buf[512], seq;
	size_t n;

	put(r->server, 0, greeting, sizeof(greeting));
	assert_int_equal(step(r), MYSQL_WAIT);
	n = get(r->client, &seq, buf, sizeof(buf));
	assert_int_equal(seq, 0);
	assert_int_equal(n, sizeof(greeting));

	put(r->client, 1, login, sizeof(login));
	assert_int_equal(step(r), MYSQL_WAIT);
	n = get(r->server, &seq, buf, sizeof(buf));
	assert_int_equal(seq, 1);
	assert_int_equal(n, 32);			/* the SSLRequest */
	n = get(r->server, &seq, buf, sizeof(buf));
	assert_int_equal(seq, 2);
	assert_int_equal(n, sizeof(login));		/* the login */

	put(r->server, 3, "\x01\x04", 2);		/* full auth */
	assert_int_equal(step(r), MYSQL_WAIT);
	n = get(r->client, &seq, buf, sizeof(buf));
	assert_int_equal(n, 2);

	put(r->client, 3, PASS, sizeof(PASS));		/* with its NUL */
	assert_int_equal(step(r), MYSQL_WAIT);
	n = get(r->server, &seq, buf, sizeof(buf));
	assert_int_equal(n, sizeof(PASS));
	assert_memory_equal(buf, PASS, sizeof(PASS));

	/* OK, and in the same read the start of the next reply. */
	put(r->server, 5, ok, sizeof(ok));
	put(r->server, 1, "\x01", 1);
	return (step(r));
}

static void
test_finish_wipes_login_and_password(void **state)
{
	struct rig r;
	uint8_t *left;
	size_t n;

	(void)state;
	rig_init(&r);
	assert_int_equal(run_login(&r), MYSQL_DONE);
	/* The bytes behind the OK are left for the relay, and nothing from
	 * the client's leg. */
	left = mysql_take(r.ms, MYSQL_SERVER, &n);
	assert_non_null(left);
	assert_int_equal(n, 5);
	assert_null(mysql_take(r.ms, MYSQL_CLIENT, &n));
	assert_int_equal(watched_freed, 0);
	mysql_end(r.ms, NULL);
	assert_int_equal(watched_freed, 1);
	assert_false(secret_left);
	bufpool_put(left);
	rig_done(&r);
}

static void
test_finish_out_of_memory_closes(void **state)
{
	struct rig r;

	(void)state;
	rig_init(&r);
	fail_bufs = 1;
	/* No buffer for the relay: the upgrade fails (it does not free
	 * itself: the connection's one close ends it, once). */
	assert_int_equal(run_login(&r), MYSQL_FAIL);
	assert_non_null(strstr(mysql_reason(r.ms), "out of memory"));
	assert_int_equal(watched_freed, 0);
	mysql_end(r.ms, mysql_reason(r.ms));
	assert_int_equal(watched_freed, 1);
	assert_false(secret_left);
	rig_done(&r);
}

static void
test_abort_wipes_login(void **state)
{
	struct rig r;
	uint8_t buf[512], seq;
	size_t n;

	(void)state;
	rig_init(&r);
	put(r.server, 0, greeting, sizeof(greeting));
	assert_int_equal(step(&r), MYSQL_WAIT);
	(void)get(r.client, &seq, buf, sizeof(buf));
	put(r.client, 1, login, sizeof(login));
	assert_int_equal(step(&r), MYSQL_WAIT);
	mysql_end(r.ms, "dmtls (route mysql): handshake timeout");
	assert_int_equal(watched_freed, 1);
	assert_false(secret_left);
	/* The client heard why, in an ERR packet. */
	n = get(r.client, &seq, buf, sizeof(buf));
	assert_true(n > 9);
	assert_int_equal(buf[0], 0xff);
	rig_done(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finish_wipes_login_and_password),
		cmocka_unit_test(test_finish_out_of_memory_closes),
		cmocka_unit_test(test_abort_wipes_login),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
