/*
 * fuzz.h: what the libFuzzer targets of test/fuzz share: splitting one
 * input into several files or streams, files without a disk (memfd), the
 * test PKI (pki.h) and a check that aborts, so a broken property is a
 * crash the fuzzer keeps.
 */
#ifndef DMTLS_FUZZ_H
#define DMTLS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *, char ***);
int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Between the files of one input (certset, config). */
#define FUZZ_SEP	"\n--8<--\n"
#define FUZZ_MAXPARTS	8

/* One part of an input: points into it. */
struct fuzz_part {
	const uint8_t	*fp_p;
	size_t		 fp_n;
};

/*
 * fuzz_split(data, size, parts, max): cut data at each FUZZ_SEP into at
 * most max parts (the last one keeps any further separators).  Returns
 * the number of parts, at least 1.
 */
size_t fuzz_split(const uint8_t *, size_t, struct fuzz_part *, size_t);

/*
 * fuzz_memfd(name): an empty in-memory file, for code that reads paths;
 * fuzz_memfd_path(fd) is its path (/proc/self/fd/N, static storage per
 * fd).  Exits when there is none: the target cannot run.
 */
int fuzz_memfd(const char *);
const char *fuzz_memfd_path(int);

/* fuzz_memfd_set(fd, p, n): make the file hold exactly p[0..n). */
void fuzz_memfd_set(int, const void *, size_t);

/*
 * fuzz_check(cond, what): a property every input must keep; when it does
 * not, say what broke and abort (the fuzzer saves the input).
 */
#define fuzz_check(cond, what)	do {					\
	if (!(cond))							\
		fuzz_fail(__FILE__, __LINE__, (what));			\
} while (0)
void fuzz_fail(const char *, int, const char *) __attribute__((noreturn));

/* What fuzz_certset_of() builds from the test PKI (pki.h). */
enum fuzz_pki {
	FUZZ_SERVER,		/* server context: CA, server leaf and key */
	FUZZ_SERVER_NOVERIFY,	/* ... that asks no client certificate */
	FUZZ_CLIENT,		/* client context: the CA only */
	FUZZ_PEER_SERVER	/* the other end of a client: a server context
				 * that asks no certificate */
};

struct certset;

/*
 * fuzz_certset_of(which): a certificate set made by policy/certset.c from
 * the test PKI, built once and kept (the verify callback is dmtls's own).
 * Exits when it cannot be built.
 */
struct certset *fuzz_certset_of(enum fuzz_pki);

/* fuzz_nonblock_pair(sv): a non-blocking AF_UNIX stream socketpair. */
void fuzz_nonblock_pair(int[2]);

/* fuzz_drain(fd): read and drop whatever fd holds; the bytes read. */
size_t fuzz_drain(int);

#endif
