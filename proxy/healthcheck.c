/*
 * healthcheck.c: `dmtls healthcheck [-c FILE | ADDR]`.  One GET /healthz on
 * one connection (the status server answers one request per connection and
 * closes it), bounded in time and in bytes read; the answer is a peer's, so
 * what is printed of it is escaped to printable ASCII.
 */
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "conffile.h"
#include "healthcheck.h"
#include "util.h"

#define HC_DEADLINE_MS	5000	/* connect, send and read, all together */
#define HC_READ_MAX	16384	/* bytes of the answer read at most */
#define HC_PRINT_MAX	1024	/* bytes of the answer's body printed at most */

static const char cmd[] = "dmtls healthcheck";

static int
usage(const char *why, const char *arg)
{
	fprintf(stderr, "%s: %s%s\nusage: dmtls healthcheck [-c FILE | ADDR]\n",
	    cmd, why, arg != NULL ? arg : "");
	return (EXIT_USAGE);
}

/* Print n bytes of peer text to f, every byte outside printable ASCII
 * (except a newline) as \xHH and a CR before a newline dropped. */
static void
put_escaped(FILE *f, const char *s, size_t n, const char *indent)
{
	size_t i;
	int bol = 1;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (bol && indent != NULL)
			fputs(indent, f);
		bol = 0;
		if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
			continue;
		if (c == '\n') {
			fputc('\n', f);
			bol = 1;
		} else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	if (!bol)
		fputc('\n', f);
}

/* Wait until fd is ready for ev or the deadline passes; 0, or -1 (timed
 * out, errno ETIMEDOUT). */
static int
wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p;
	int64_t left;
	int n;

	for (;;) {
		if ((left = deadline - now_ms()) <= 0) {
			errno = ETIMEDOUT;
			return (-1);
		}
		p.fd = fd;
		p.events = ev;
		p.revents = 0;
		n = poll(&p, 1, (int)left);
		if (n > 0)
			return (0);
		if (n == -1 && errno != EINTR)
			return (-1);
	}
}

/* A wildcard address means "this host": ask its loopback. */
static void
wildcard_to_loopback(struct addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->a_ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->a_ss;

	if (a->a_ss.ss_family == AF_INET &&
	    sin->sin_addr.s_addr == htonl(INADDR_ANY))
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (a->a_ss.ss_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
		sin6->sin6_addr = in6addr_loopback;
}

/*
 * Connect to a, send the request, read the answer into buf (at most len
 * bytes) until EOF.  Returns the bytes read, or -1 with a reason in err.
 */
static ssize_t
fetch(const struct addr *a, const char *host, char *buf, size_t len,
    char *err, size_t errlen)
{
	char req[512];
	int64_t deadline = now_ms() + HC_DEADLINE_MS;
	size_t off = 0, sent = 0, reqlen;
	socklen_t sl = sizeof(int);
	ssize_t n;
	int fd, soerr = 0;

	reqlen = (size_t)snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\n"
	    "Host: %s\r\nUser-Agent: dmtls-healthcheck\r\nAccept: */*\r\n"
	    "Connection: close\r\n\r\n", host);
	if (reqlen >= sizeof(req))
		reqlen = sizeof(req) - 1;
	if ((fd = addr_connect(a)) == -1) {
		snprintf(err, errlen, "cannot connect: %s (is dmtls running, "
		    "with its status listener on this address?)",
		    strerror(errno));
		return (-1);
	}
	if (wait_fd(fd, POLLOUT, deadline) == -1)
		goto fail_connect;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
		soerr = errno;
	if (soerr != 0) {
		errno = soerr;
		goto fail_connect;
	}
	while (sent < reqlen) {
		n = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLOUT, deadline) == -1)
				goto fail_io;
			continue;
		}
		if (n == -1)
			goto fail_io;
		sent += (size_t)n;
	}
	while (off < len) {
		n = recv(fd, buf + off, len - off, 0);
		if (n == 0)
			break;
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLIN, deadline) == -1)
				goto fail_io;
			continue;
		}
		if (n == -1) {
			if (off > 0)	/* a reset after the answer */
				break;
			goto fail_io;
		}
		off += (size_t)n;
	}
	close(fd);
	return ((ssize_t)off);

fail_connect:
	if (errno == ETIMEDOUT)
		snprintf(err, errlen, "connect timed out after %dms",
		    HC_DEADLINE_MS);
	else
		snprintf(err, errlen, "cannot connect: %s (is dmtls running, "
		    "with its status listener on this address?)",
		    strerror(errno));
	close(fd);
	return (-1);
