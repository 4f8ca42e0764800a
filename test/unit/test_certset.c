/*
 * test_certset: certificate files reread per connection, with the last good
 * set kept while the files on disk are broken.  The files are made with the
 * openssl CLI in a temporary folder.
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

#include "../../policy/certset.h"
#include "../../proxy/conf.h"

static char dir[] = "/tmp/dmtls-certset-XXXXXX";
static char path_ca[256], path_cert[256], path_key[256];

static void
sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

/* A CA and a leaf NAME signed by it: NAME.pem, NAME-key.pem. */
static void
make_leaf(const char *name, const char *cn)
{
	sh("cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout %s-key.pem -subj /CN=%s -out %s.csr 2>/dev/null && "
	    "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca-key.pem "
	    "-CAcreateserial -days 30 -out %s.pem 2>/dev/null",
	    dir, name, cn, name, name, name);
}

static int
setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return (-1);
	sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -subj "
	    "'/CN=unit CA' -days 30 -out ca.pem 2>/dev/null", dir);
	make_leaf("a", "dm");
	make_leaf("b", "dm2");
	snprintf(path_ca, sizeof(path_ca), "%s/use-ca.pem", dir);
	snprintf(path_cert, sizeof(path_cert), "%s/use.pem", dir);
	snprintf(path_key, sizeof(path_key), "%s/use-key.pem", dir);
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	sh("rm -rf %s", dir);
	return (0);
}

/* Every TLS context certset builds, counted (-Wl,--wrap=wolfSSL_CTX_new). */
static int ctx_builds;
WOLFSSL_CTX *__real_wolfSSL_CTX_new(WOLFSSL_METHOD *);
WOLFSSL_CTX *__wrap_wolfSSL_CTX_new(WOLFSSL_METHOD *);

WOLFSSL_CTX *
__wrap_wolfSSL_CTX_new(WOLFSSL_METHOD *m)
{
	ctx_builds++;
	return (__real_wolfSSL_CTX_new(m));
}

static int
verify_any(int ok, WOLFSSL_X509_STORE_CTX *st)
{
	(void)st;
	return (ok);
}

/* Put leaf NAME in use (rename over, as rotation tools do). */
static void
use(const char *name)
{
	sh("cd %s && cp ca.pem t && mv t use-ca.pem && cp %s.pem t && "
	    "mv t use.pem && cp %s-key.pem t && mv t use-key.pem",
	    dir, name, name);
}

/* A source for the files in use, rereading them per acquire or not. */
static struct certsrc *
new_src_reread(struct route_conf *rc, int reread, char *err, size_t errlen)
{
	struct certsrc_params p;

	route_conf_init(rc, ROUTE_SERVER);
	rc->name = strdup("unit");
	rc->sec.ssl_ca = strdup(path_ca);
	rc->sec.ssl_cert = strdup(path_cert);
	rc->sec.ssl_key = strdup(path_key);
	memset(&p, 0, sizeof(p));
	p.name = rc->name;
	p.ssl_ca = rc->sec.ssl_ca;
	p.ssl_cert = rc->sec.ssl_cert;
	p.ssl_key = rc->sec.ssl_key;
	p.tls_server = 1;
	p.verify_client = rc->sec.verify_client;
	p.reread = reread;
	p.verify_cb = verify_any;
	return (certsrc_new(&p, err, errlen));
}

static struct certsrc *
new_src(struct route_conf *rc, char *err, size_t errlen)
{
	return (new_src_reread(rc, 1, err, errlen));
}

static void
test_unchanged_files_reuse_the_set(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a, *b;
	char err[512];

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	a = certsrc_acquire(src);
	b = certsrc_acquire(src);
	assert_ptr_equal(a, b);
	assert_string_equal(certset_subject(a), "CN=dm");
	assert_true(certset_not_after(a) > 0);
	certset_release(a);
	certset_release(b);
	certsrc_free(src);
	route_conf_free(&rc);
}

static void
test_changed_files_take_effect_and_old_set_survives(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a, *b;
	uint64_t ok, bad;
	char err[512];

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	a = certsrc_acquire(src);
	use("b");
	b = certsrc_acquire(src);
	assert_ptr_not_equal(a, b);
	assert_string_equal(certset_subject(b), "CN=dm2");
	/* The connection holding a still has a usable set. */
	assert_string_equal(certset_subject(a), "CN=dm");
	assert_non_null(certset_ctx(a));
	certsrc_stats(src, &ok, &bad);
	assert_int_equal(ok, 2);
	assert_int_equal(bad, 0);
	certset_release(a);
	certset_release(b);
	certsrc_free(src);
	route_conf_free(&rc);
}

static void
test_broken_files_keep_last_good_set(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *good, *cs;
	uint64_t ok, bad;
	char err[512];

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	good = certsrc_acquire(src);

	/* Empty key. */
	sh(": > %s", path_key);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Key from another pair. */
	sh("cp %s/b-key.pem %s", dir, path_key);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Truncated CA bundle (half-written). */
	use("a");
	sh("head -c 300 %s/ca.pem > %s", dir, path_ca);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Missing file. */
	sh("rm %s", path_cert);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	certsrc_stats(src, &ok, &bad);
	assert_int_equal(ok, 1);
	assert_int_equal(bad, 4);

	/* Fixed files take effect on the next acquire. */
	use("b");
	cs = certsrc_acquire(src);
	assert_ptr_not_equal(cs, good);
	assert_string_equal(certset_subject(cs), "CN=dm2");
	certset_release(cs);
	certset_release(good);
	certsrc_free(src);
	route_conf_free(&rc);
}

