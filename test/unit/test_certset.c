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
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

#include "../../policy/certset.h"
#include "../../proxy/conf.h"
#include "unitfiles.h"

static char path_ca[256], path_cert[256], path_key[256];

static int
setup(void **state)
{
	(void)state;
	if (uf_setup() == -1)
		return (-1);
	uf_leaf("a", "dm", 30);
	uf_leaf("b", "dm2", 30);
	snprintf(path_ca, sizeof(path_ca), "%s/use-ca.pem", uf_dir);
	snprintf(path_cert, sizeof(path_cert), "%s/use.pem", uf_dir);
	snprintf(path_key, sizeof(path_key), "%s/use-key.pem", uf_dir);
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	uf_teardown();
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
	uf_sh("cd %s && cp ca.pem t && mv t use-ca.pem && cp %s.pem t && "
	    "mv t use.pem && cp %s-key.pem t && mv t use-key.pem",
	    uf_dir, name, name);
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
	uf_sh(": > %s", path_key);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Key from another pair. */
	uf_sh("cp %s/b-key.pem %s", uf_dir, path_key);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Truncated CA bundle (half-written). */
	use("a");
	uf_sh("head -c 300 %s/ca.pem > %s", uf_dir, path_ca);
	cs = certsrc_acquire(src);
	assert_ptr_equal(cs, good);
	certset_release(cs);
	/* Missing file. */
	uf_sh("rm %s", path_cert);
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
	uf_sh("cp %s/b-key.pem %s", uf_dir, path_key);
	src = new_src(&rc, err, sizeof(err));
	assert_null(src);
	assert_non_null(strstr(err, "ssl-key"));
	assert_non_null(strstr(err, path_key));
	assert_non_null(strstr(err, "does not match"));
	route_conf_free(&rc);

	use("a");
	uf_sh("head -c 300 %s/ca.pem > %s", uf_dir, path_ca);
	src = new_src(&rc, err, sizeof(err));
	assert_null(src);
	assert_non_null(strstr(err, "ssl-ca"));
	assert_non_null(strstr(err, "cut short"));
	route_conf_free(&rc);

	use("a");
	uf_sh("rm %s", path_cert);
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
	uf_sh("cat %s/b.pem > %s && cat %s/b-key.pem > %s", uf_dir, path_cert, uf_dir,
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

/*
 * Coarse timestamps (-Wl,--wrap=stat): while `coarse` is set, every stat()
 * (certset.c's and this file's) sees whole seconds, as on a file system
 * whose clock ticks once a second, where a rewrite within the same second
 * keeps size and times.
 */
static int coarse;
int __real_stat(const char *, struct stat *);
int __wrap_stat(const char *, struct stat *);

int
__wrap_stat(const char *path, struct stat *st)
{
	int rv = __real_stat(path, st);

	if (rv == 0 && coarse) {
		st->st_atim.tv_nsec = 0;
		st->st_mtim.tv_nsec = 0;
		st->st_ctim.tv_nsec = 0;
	}
	return (rv);
}

/* Rewrite dst in place (same inode) with the bytes of dir/name. */
static void
rewrite(const char *dst, const char *name)
{
	char path[512], buf[8192];
	ssize_t n;
	FILE *in, *out;

	snprintf(path, sizeof(path), "%s/%s", uf_dir, name);
	assert_non_null(in = fopen(path, "rb"));
	assert_non_null(out = fopen(dst, "r+b"));
	assert_int_equal(ftruncate(fileno(out), 0), 0);
	while ((n = (ssize_t)fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, (size_t)n, out), (size_t)n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

static int
same_stat_seen(const struct stat *a, const struct stat *b)
{
	return (a->st_ino == b->st_ino && a->st_size == b->st_size &&
	    a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	    a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	    a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	    a->st_ctim.tv_nsec == b->st_ctim.tv_nsec);
}

static void
test_same_size_rewrite_in_the_same_tick_is_seen(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a = NULL;
	struct stat before, after;
	uint64_t ok, bad;
	char err[512];
	int tries;

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	coarse = 1;
	/*
	 * The key is rewritten with the bytes in use, a connection reads the
	 * files (the stat shortcut would record their stat now), and the key
	 * is rewritten again with another EC key: same size, and, within one
	 * second, the same times.  Only a stat recorded for files that had
	 * not changed in the last second keeps that rewrite from hiding.
	 */
	for (tries = 0; tries < 20; tries++) {
		rewrite(path_key, "a-key.pem");
		a = certsrc_acquire(src);
		assert_int_equal(stat(path_key, &before), 0);
		rewrite(path_key, "b-key.pem");
		assert_int_equal(stat(path_key, &after), 0);
		if (same_stat_seen(&before, &after))
			break;
		certset_release(a);	/* a second boundary fell between */
		a = NULL;
	}
	assert_true(tries < 20);
	certset_release(certsrc_acquire(src));
	certsrc_stats(src, &ok, &bad);
	assert_int_equal(bad, 1);	/* read, and found not to match */
	coarse = 0;
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
	uf_sh("cp %s/b-key.pem %s", uf_dir, path_key);	/* another pair's key */
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

/*
 * A slow reader (-Wl,--wrap=read): while `slow_reader` is set, the thread
 * it names stops after reading the whole key file (at its EOF) until the
 * test lets it go, so another thread can read newer files and publish
 * their set in the meantime.
 */
static pthread_t slow_reader;
static int slow_armed;
static sem_t slow_paused, slow_go;
static int wait_sem(sem_t *);
ssize_t __real_read(int, void *, size_t);
ssize_t __wrap_read(int, void *, size_t);

ssize_t
__wrap_read(int fd, void *buf, size_t len)
{
	ssize_t n = __real_read(fd, buf, len);
	char link[64], path[512];
	ssize_t pl;

	if (n != 0 || !slow_armed || !pthread_equal(pthread_self(),
	    slow_reader))
		return (n);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((pl = readlink(link, path, sizeof(path) - 1)) <= 0)
		return (n);
	path[pl] = '\0';
	if (strstr(path, "use-key.pem") == NULL)
		return (n);
	slow_armed = 0;
	sem_post(&slow_paused);
	(void)wait_sem(&slow_go);
	return (n);
}

static void *
acquire_thread(void *arg)
{
	struct certset *cs;

	slow_reader = pthread_self();
	slow_armed = 1;
	cs = certsrc_acquire(arg);
	certset_thread_done();		/* as a worker does when it ends */
	return (cs);
}

/* sem_wait, bounded: a test that stops waiting fails instead of hanging. */
static int
wait_sem(sem_t *s)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20;
	return (sem_timedwait(s, &ts));
}

/* A connection that read the files before a rotation, and builds from
 * them after another connection published the rotated set, must not put
 * the older set back in use. */
static void
test_older_read_never_replaces_a_newer_set(void **state)
{
	struct route_conf rc;
	struct certsrc *src;
	struct certset *a, *b, *late, *cur;
	pthread_t t;
	char err[512];
	void *ret;

	(void)state;
	use("a");
	src = new_src(&rc, err, sizeof(err));
	assert_non_null(src);
	a = certsrc_acquire(src);
	assert_string_equal(certset_subject(a), "CN=dm");
	/* Force the slow thread past the stat fast path. */
	use("a");
	assert_int_equal(sem_init(&slow_paused, 0, 0), 0);
	assert_int_equal(sem_init(&slow_go, 0, 0), 0);
	assert_int_equal(pthread_create(&t, NULL, acquire_thread, src), 0);
	assert_int_equal(wait_sem(&slow_paused), 0);
	use("b");
	b = certsrc_acquire(src);
	assert_string_equal(certset_subject(b), "CN=dm2");
	sem_post(&slow_go);
	assert_int_equal(pthread_join(t, &ret), 0);
	late = ret;
	cur = certsrc_current(src);
	assert_string_equal(certset_subject(cur), "CN=dm2");
	assert_string_equal(certset_subject(late), "CN=dm2");
	certset_release(a);
	certset_release(b);
	certset_release(late);
	certset_release(cur);
	sem_destroy(&slow_paused);
	sem_destroy(&slow_go);
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
		cmocka_unit_test(test_older_read_never_replaces_a_newer_set),
	};

	wolfSSL_Init();
	return (cmocka_run_group_tests(tests, setup, teardown));
}
