/*
 * resolve.c: target host names, looked up for every connection by a small
 * bounded pool of threads calling getaddrinfo(), each answer handed back
 * to the loop that asked through an event of its own.
 *
 * Why getaddrinfo() in our own threads:
 * - It is the system's resolver, as it is at that moment: glibc reads
 *   /etc/hosts on every lookup and rereads /etc/resolv.conf, nsswitch.conf
 *   and gai.conf when they change, so a restarted container's new address
 *   (Docker's embedded DNS, a rewritten hosts file) is followed at once.
 * - libevent's evdns was rejected: it reads /etc/hosts and resolv.conf
 *   once, when the evdns_base is made, and ignores nsswitch.conf.
 * - glibc's getaddrinfo_a() was rejected: it reports completion by a
 *   signal or by a new thread per answer (SIGEV_THREAD), neither of which
 *   fits a multi-loop program; a lookup already running cannot be
 *   cancelled, so its gaicb must outlive the connection anyway, which is
 *   all the bookkeeping of this file; it spawns up to 20 threads of its
 *   own; and musl (Alpine images) does not have it.
 * - A thread pool is bounded (RESOLVE_THREADS threads, RESOLVE_QUEUE_MAX
 *   waiting lookups) and started lazily, by the first worker thread that
 *   needs a lookup, never by the main thread at start-up: Landlock and
 *   seccomp confine a thread and the threads it creates later, so the
 *   resolver threads inherit the workers' sandbox.  Numeric addresses never
 *   come here (addr_parse_target fills them in at load).
 *
 * Lifetime: a request has two references, the asker's and the pool's,
 * under one lock.  The pool drops its own once the lookup ends, after
 * activating the asker's event unless the request was cancelled; the
 * asker's goes in the callback or in resolve_cancel().  So a connection
 * that closes while its lookup runs is never touched again: the answer is
 * dropped by the thread that made it.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <netdb.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event_struct.h>

#include "addr.h"
#include "resolve.h"

#define RQ_MAGIC	0x72736c76U	/* "rslv" */

struct resolve_req {
	uint32_t		 rq_magic;
	int			 rq_refs;	/* under pool_lock */
	int			 rq_cancelled;
	struct event		 rq_ev;		/* in the asker's loop */
	resolve_cb		*rq_cb;
	void			*rq_arg;
	struct resolve_answer	*rq_ans;	/* the result, until delivered */
	char			 rq_err[300];
	char			 rq_host[256];
	char			 rq_port[8];
	TAILQ_ENTRY(resolve_req) rq_entry;
};

/* The pool: process-wide, like the resolver it runs. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static TAILQ_HEAD(, resolve_req) pool_q = TAILQ_HEAD_INITIALIZER(pool_q);
static int pool_threads, pool_idle, pool_queued;

/* Drop a reference, under pool_lock; the last one frees. */
static void
rq_unref(struct resolve_req *rq)
{
	assert(rq->rq_magic == RQ_MAGIC && rq->rq_refs > 0);
	if (--rq->rq_refs > 0)
		return;
	free(rq->rq_ans);
	rq->rq_magic = 0;
	free(rq);
}

/* The addresses of res that a TCP connect can use, in order; NULL when
 * none (err says so) or out of memory. */
static struct resolve_answer *
answer_of(const struct addrinfo *res, const char *host, char *err,
    size_t errlen)
{
	struct resolve_answer *ans;
	const struct addrinfo *ai;

	if ((ans = calloc(1, sizeof(*ans))) == NULL) {
		snprintf(err, errlen, "cannot resolve %s: out of memory", host);
		return (NULL);
	}
	for (ai = res; ai != NULL && ans->ra_n < RESOLVE_ADDRS_MAX;
	    ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(ans->ra_v[0].ss))
			continue;
		memcpy(&ans->ra_v[ans->ra_n].ss, ai->ai_addr, ai->ai_addrlen);
		ans->ra_v[ans->ra_n].len = ai->ai_addrlen;
		ans->ra_n++;
	}
	if (ans->ra_n == 0) {
		snprintf(err, errlen, "cannot resolve %s: no IPv4 or IPv6 "
		    "address", host);
		free(ans);
		return (NULL);
	}
	return (ans);
}

