/*
 * test_util: durations, numbers, string lists and address parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/addr.h"
#include "../../proxy/conf.h"
#include "../../proxy/util.h"

static void
test_durations_with_units(void **state)
{
	long ms;

	(void)state;
	assert_int_equal(parse_duration("10s", &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(parse_duration("500ms", &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(parse_duration("2m", &ms), 0);
	assert_int_equal(ms, 120000);
	assert_int_equal(parse_duration("1h", &ms), 0);
	assert_int_equal(ms, 3600000);
	assert_int_equal(parse_duration("1.5s", &ms), 0);
	assert_int_equal(ms, 1500);
	assert_int_equal(parse_duration("7", &ms), 0);
	assert_int_equal(ms, 7000);
}

static void
test_durations_refused(void **state)
{
	long ms = 42;

	(void)state;
	assert_int_equal(parse_duration("", &ms), -1);
	assert_int_equal(parse_duration("-1s", &ms), -1);
	assert_int_equal(parse_duration("10x", &ms), -1);
	assert_int_equal(parse_duration("s", &ms), -1);
	assert_int_equal(parse_duration("10 s", &ms), -1);
	assert_int_equal(ms, 42);
}

/* Fuzzing found "nan" accepted (UB on the conversion to long). */
static void
test_durations_refuse_nan_inf_hex_exponent(void **state)
{
	static const char *bad[] = {
		"nan", "NaN", "nans", "inf", "infinity", "-inf", "-0", "+1",
		"-0s", "0x10s", "0x10", "1e3", "1e3s", "1e400", "1E2ms",
		" 5", "5 ", "\t5s", ".5s", "5.s", "1..5s", "1.5.5s", "1,5s",
		"5S", "5sec", "5ss", "5mss", "5d", "ms",
	};
	size_t i;
	long ms;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ms = 42;
		if (parse_duration(bad[i], &ms) != -1 || ms != 42)
			fail_msg("parse_duration(\"%s\") accepted it as %ld ms",
			    bad[i], ms);
	}
}

static void
test_durations_huge_refused(void **state)
{
	long ms = 42;

	(void)state;
	/* At most 365 days, in any unit. */
	assert_int_equal(parse_duration("31536000s", &ms), 0);
	assert_int_equal(ms, 31536000000L);
	assert_int_equal(parse_duration("8760h", &ms), 0);
	assert_int_equal(ms, 31536000000L);
	ms = 42;
	assert_int_equal(parse_duration("31536000.001s", &ms), -1);
	assert_int_equal(parse_duration("8761h", &ms), -1);
	assert_int_equal(parse_duration("525601m", &ms), -1);
	assert_int_equal(parse_duration("31536000001ms", &ms), -1);
	assert_int_equal(parse_duration("1000000000000000s", &ms), -1);
	assert_int_equal(parse_duration("99999999999999999999999999s", &ms),
	    -1);
	assert_int_equal(parse_duration("9223372036854775807ms", &ms), -1);
	assert_int_equal(parse_duration("9223372036854775808", &ms), -1);
	assert_int_equal(ms, 42);
}

