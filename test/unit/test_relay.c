/*
 * test_relay: the relay's per-wakeup budget, on real sockets.
 */
#include <sys/socket.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../proxy/bufpool.h"
#include "../../proxy/endpoint.h"
#include "../../proxy/relay.h"

#define BIG	(4 * 1024 * 1024)

static void
nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void
bufs(int fd)
{
	int sz = BIG;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

/*
 * One fast connection must not hold its worker: with megabytes ready on
 * one side and room on the other, relay_pump() returns after its budget,
 * saying there is more, instead of moving everything in one wakeup.
 */
static void
test_pump_yields_after_its_budget(void **state)
{
	static uint8_t junk[65536];
	struct endpoint ep[2];
	struct relay r;
	int in[2], out[2], i;
	size_t sent = 0, got = 0, buffered;
	ssize_t n;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, in), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
	for (i = 0; i < 2; i++) {
		bufs(in[i]);
		bufs(out[i]);
		nonblock(in[i]);
		nonblock(out[i]);
	}
	/* As much as the socket takes, in the client's direction. */
	while ((n = send(in[1], junk, sizeof(junk), 0)) > 0)
		sent += (size_t)n;
	assert_true(sent > 4 * RELAY_BUDGET);

	endpoint_init(&ep[0], in[0]);	/* the client */
	endpoint_init(&ep[1], out[0]);	/* the target */
	relay_init(&r, &ep[0], &ep[1]);

	assert_int_equal(relay_pump(&r), RELAY_MORE);	/* more to do */
	while ((n = recv(out[1], junk, sizeof(junk), 0)) > 0)
		got += (size_t)n;
	buffered = r.r_up.h_len - r.r_up.h_off;
	assert_true(got + buffered >= RELAY_BUDGET);
	assert_true(got + buffered <= RELAY_BUDGET + BUFPOOL_SZ);
	/* Pumping on moves the rest, a budget at a time. */
	for (i = 0; i < 256 && got < sent; i++) {
		(void)relay_pump(&r);
		while ((n = recv(out[1], junk, sizeof(junk), 0)) > 0)
			got += (size_t)n;
	}
	assert_int_equal(got, sent);
	relay_free(&r);
	bufpool_drain();
	for (i = 0; i < 2; i++) {
		close(in[i]);
		close(out[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pump_yields_after_its_budget),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
