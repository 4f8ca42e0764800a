/*
 * worker.h: worker threads (one event loop each) and the daemon that owns
 * the routes, the workers, reloads and the status listener.
 */
#ifndef DMTLS_WORKER_H
#define DMTLS_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "conf.h"

struct conn;
struct route_rt;
struct status;

/* One generation of routes: what a config (or the command line) made. */
struct routeset {
	struct route_rt		**rs_v;
	size_t			  rs_n;
};

struct worker {
	int			 w_id;
	struct daemon		*w_d;
	struct event_base	*w_base;
	pthread_t		 w_thread;
	struct routeset		 w_routes;	/* the generation it serves */
	TAILQ_HEAD(, conn)	 w_conns;
	int			 w_nconns;
	int			 w_draining;	/* listeners closed, waiting */
	struct event		 w_stop;	/* activated by the main thread */
	struct event		 w_kill;	/* cut what is still open */
	struct event		 w_switch;	/* serve d_routes from now on */
};

struct daemon {
	struct global_conf	 d_g;
	char			*d_config;	/* NULL: routes from the CLI */
	struct routeset		 d_routes;	/* current generation */
	struct routeset		 d_old;		/* being switched away from */
	atomic_int		 d_switching;	/* workers yet to switch */
	struct worker		*d_workers;
	int			 d_nworkers;
	struct event_base	*d_base;	/* main thread */
	struct event		 d_switched;
	struct event		 d_closed;	/* all listeners closed */
	atomic_int		 d_closing;	/* workers yet to close them */
	int			 d_signo;	/* the signal that stops us */
	struct status		*d_status;
	atomic_int		 d_forced;	/* connections were cut */
	int			 d_stopping;
	/* The last reload, for /status. */
	time_t			 d_reload_time;
	int			 d_reload_ok;
	char			 d_reload_err[1024];
	unsigned		 d_reloads;
};

/*
 * daemon_run(d): start the workers on d_routes, serve until SIGTERM/SIGINT
 * (reloading on SIGHUP when d_config is set), drain for shutdown-timeout.
 * Returns the process exit status (0 clean, 1 forced).
 */
int daemon_run(struct daemon *);

/*
 * daemon_build(d, rcs, n, reuse, set, err, errlen): make and bind a
 * generation of routes from n route configs (moved out of rcs).  Listeners
 * whose address is in reuse keep their sockets.  0, or -1 with a message
 * that starts with FILE:LINE when the route came from a config file.
 */
int daemon_build(struct daemon *, struct route_conf *, size_t,
    const struct routeset *, struct routeset *, char *, size_t);

/* routeset_release(set): drop the generation's references. */
void routeset_release(struct routeset *);

/* worker_conn_add/del(w, c): the worker's list of open connections. */
void worker_conn_add(struct worker *, struct conn *);
void worker_conn_del(struct worker *, struct conn *);

/* worker_start(d): make the workers' loops and start their threads. */
int worker_start(struct daemon *);

/* worker_switch_all(d): make every worker serve d_routes (async). */
void worker_switch_all(struct daemon *);

#endif
