/*
 * addr.c: address parsing, the blocking resolver call, listeners and
 * non-blocking connects.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"

int
addr_lookup(const char *host, const char *port, struct addrinfo **res,
    char *err, size_t errlen)
{
	struct addrinfo hints;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, res)) != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", host,
		    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		*res = NULL;
		return (-1);
	}
	return (0);
}

/* Parse s into a; resolve a host name only when resolve is set. */
static int
parse(const char *s, struct addr *a, int resolve, char *err, size_t errlen)
{
	struct addrinfo hints, *res;
	struct sockaddr_un *sun;
	const char *port, *end;
	char host[256];
	size_t hl;
	int rc;

	memset(a, 0, sizeof(*a));
	if (strncmp(s, "systemd:", 8) == 0) {
		if (s[8] == '\0' || strlen(s + 8) >= sizeof(a->a_host)) {
			snprintf(err, errlen, "systemd: needs the socket's "
			    "name, as in FileDescriptorName= or the unit name");
			return (-1);
		}
		snprintf(a->a_host, sizeof(a->a_host), "%s", s + 8);
		a->a_systemd = 1;
		return (0);
	}
	if (strncmp(s, "unix:", 5) == 0) {
		sun = (struct sockaddr_un *)&a->a_ss;
		if (s[5] == '\0' || strlen(s + 5) >= sizeof(sun->sun_path)) {
			snprintf(err, errlen, "unix socket path is empty or "
			    "longer than %zu bytes", sizeof(sun->sun_path) - 1);
			return (-1);
		}
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, s + 5);
		a->a_len = sizeof(*sun);
		a->a_unix = 1;
		return (0);
	}
	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL || end[1] != ':') {
			snprintf(err, errlen, "expected [V6]:PORT");
			return (-1);
		}
		hl = (size_t)(end - s - 1);
		port = end + 2;
		s++;
	} else {
		if ((port = strrchr(s, ':')) == NULL) {
			snprintf(err, errlen, "expected HOST:PORT, [V6]:PORT "
			    "or unix:/path");
			return (-1);
		}
		hl = (size_t)(port - s);
		port++;
	}
	if (hl == 0 || hl >= sizeof(host) || *port == '\0' ||
	    strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535) {
		snprintf(err, errlen, "expected HOST:PORT with a port "
		    "number 0-65535");
		return (-1);
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	snprintf(a->a_host, sizeof(a->a_host), "%s", host);
	snprintf(a->a_port, sizeof(a->a_port), "%s", port);
	/* A literal address never reaches the resolver. */
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
	if ((rc = getaddrinfo(host, port, &hints, &res)) == 0)
		a->a_is_ip = 1;
	else if (!resolve) {
		a->a_name = 1;
		return (0);
	} else if (addr_lookup(host, port, &res, err, errlen) == -1)
		return (-1);
	memcpy(&a->a_ss, res->ai_addr, res->ai_addrlen);
	a->a_len = res->ai_addrlen;
	freeaddrinfo(res);
	return (0);
}

int
addr_parse(const char *s, struct addr *a, char *err, size_t errlen)
{
	return (parse(s, a, 1, err, errlen));
}

int
addr_parse_target(const char *s, struct addr *a, char *err, size_t errlen)
{
	return (parse(s, a, 0, err, errlen));
}

const char *
addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	const size_t pathoff = offsetof(struct sockaddr_un, sun_path);
	const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
	char h[INET6_ADDRSTRLEN];
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;
	size_t plen;

	/* Only the len bytes the kernel filled in are the peer's. */
	if ((size_t)len < sizeof(sa->sa_family)) {
		snprintf(buf, buflen, "?");
		return (buf);
	}
	switch (sa->sa_family) {
	case AF_INET:
		if ((size_t)len < sizeof(*sin))
			goto unknown;
		sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, h, sizeof(h));
		snprintf(buf, buflen, "%s:%u", h, ntohs(sin->sin_port));
		break;
	case AF_INET6:
		if ((size_t)len < sizeof(*sin6))
			goto unknown;
		sin6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, h, sizeof(h));
		snprintf(buf, buflen, "[%s]:%u", h, ntohs(sin6->sin6_port));
		break;
	case AF_UNIX:
		/* An unbound peer has no path at all; an abstract one
		 * starts with a NUL; a path may lack its final NUL. */
		plen = (size_t)len > pathoff ? (size_t)len - pathoff : 0;
		if (plen > sizeof(sun->sun_path))
			plen = sizeof(sun->sun_path);
		if (plen == 0)
			snprintf(buf, buflen, "unix:(unnamed)");
		else if (sun->sun_path[0] == '\0')
			snprintf(buf, buflen, "unix:@");
		else
			snprintf(buf, buflen, "unix:%.*s",
			    (int)strnlen(sun->sun_path, plen), sun->sun_path);
		break;
	default:
		goto unknown;
	}
	return (buf);
