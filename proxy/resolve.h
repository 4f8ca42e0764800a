/*
 * resolve.h: looking up a target host name without blocking the event
 * loop.  The system's resolver runs in a small pool of threads; the answer
 * comes back as a callback in the loop that asked.
 */
#ifndef DMTLS_RESOLVE_H
#define DMTLS_RESOLVE_H

#include <sys/socket.h>

#include <event2/event.h>

#define RESOLVE_THREADS		4	/* lookups running at once, at most */
#define RESOLVE_QUEUE_MAX	4096	/* lookups waiting for a thread */
#define RESOLVE_ADDRS_MAX	16	/* addresses kept of one answer */

struct resolve_req;

/* The addresses of one name, in the order the resolver gave them. */
struct resolve_answer {
	int			ra_n;
	struct {
		struct sockaddr_storage	ss;
		socklen_t		len;
	}			ra_v[RESOLVE_ADDRS_MAX];
};

/*
 * resolve_cb(arg, ans, err): a lookup ended, in the loop that started it.
 * ans (malloc'ed, the callee's to free) holds at least one address, or is
 * NULL and err says why ("cannot resolve HOST: ...").  The request is gone
 * by then: the callee clears its handle and never cancels it.
 */
typedef void resolve_cb(void *, struct resolve_answer *, const char *);

/*
 * resolve_start(base, host, port, cb, arg): look host:port up in a
 * resolver thread (started on first use, by the calling thread) and call
 * cb(arg, ...) from base's loop when done.  Returns the request, or NULL
 * (out of memory, no thread, queue full) with a reason in err; then cb is
 * never called.
 */
struct resolve_req *resolve_start(struct event_base *, const char *,
    const char *, resolve_cb *, void *, char *, size_t);

/*
 * resolve_cancel(rq): from base's thread, before the callback: the
 * callback is never called and arg is never touched again.  A lookup
 * already running finishes in its thread and its answer is dropped there.
 */
void resolve_cancel(struct resolve_req *);

#endif