fail_io:
	if (errno == ETIMEDOUT)
		snprintf(err, errlen, "timed out after %dms waiting for the "
		    "answer to GET /healthz (%zu bytes read)", HC_DEADLINE_MS,
		    off);
	else
		snprintf(err, errlen, "GET /healthz failed: %s",
		    strerror(errno));
	close(fd);
	return (-1);
}

/* Judge an answer; returns the exit status and prints why. */
static int
judge(const char *target, const char *buf, size_t n)
{
	const char *body, *eol;
	size_t hl;
	int code;

	if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' ||
	    buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' ||
	    buf[11] < '0' || buf[11] > '9') {
		fprintf(stderr, "%s: %s: not an HTTP answer: ", cmd, target);
		put_escaped(stderr, buf, n < 64 ? n : 64, NULL);
		if (n == 0)
			fputc('\n', stderr);
		return (EXIT_RUNTIME);
	}
	code = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	body = memmem(buf, n, "\r\n\r\n", 4);
	body = body != NULL ? body + 4 : buf + n;
	hl = (size_t)(body - buf);
	if ((eol = memchr(buf, '\r', hl)) == NULL)
		eol = buf + 12;
	if (code == 200) {
		printf("%s: %s: ", cmd, target);
		put_escaped(stdout, body, n - hl < 64 ? n - hl : 64, NULL);
		if (n == hl)
			printf("200\n");
		return (0);
	}
	fprintf(stderr, "%s: %s: /healthz answered ", cmd, target);
	put_escaped(stderr, buf + 9, (size_t)(eol - buf - 9), NULL);
	if (n > hl) {
		put_escaped(stderr, body, n - hl < HC_PRINT_MAX ? n - hl :
		    HC_PRINT_MAX, "  ");
		if (n - hl > HC_PRINT_MAX)
			fprintf(stderr, "  (%zu more bytes not shown)\n",
			    n - hl - HC_PRINT_MAX);
	}
	return (EXIT_RUNTIME);
}

int
healthcheck_main(int argc, char **argv)
{
	struct config cf;
	struct addr a;
	const char *path = NULL, *host;
	char *target = NULL, err[1024], *buf = NULL;
	ssize_t n;
	int rv = EXIT_RUNTIME;

	if (argc == 1)
		path = CONFIG_DEFAULT_PATH;
	else if (argc == 3 && (strcmp(argv[1], "-c") == 0 ||
	    strcmp(argv[1], "--config") == 0 ||
	    strcmp(argv[1], "-config") == 0))
		path = argv[2];
	else if (argc == 2 && argv[1][0] != '-')
		target = argv[1];
	else
		return (usage("unexpected argument ", argv[argc > 3 ? 3 :
		    argc - 1]));

	if (path != NULL) {
		if (config_load(path, &cf, err, sizeof(err)) == -1) {
			fprintf(stderr, "%s: %s\n", cmd, err);
			return (EXIT_RUNTIME);
		}
		if (cf.cf_g.status == NULL) {
			fprintf(stderr, "%s: %s sets no status address, so there "
			    "is no /healthz to ask; set one, for example "
			    "status = \"127.0.0.1:9261\";\n", cmd, path);
			config_free(&cf);
			return (EXIT_RUNTIME);
		}
		target = strdup(cf.cf_g.status);
		config_free(&cf);
		if (target == NULL) {
			fprintf(stderr, "%s: out of memory\n", cmd);
			return (EXIT_RUNTIME);
		}
	}
	if (addr_parse(target, &a, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s: %s\n", cmd, target, err);
		rv = path != NULL ? EXIT_RUNTIME : EXIT_USAGE;
		goto out;
	}
	if (a.a_systemd) {
		fprintf(stderr, "%s: status %s is a socket systemd hands to "
		    "dmtls; ask its address instead (dmtls healthcheck "
		    "HOST:PORT)\n", cmd, target);
		goto out;
	}
	wildcard_to_loopback(&a);
	host = a.a_unix ? "localhost" : target;
	if ((buf = malloc(HC_READ_MAX)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", cmd);
		goto out;
	}
	if ((n = fetch(&a, host, buf, HC_READ_MAX, err, sizeof(err))) == -1) {
		fprintf(stderr, "%s: %s: %s\n", cmd, target, err);
		goto out;
	}
	rv = judge(target, buf, (size_t)n);
out:
	free(buf);
	if (path != NULL)
		free(target);
	return (rv);
}
