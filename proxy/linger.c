/*
 * linger.c: closing a socket whose peer may still be sending.
 *
 * close() on a socket with unread input makes the kernel send a reset at
 * once; a reset throws away what the socket still had to send, and makes
 * the peer's next write fail ("broken pipe") before it reads what it was
 * sent.  So a peer told "no" by an alert (Go's crypto/tls writes its first
 * request before it reads the server's verdict under TLS 1.3) would see
 * only the reset.  linger_close() sends a FIN after the queued bytes and
 * keeps reading, dropping what arrives, until the peer closes too or an
 * absolute deadline passes.  The event loop never blocks on it.
 */
#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "linger.h"

struct lingerer {
	int			 lg_fd;
	int64_t			 lg_deadline;	/* CLOCK_MONOTONIC ms */
	struct event		 lg_ev;
	TAILQ_ENTRY(lingerer)	 lg_entry;
};

static __thread TAILQ_HEAD(, lingerer) lingering;
static __thread int nlingering, inited;

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void
lg_free(struct lingerer *lg)
{
	event_del(&lg->lg_ev);
	TAILQ_REMOVE(&lingering, lg, lg_entry);
	nlingering--;
	close(lg->lg_fd);
	free(lg);
}

static void
lg_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lingerer *lg = arg;
	char junk[16384];
	struct timeval tv;
	int64_t left;
	ssize_t n;
	int i;

	/* A bounded batch per wakeup: a peer that keeps sending cannot hold
	 * the loop, only this socket until the deadline. */
	for (i = 0; (what & EV_READ) && i < 16; i++) {
		n = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN &&
		    errno != EWOULDBLOCK && errno != EINTR)) {
			lg_free(lg);	/* the peer is done too */
			return;
		}
		if (n == -1)
			break;
	}
	left = lg->lg_deadline - mono_ms();
	if (left <= 0) {
		lg_free(lg);
		return;
	}
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	event_add(&lg->lg_ev, &tv);
}

void
linger_close(struct event_base *base, int fd)
{
	struct lingerer *lg;
	struct timeval tv = { LINGER_MS / 1000, (LINGER_MS % 1000) * 1000 };

	if (fd == -1)
		return;
	if (!inited) {
		TAILQ_INIT(&lingering);
		inited = 1;
	}
	if (nlingering >= LINGER_MAX || (lg = calloc(1, sizeof(*lg))) == NULL) {
		close(fd);
		return;
	}
	(void)shutdown(fd, SHUT_WR);
	lg->lg_fd = fd;
	lg->lg_deadline = mono_ms() + LINGER_MS;
	event_assign(&lg->lg_ev, base, fd, EV_READ, lg_cb, lg);
	TAILQ_INSERT_TAIL(&lingering, lg, lg_entry);
	nlingering++;
	event_add(&lg->lg_ev, &tv);
}

void
linger_drain(void)
{
	struct lingerer *lg;

	if (!inited)
		return;
	while ((lg = TAILQ_FIRST(&lingering)) != NULL)
		lg_free(lg);
}