static void
test_broken_at_start_names_file_and_reason(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	char err[512];

	(void)state;
	use("a");
	sh("cp %s/b-key.pem %s", dir, path_key);
	src = new_src(&rc, err, sizeof(err));
	assert_null(src);
	assert_non_null(strstr(err, "ssl-key"));
	assert_non_null(strstr(err, path_key));
	assert_non_null(strstr(err, "does not match"));
	route_conf_free(&rc);

	use("a");
	sh("head -c 300 %s/ca.pem > %s", dir, path_ca);
	src = new_src(&rc, err, sizeof(err));
	assert_null(src);
	assert_non_null(strstr(err, "ssl-ca"));
	assert_non_null(strstr(err, "cut short"));
	route_conf_free(&rc);

	use("a");
	sh("rm %s", path_cert);
	src = new_src(&rc, err, sizeof(err));
	assert_null(src);
	assert_non_null(strstr(err, "ssl-cert"));
	assert_non_null(strstr(err, "cannot be read"));
	route_conf_free(&rc);
}

static void
test_no_reread_keeps_first_set(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a, *b;
	char err[512];

	(void)state;
	use("a");
	src = new_src_reread(&rc, 0, err, sizeof(err));
	assert_non_null(src);
	a = certsrc_acquire(src);
	use("b");
	b = certsrc_acquire(src);
	assert_ptr_equal(a, b);
	certset_release(a);
	certset_release(b);
	certsrc_free(src);
	route_conf_free(&rc);
}

static void
test_settled_files_changed_later_are_seen(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a, *b;
	char err[512];

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	/* Let the files settle, so their stat is trusted from now on. */
	sleep(2);
	a = certsrc_acquire(src);
	b = certsrc_acquire(src);
	assert_ptr_equal(a, b);
	certset_release(b);
	/* In-place rewrite (same inode) and rename-over both show. */
	sh("cat %s/b.pem > %s && cat %s/b-key.pem > %s", dir, path_cert, dir,
	    path_key);
	b = certsrc_acquire(src);
	assert_ptr_not_equal(a, b);
	assert_string_equal(certset_subject(b), "CN=dm2");
	certset_release(a);
	certset_release(b);
	sleep(2);
	a = certsrc_acquire(src);
	use("a");
	b = certsrc_acquire(src);
	assert_string_equal(certset_subject(b), "CN=dm");
	certset_release(a);
	certset_release(b);
	certsrc_free(src);
	route_conf_free(&rc);
}

static void
test_same_size_rewrite_in_the_same_tick_is_seen(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a;
	uint64_t ok, bad;
	char err[512];

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	a = certsrc_acquire(src);
	/* EC keys in PEM all have one size: an in-place rewrite right after
	 * the first write may keep size and timestamps.  It must still be
	 * read (and found not to match the certificate). */
	sh("cat %s/b-key.pem > %s", dir, path_key);
	certset_release(certsrc_acquire(src));
	certsrc_stats(src, &ok, &bad);
	assert_int_equal(bad, 1);
	certset_release(a);
	certsrc_free(src);
	route_conf_free(&rc);
}

/* While the files hold the same broken bytes, new connections reuse the
 * last good set without building (and failing) a context again. */
static void
test_same_broken_bytes_are_not_rebuilt(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *good, *cs;
	uint64_t ok, bad;
	char err[512];
	int i, builds;

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	good = certsrc_acquire(src);
	sh("cp %s/b-key.pem %s", dir, path_key);	/* another pair's key */
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	builds = ctx_builds;
	for (i = 0; i < 10; i++) {
		cs = certsrc_acquire(src);
		assert_ptr_equal(cs, good);
		certset_release(cs);
	}
	assert_int_equal(ctx_builds, builds);
	/* Every connection still counts as a failed reload. */
	certsrc_stats(src, &ok, &bad);
	assert_int_equal(bad, 11);
	/* Other bytes are judged again: the fixed pair is published. */
	use("b");
	cs = certsrc_acquire(src);
	assert_string_equal(certset_subject(cs), "CN=dm2");
	assert_int_equal(ctx_builds, builds + 1);
	certset_release(cs);
	certset_release(good);
	certsrc_free(src);
	route_conf_free(&rc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unchanged_files_reuse_the_set),
		cmocka_unit_test(test_changed_files_take_effect_and_old_set_survives),
		cmocka_unit_test(test_broken_files_keep_last_good_set),
		cmocka_unit_test(test_broken_at_start_names_file_and_reason),
		cmocka_unit_test(test_no_reread_keeps_first_set),
		cmocka_unit_test(test_settled_files_changed_later_are_seen),
		cmocka_unit_test(test_same_size_rewrite_in_the_same_tick_is_seen),
		cmocka_unit_test(test_same_broken_bytes_are_not_rebuilt),
	};

	wolfSSL_Init();
	return (cmocka_run_group_tests(tests, setup, teardown));
}
