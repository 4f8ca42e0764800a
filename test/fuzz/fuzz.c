/*
 * fuzz.c: the helpers of fuzz.h.
 */
#include <sys/mman.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

size_t
fuzz_split(const uint8_t *data, size_t size, struct fuzz_part *parts,
    size_t max)
{
	const size_t seplen = sizeof(FUZZ_SEP) - 1;
	const uint8_t *p = data, *end = data + size, *s;
	size_t n = 0;

	while (n + 1 < max && (s = memmem(p, (size_t)(end - p), FUZZ_SEP,
	    seplen)) != NULL) {
		parts[n].fp_p = p;
		parts[n].fp_n = (size_t)(s - p);
		n++;
		p = s + seplen;
	}
	parts[n].fp_p = p;
	parts[n].fp_n = (size_t)(end - p);
	return (n + 1);
}

int
fuzz_memfd(const char *name)
{
	int fd;

	if ((fd = memfd_create(name, MFD_CLOEXEC)) == -1) {
		fprintf(stderr, "fuzz: memfd_create %s: %s\n", name,
		    strerror(errno));
		exit(1);
	}
	return (fd);
}

const char *
fuzz_memfd_path(int fd)
{
	static char paths[64][32];

	if (fd < 0 || fd >= 64) {
		fprintf(stderr, "fuzz: descriptor %d out of range\n", fd);
		exit(1);
	}
	snprintf(paths[fd], sizeof(paths[fd]), "/proc/self/fd/%d", fd);
	return (paths[fd]);
}

void
fuzz_memfd_set(int fd, const void *p, size_t n)
{
	if (ftruncate(fd, 0) == -1 ||
	    (n > 0 && pwrite(fd, p, n, 0) != (ssize_t)n)) {
		fprintf(stderr, "fuzz: cannot write a memfd: %s\n",
		    strerror(errno));
		exit(1);
	}
}

void
fuzz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "fuzz: %s:%d: property broken: %s\n", file, line,
	    what);
	abort();
}

void
fuzz_nonblock_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1 ||
	    fcntl(sv[0], F_SETFL, O_NONBLOCK) == -1 ||
	    fcntl(sv[1], F_SETFL, O_NONBLOCK) == -1) {
		fprintf(stderr, "fuzz: socketpair: %s\n", strerror(errno));
		exit(1);
	}
}

size_t
fuzz_drain(int fd)
{
	uint8_t buf[16384];
	size_t total = 0;
	ssize_t r;

	while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		total += (size_t)r;
	return (total);
}