unknown:
	snprintf(buf, buflen, "?");
	return (buf);
}

/* 1 when a process accepts connections on the unix socket a (not stale). */
static int
unix_live(const struct addr *a)
{
	int fd, live;

	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return (0);
	/* A blocking connect to a unix socket answers at once: refused
	 * when nobody listens, accepted (or queued) when someone does. */
	live = connect(fd, (const struct sockaddr *)&a->a_ss, a->a_len) == 0 ||
	    errno == EAGAIN;
	close(fd);
	return (live);
}

int
addr_listen(const struct addr *a, int reuseport, char *err, size_t errlen)
{
	int fd, one = 1;

	fd = socket(a->a_ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return (-1);
	}
	if (!a->a_unix) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (reuseport)
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
			    sizeof(one));
	} else {
		struct stat st;
		const char *p = ((const struct sockaddr_un *)&a->a_ss)->sun_path;
		/* Replace a stale socket file, never any other file, and
		 * never one that a live process still listens on. */
		if (lstat(p, &st) == 0 && S_ISSOCK(st.st_mode)) {
			if (unix_live(a)) {
				snprintf(err, errlen, "address already in use "
				    "(another process listens on %s)", p);
				close(fd);
				return (-1);
			}
			unlink(p);
		}
	}
	if (bind(fd, (const struct sockaddr *)&a->a_ss, a->a_len) == -1) {
		snprintf(err, errlen, "%s", errno == EADDRINUSE ?
		    "address already in use (another process listens there)" :
		    strerror(errno));
		close(fd);
		return (-1);
	}
	if (listen(fd, 1024) == -1) {
		snprintf(err, errlen, "listen: %s", strerror(errno));
		close(fd);
		return (-1);
	}
	return (fd);
}

int
addr_connect(const struct addr *a)
{
	return (addr_dial((const struct sockaddr *)&a->a_ss, a->a_len));
}

int
addr_dial(const struct sockaddr *sa, socklen_t len)
{
	int fd, saved;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return (-1);
	sock_tune(fd);
	if (connect(fd, sa, len) == -1 && errno != EINPROGRESS) {
		saved = errno;
		close(fd);
		errno = saved;
		return (-1);
	}
	return (fd);
}

int
addr_systemd_fd(const char *name, char *err, size_t errlen)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES"), *p, *colon;
	long n, i;
	size_t len;
	int fd, fl;

	if (pid == NULL || nfds == NULL || strtol(pid, NULL, 10) != getpid()) {
		snprintf(err, errlen, "no sockets were passed by systemd "
		    "(start dmtls from a unit with a matching .socket unit)");
		return (-1);
	}
	n = strtol(nfds, NULL, 10);
	p = names;
	for (i = 0; i < n; i++) {
		const char *this = "unknown";
		char buf[256];

		if (p != NULL) {
			colon = strchr(p, ':');
			len = colon ? (size_t)(colon - p) : strlen(p);
			if (len >= sizeof(buf))
				len = sizeof(buf) - 1;
			memcpy(buf, p, len);
			buf[len] = '\0';
			this = buf;
			p = colon ? colon + 1 : NULL;
		}
		if (strcmp(this, name) != 0)
			continue;
		fd = 3 + (int)i;
		if ((fl = fcntl(fd, F_GETFL)) == -1) {
			snprintf(err, errlen, "socket %s (fd %d) is not open",
			    name, fd);
			return (-1);
		}
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		return (fd);
	}
	snprintf(err, errlen, "systemd passed no socket named %s "
	    "(LISTEN_FDNAMES=%s)", name, names ? names : "");
	return (-1);
}

void
sock_tune(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
