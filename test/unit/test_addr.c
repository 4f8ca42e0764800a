/*
 * test_addr: how peer addresses are written into log lines.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/addr.h"

/* accept() on a unix listener fills only the family for an unbound peer:
 * the bytes past the length it returned are not the peer's. */
static void
test_unnamed_unix_peer_ignores_bytes_past_len(void **state)
{
	struct sockaddr_storage ss;
	char buf[128];

	(void)state;
	memset(&ss, 'X', sizeof(ss));
	ss.ss_family = AF_UNIX;
	addr_str((struct sockaddr *)&ss, sizeof(sa_family_t), buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix:(unnamed)");
}

static void
test_unix_peer_path_bounded_by_len(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
	char buf[256];

	(void)state;
	memset(&ss, 'X', sizeof(ss));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, "/run/a", 6);	/* no NUL within len */
	addr_str((struct sockaddr *)&ss,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 6), buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix:/run/a");
}

static void
test_short_inet_address_is_unknown(void **state)
{
	struct sockaddr_storage ss;
	char buf[128];

	(void)state;
	memset(&ss, 0x7f, sizeof(ss));
	ss.ss_family = AF_INET;
	addr_str((struct sockaddr *)&ss, 4, buf, sizeof(buf));
	assert_string_equal(buf, "?");
}

static void
test_inet_peers(void **state)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	char buf[128];

	(void)state;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(8261);
	sin.sin_addr.s_addr = htonl(0x7f000002);
	addr_str((struct sockaddr *)&sin, sizeof(sin), buf, sizeof(buf));
	assert_string_equal(buf, "127.0.0.2:8261");
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(8291);
	sin6.sin6_addr.s6_addr[15] = 1;
	addr_str((struct sockaddr *)&sin6, sizeof(sin6), buf, sizeof(buf));
	assert_string_equal(buf, "[::1]:8291");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unnamed_unix_peer_ignores_bytes_past_len),
		cmocka_unit_test(test_unix_peer_path_bounded_by_len),
		cmocka_unit_test(test_short_inet_address_is_unknown),
		cmocka_unit_test(test_inet_peers),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
