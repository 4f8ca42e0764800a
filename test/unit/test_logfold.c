/*
 * test_logfold: folding repeated failure lines (proxy/logfold.c), on a
 * clock the test moves (now_ms is wrapped) and with stderr captured.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../proxy/log.h"
#include "../../proxy/logfold.h"

int64_t __wrap_now_ms(void);

static int64_t clock_ms = 1000000;

int64_t
__wrap_now_ms(void)
{
	return (clock_ms);
}

/* ---- stderr, captured into a temporary file ----------------------------- */

static FILE *cap_f;
static int cap_saved = -1;
static char cap[1 << 16];

static void
cap_start(void)
{
	assert_non_null(cap_f = tmpfile());
	cap_saved = dup(STDERR_FILENO);
	assert_true(dup2(fileno(cap_f), STDERR_FILENO) >= 0);
}

/* Restore stderr; cap holds what was written meanwhile. */
static void
cap_end(void)
{
	size_t n;

	dup2(cap_saved, STDERR_FILENO);
	close(cap_saved);
	rewind(cap_f);
	n = fread(cap, 1, sizeof(cap) - 1, cap_f);
	cap[n] = '\0';
	fclose(cap_f);
}

static int
count(const char *needle)
{
	const char *p = cap;
	int n = 0;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p += strlen(needle);
	}
	return (n);
}

static void
test_repeats_fold_into_timed_summaries(void **state)
{
	struct logfold *f = logfold_new("r");
	int i, written = 0;

	(void)state;
	log_setup("info", "text");
	cap_start();
	for (i = 0; i < 10; i++)
		written += logfold_fail(f, "conn_failed", "refused");
	logfold_tick(f);		/* not due yet */
	clock_ms += LOGFOLD_INTERVAL_MS;
	written += logfold_fail(f, "conn_failed", "refused");	/* carries it */
	logfold_fail(f, "conn_failed", "refused");
	clock_ms += LOGFOLD_INTERVAL_MS;
	logfold_tick(f);		/* failures stopped: the timer writes */
	logfold_ok(f);
	logfold_ok(f);			/* once only */
	cap_end();
	assert_int_equal(written, 1);
	assert_non_null(strstr(cap, "event=conn_failed route=r repeated=10 "
	    "period_ms=5000 reason=refused\n"));
	assert_non_null(strstr(cap, "event=conn_failed route=r repeated=1 "
	    "period_ms=5000 reason=refused\n"));
	assert_non_null(strstr(cap, "event=recovered route=r failures=12 "
	    "down_ms=10000\n"));
	assert_int_equal(count("event="), 3);
	logfold_free(f);
}

static void
test_kinds_apart_and_pending_written_at_recovery(void **state)
{
	struct logfold *f = logfold_new("r");

	(void)state;
	log_setup("info", "text");
	cap_start();
	assert_int_equal(logfold_fail(f, "conn_failed", "a"), 1);
	assert_int_equal(logfold_fail(f, "handshake_failed", "a"), 1);
	assert_int_equal(logfold_fail(f, "conn_failed", "b"), 1);
	assert_int_equal(logfold_fail(f, "conn_failed", "a"), 0);
	assert_int_equal(logfold_fail(f, "conn_failed", "b"), 0);
	assert_int_equal(logfold_fail(f, "conn_failed", "b"), 0);
	clock_ms += 10;
	logfold_ok(f);
	cap_end();
	assert_non_null(strstr(cap, "event=conn_failed route=r repeated=1 "
	    "period_ms=10 reason=a\n"));
	assert_non_null(strstr(cap, "event=conn_failed route=r repeated=2 "
	    "period_ms=10 reason=b\n"));
	assert_non_null(strstr(cap, "event=recovered route=r failures=6 "));
	/* After recovery, a failure is logged whole again. */
	assert_int_equal(logfold_fail(f, "conn_failed", "a"), 1);
	logfold_free(f);
}

static void
test_more_kinds_than_slots_and_forgetting(void **state)
{
	struct logfold *f = logfold_new("r");
	char why[16];
	int i;

	(void)state;
	log_setup("info", "text");
	cap_start();
	assert_int_equal(logfold_fail(f, "conn_failed", "k0"), 1);
	assert_int_equal(logfold_fail(f, "conn_failed", "k0"), 0);
	/* More kinds than slots: the quietest one leaves, its count written. */
	for (i = 1; i <= LOGFOLD_KINDS; i++) {
		clock_ms += 1;
		snprintf(why, sizeof(why), "k%d", i);
		assert_int_equal(logfold_fail(f, "conn_failed", why), 1);
	}
	/* A kind quiet for LOGFOLD_FORGET_MS is logged whole again. */
	clock_ms += LOGFOLD_FORGET_MS;
	assert_int_equal(logfold_fail(f, "conn_failed", "k2"), 1);
	cap_end();
	assert_non_null(strstr(cap, "repeated=1 period_ms=4 reason=k0\n"));
	/* A single failure, logged whole, needs no recovery line. */
	logfold_free(f);
	f = logfold_new("s");
	cap_start();
	assert_int_equal(logfold_fail(f, "conn_failed", "x"), 1);
	logfold_ok(f);
	cap_end();
	assert_int_equal(count("event="), 0);
	logfold_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_repeats_fold_into_timed_summaries),
		cmocka_unit_test(test_kinds_apart_and_pending_written_at_recovery),
		cmocka_unit_test(test_more_kinds_than_slots_and_forgetting),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
