/*
 * worker.h: worker threads, each with its own event loop and the list of
 * the connections open in it.  A worker knows nothing of routes: its
 * owner puts listeners in its loop (w_base) and tells it when to drain
 * and when to cut what is still open.
 */
#ifndef DMTLS_WORKER_H
#define DMTLS_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "conn.h"

struct worker {
	int			 w_id;
	struct event_base	*w_base;
	pthread_t		 w_thread;
	TAILQ_HEAD(, conn)	 w_conns;
	int			 w_nconns;
	int			 w_draining;	/* the loop ends with the last conn */
	atomic_int		 w_forced;	/* connections were cut */
	struct event		 w_kill;	/* activated from any thread */
};

/* worker_init(w, id): w's event loop, not running yet.  0 or -1. */
int worker_init(struct worker *, int);

/* worker_run(w): run w's loop in a thread of its own.  0 or -1. */
int worker_run(struct worker *);

/*
 * worker_drain(w): in w's thread: end the loop once no connection is open
 * (at once when none is).
 */
void worker_drain(struct worker *);

/*
 * worker_kill(w): from any thread: close every connection still open in
 * w ("shutdown timeout"), then end its loop.
 */
void worker_kill(struct worker *);

/* worker_free(w): after the thread ended: free the loop. */
void worker_free(struct worker *);

/* worker_conn_add/del(w, c): the worker's list of open connections. */
void worker_conn_add(struct worker *, struct conn *);
void worker_conn_del(struct worker *, struct conn *);

#endif