/* One resolver thread: take a lookup, run it, hand the answer back. */
static void *
pool_main(void *arg)
{
	struct resolve_answer *ans;
	struct resolve_req *rq;
	struct addrinfo *res;
	char err[300];

	(void)arg;
	pthread_mutex_lock(&pool_lock);
	for (;;) {
		while ((rq = TAILQ_FIRST(&pool_q)) == NULL) {
			pool_idle++;
			pthread_cond_wait(&pool_cond, &pool_lock);
			pool_idle--;
		}
		TAILQ_REMOVE(&pool_q, rq, rq_entry);
		pool_queued--;
		if (rq->rq_cancelled) {
			rq_unref(rq);
			continue;
		}
		pthread_mutex_unlock(&pool_lock);

		/* rq_host and rq_port are never written after the start. */
		err[0] = '\0';
		ans = NULL;
		if (addr_lookup(rq->rq_host, rq->rq_port, &res, err,
		    sizeof(err)) == 0) {
			ans = answer_of(res, rq->rq_host, err, sizeof(err));
			freeaddrinfo(res);
		}

		pthread_mutex_lock(&pool_lock);
		if (!rq->rq_cancelled) {
			rq->rq_ans = ans;
			ans = NULL;
			snprintf(rq->rq_err, sizeof(rq->rq_err), "%s", err);
			event_active(&rq->rq_ev, 0, 0);
		}
		rq_unref(rq);
		free(ans);		/* a cancelled lookup's answer */
	}
	return (NULL);
}

/* Start one more resolver thread, all signals blocked in it (they belong
 * to the main thread's loop).  Under pool_lock.  0 or -1. */
static int
pool_grow(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (pthread_attr_init(&attr) != 0)
		return (-1);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&t, &attr, pool_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		errno = rc;
		return (-1);
	}
	pool_threads++;
	return (0);
}

/* In the asker's loop: the lookup ended; deliver it. */
static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolve_req *rq = arg;
	struct resolve_answer *ans;
	resolve_cb *cb;
	void *cbarg;
	char err[sizeof(rq->rq_err)];

	(void)fd;
	(void)what;
	pthread_mutex_lock(&pool_lock);
	assert(rq->rq_magic == RQ_MAGIC && !rq->rq_cancelled);
	ans = rq->rq_ans;
	rq->rq_ans = NULL;
	memcpy(err, rq->rq_err, sizeof(err));
	cb = rq->rq_cb;
	cbarg = rq->rq_arg;
	rq_unref(rq);		/* the asker's: the pool dropped its own */
	pthread_mutex_unlock(&pool_lock);
	cb(cbarg, ans, err);
}

struct resolve_req *
resolve_start(struct event_base *base, const char *host, const char *port,
    resolve_cb *cb, void *arg, char *err, size_t errlen)
{
	struct resolve_req *rq;

	if ((rq = calloc(1, sizeof(*rq))) == NULL) {
		snprintf(err, errlen, "cannot resolve %s: out of memory", host);
		return (NULL);
	}
	rq->rq_magic = RQ_MAGIC;
	rq->rq_refs = 2;
	rq->rq_cb = cb;
	rq->rq_arg = arg;
	snprintf(rq->rq_host, sizeof(rq->rq_host), "%s", host);
	snprintf(rq->rq_port, sizeof(rq->rq_port), "%s", port);
	event_assign(&rq->rq_ev, base, -1, 0, done_cb, rq);

	pthread_mutex_lock(&pool_lock);
	if (pool_queued >= RESOLVE_QUEUE_MAX) {
		snprintf(err, errlen, "cannot resolve %s: %d lookups already "
		    "wait for the resolver", host, pool_queued);
		goto fail;
	}
	if (pool_idle <= pool_queued && pool_threads < RESOLVE_THREADS &&
	    pool_grow() == -1 && pool_threads == 0) {
		snprintf(err, errlen, "cannot resolve %s: cannot start a "
		    "resolver thread: %s", host, strerror(errno));
		goto fail;
	}
	TAILQ_INSERT_TAIL(&pool_q, rq, rq_entry);
	pool_queued++;
	pthread_cond_signal(&pool_cond);
	pthread_mutex_unlock(&pool_lock);
	return (rq);
fail:
	pthread_mutex_unlock(&pool_lock);
	rq->rq_magic = 0;
	free(rq);
	return (NULL);
}

void
resolve_cancel(struct resolve_req *rq)
{
	if (rq == NULL)
		return;
	pthread_mutex_lock(&pool_lock);
	assert(rq->rq_magic == RQ_MAGIC && !rq->rq_cancelled);
	rq->rq_cancelled = 1;
	/* An answer may be waiting in the loop already: never deliver it. */
	event_del(&rq->rq_ev);
	rq_unref(rq);
	pthread_mutex_unlock(&pool_lock);
}
