/*
 * worker.h: worker threads (one event loop each) and the daemon that owns
 * the routes and workers.
 */
#ifndef DMTLS_WORKER_H
#define DMTLS_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "conf.h"

struct conn;
struct route_rt;

struct worker {
	int			 w_id;
	struct daemon		*w_d;
	struct event_base	*w_base;
	pthread_t		 w_thread;
	TAILQ_HEAD(, conn)	 w_conns;
	int			 w_nconns;
	int			 w_draining;	/* listeners closed, waiting */
	struct event		 w_stop;	/* activated by the main thread */
	struct event		 w_kill;	/* cut what is still open */
};

struct daemon {
	struct global_conf	 d_g;
	struct route_rt		**d_routes;
	size_t			 d_nroutes;
	struct worker		*d_workers;
	int			 d_nworkers;
	struct event_base	*d_base;	/* main thread: signals */
	atomic_int		 d_forced;	/* connections were cut */
};

/*
 * daemon_run(d): start the workers, serve until SIGTERM/SIGINT, drain for
 * shutdown-timeout.  Returns the process exit status (0 clean, 1 forced).
 */
int daemon_run(struct daemon *);

/* worker_conn_add/del(w, c): the worker's list of open connections. */
void worker_conn_add(struct worker *, struct conn *);
void worker_conn_del(struct worker *, struct conn *);

#endif
