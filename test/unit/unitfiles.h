/*
 * unitfiles.h: helpers the unit tests share for files in a temporary
 * folder: shell commands, writing a file, a small PKI made with the
 * openssl CLI, and capturing what a function prints.  Header-only (static
 * functions): each test program includes it once.
 */
#ifndef DMTLS_UNITFILES_H
#define DMTLS_UNITFILES_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Not every test program uses every helper. */
#define UF_UNUSED	__attribute__((unused))

/* The test's folder; set up with mkdtemp() by uf_setup(). */
static char uf_dir[] = "/tmp/dmtls-unit-XXXXXX";

/* Run a shell command; the test fails unless it exits 0. */
UF_UNUSED static void
uf_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

/* uf_dir/name, in one of 8 static buffers used in turn (the capture
 * functions use none of them). */
UF_UNUSED static const char *
uf_path(const char *name)
{
	static char buf[8][512];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, sizeof(buf[0]), "%s/%s", uf_dir, name);
	return (p);
}

/* Write text to uf_dir/name (creating folders on the way); its path. */
UF_UNUSED static const char *
uf_write(const char *name, const char *text)
{
	const char *path = uf_path(name);
	char dir[512], *slash;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		uf_sh("mkdir -p '%s'", dir);
	}
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return (path);
}

/*
 * A CA (ca.pem) and leaves signed by it, valid for `days` (negative: it
 * expired that many days ago): NAME.pem and NAME-key.pem, EC P-256.
 */
UF_UNUSED static void
uf_leaf(const char *name, const char *cn, int days)
{
	uf_sh("cd %s && openssl req -new -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout %s-key.pem -subj /CN=%s "
	    "-out %s.csr 2>/dev/null && openssl x509 -req -in %s.csr -CA ca.pem "
	    "-CAkey ca-key.pem -CAcreateserial -days %d -out %s.pem 2>/dev/null",
	    uf_dir, name, cn, name, name, days, name);
}

/* Make uf_dir and the CA in it. */
UF_UNUSED static int
uf_setup(void)
{
	if (mkdtemp(uf_dir) == NULL)
		return (-1);
	uf_sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -subj "
	    "'/CN=unit CA' -days 30 -out ca.pem 2>/dev/null", uf_dir);
	return (0);
}

UF_UNUSED static void
uf_teardown(void)
{
	uf_sh("rm -rf %s", uf_dir);
}

/*
 * Capture what is written to stdout and stderr between uf_capture() and
 * uf_release(): both go to files, and uf_release() returns their text
 * (static buffers, until the next capture).
 */
static int uf_saved[2] = { -1, -1 };
static char uf_out[65536], uf_err[65536];

UF_UNUSED static void
uf_capture(void)
{
	char out[512], err[512];
	int fd[2], i;

	fflush(stdout);
	fflush(stderr);
	snprintf(out, sizeof(out), "%s/captured.out", uf_dir);
	snprintf(err, sizeof(err), "%s/captured.err", uf_dir);
	fd[0] = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
	fd[1] = open(err, O_RDWR | O_CREAT | O_TRUNC, 0600);
	for (i = 0; i < 2; i++) {
		assert_true(fd[i] >= 0);
		uf_saved[i] = dup(i + 1);
		assert_int_equal(dup2(fd[i], i + 1), i + 1);
		close(fd[i]);
	}
}

UF_UNUSED static void
uf_slurp(const char *name, char *buf, size_t len)
{
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", uf_dir, name);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

UF_UNUSED static void
uf_release(void)
{
	int i;

	fflush(stdout);
	fflush(stderr);
	for (i = 0; i < 2; i++) {
		assert_int_equal(dup2(uf_saved[i], i + 1), i + 1);
		close(uf_saved[i]);
	}
	uf_slurp("captured.out", uf_out, sizeof(uf_out));
	uf_slurp("captured.err", uf_err, sizeof(uf_err));
}

#endif