static void
test_durations_exact_and_rounded(void **state)
{
	long ms;

	(void)state;
	assert_int_equal(parse_duration("0", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(parse_duration("0s", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(parse_duration("0.000s", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(parse_duration("0.25m", &ms), 0);
	assert_int_equal(ms, 15000);
	assert_int_equal(parse_duration("1.0005s", &ms), 0);
	assert_int_equal(ms, 1001);
	assert_int_equal(parse_duration("2.5ms", &ms), 0);
	assert_int_equal(ms, 3);
	assert_int_equal(parse_duration("0.001s", &ms), 0);
	assert_int_equal(ms, 1);
	assert_int_equal(parse_duration("010s", &ms), 0);
	assert_int_equal(ms, 10000);
	assert_int_equal(parse_duration("1.000000000001h", &ms), 0);
	assert_int_equal(ms, 3600000);
	/* Not zero, but less than the millisecond dmtls counts in. */
	ms = 42;
	assert_int_equal(parse_duration("0.4ms", &ms), -1);
	assert_int_equal(parse_duration("0.0001s", &ms), -1);
	assert_int_equal(ms, 42);
}

static void
test_long_bounds(void **state)
{
	long v;

	(void)state;
	assert_int_equal(parse_long("5", 0, 10, &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(parse_long("11", 0, 10, &v), -1);
	assert_int_equal(parse_long("-1", 0, 10, &v), -1);
	assert_int_equal(parse_long("3x", 0, 10, &v), -1);
}

static void
test_strlist_csv_and_repeat(void **state)
{
	struct strlist sl = { 0 };
	char buf[64];

	(void)state;
	assert_int_equal(strlist_add_csv(&sl, "dm,,dm-worker"), 0);
	assert_int_equal(strlist_add(&sl, "other"), 0);
	assert_int_equal(sl.sl_n, 3);
	assert_true(strlist_has(&sl, "dm-worker"));
	assert_false(strlist_has(&sl, "DM"));
	assert_false(strlist_has(&sl, "d"));
	strlist_join(&sl, "|", buf, sizeof(buf));
	assert_string_equal(buf, "dm|dm-worker|other");
	strlist_free(&sl);
	assert_int_equal(sl.sl_n, 0);
}

static void
test_addr_forms(void **state)
{
	struct addr a;
	char err[256], s[80];

	(void)state;
	assert_int_equal(addr_parse("127.0.0.1:8261", &a, err, sizeof(err)),
	    0);
	assert_true(a.a_is_ip);
	assert_string_equal(addr_str((struct sockaddr *)&a.a_ss, a.a_len, s,
	    sizeof(s)), "127.0.0.1:8261");
	assert_int_equal(addr_parse("[::1]:443", &a, err, sizeof(err)), 0);
	assert_string_equal(addr_str((struct sockaddr *)&a.a_ss, a.a_len, s,
	    sizeof(s)), "[::1]:443");
	assert_int_equal(addr_parse("localhost:1", &a, err, sizeof(err)), 0);
	assert_false(a.a_is_ip);
	assert_string_equal(a.a_host, "localhost");
	assert_int_equal(addr_parse("unix:/run/dm.sock", &a, err,
	    sizeof(err)), 0);
	assert_true(a.a_unix);
}

/* A target host name is left for each connection to look up; a literal
 * address is filled in at once, without the resolver. */
static void
test_addr_target_name_left_unresolved(void **state)
{
	struct addr a;
	char err[256], s[80];

	(void)state;
	assert_int_equal(addr_parse_target("no-such-host.invalid:3306", &a,
	    err, sizeof(err)), 0);
	assert_true(a.a_name);
	assert_false(a.a_is_ip);
	assert_int_equal(a.a_len, 0);
	assert_string_equal(a.a_host, "no-such-host.invalid");
	assert_string_equal(a.a_port, "3306");
	assert_int_equal(addr_parse_target("[::1]:443", &a, err, sizeof(err)),
	    0);
	assert_false(a.a_name);
	assert_true(a.a_is_ip);
	assert_string_equal(addr_str((struct sockaddr *)&a.a_ss, a.a_len, s,
	    sizeof(s)), "[::1]:443");
	assert_int_equal(addr_parse_target("unix:/run/x", &a, err,
	    sizeof(err)), 0);
	assert_false(a.a_name);
	assert_int_equal(addr_parse_target("name:99999", &a, err, sizeof(err)),
	    -1);
	/* A listen address still must resolve. */
	assert_int_equal(addr_parse("no-such-host.invalid:1", &a, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot resolve no-such-host.invalid: "));
}

static void
test_addr_refused(void **state)
{
	struct addr a;
	char err[256];

	(void)state;
	assert_int_equal(addr_parse("8261", &a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "HOST:PORT"));
	assert_int_equal(addr_parse("127.0.0.1:99999", &a, err, sizeof(err)),
	    -1);
	assert_int_equal(addr_parse("127.0.0.1:", &a, err, sizeof(err)), -1);
	assert_int_equal(addr_parse("[::1:80", &a, err, sizeof(err)), -1);
	assert_int_equal(addr_parse("unix:", &a, err, sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durations_with_units),
		cmocka_unit_test(test_durations_refused),
		cmocka_unit_test(test_durations_refuse_nan_inf_hex_exponent),
		cmocka_unit_test(test_durations_huge_refused),
		cmocka_unit_test(test_durations_exact_and_rounded),
		cmocka_unit_test(test_long_bounds),
		cmocka_unit_test(test_strlist_csv_and_repeat),
		cmocka_unit_test(test_addr_forms),
		cmocka_unit_test(test_addr_target_name_left_unresolved),
		cmocka_unit_test(test_addr_refused),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
