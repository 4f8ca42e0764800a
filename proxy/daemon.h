/*
 * daemon.h: the daemon: generations of routes, the workers that serve
 * them, SIGHUP reloads, SIGTERM/SIGINT drains and the status listener.
 */
#ifndef DMTLS_DAEMON_H
#define DMTLS_DAEMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "conf.h"
#include "privs.h"
#include "sandbox.h"
#include "worker.h"

struct route_rt;
struct status;
struct daemon;

/* One generation of routes: what a config (or the command line) made. */
struct routeset {
	struct route_rt		**rs_v;
	size_t			  rs_n;
};

/* A worker as the daemon drives it. */
struct daemon_worker {
	struct worker		 dw_w;
	struct daemon		*dw_d;
	struct routeset		 dw_routes;	/* the generation it serves */
	struct event		 dw_stop;	/* activated by the main thread */
	struct event		 dw_switch;	/* serve d_routes from now on */
};

struct target_probe;

struct daemon {
	struct global_conf	 d_g;
	char			*d_config;	/* NULL: routes from the CLI */
	struct routeset		 d_routes;	/* current generation */
	struct routeset		 d_old;		/* being switched away from */
	atomic_int		 d_switching;	/* workers yet to switch */
	struct daemon_worker	*d_workers;
	int			 d_nworkers;
	struct event_base	*d_base;	/* main thread */
	struct event		 d_switched;
	struct event		 d_closed;	/* all listeners closed */
	atomic_int		 d_closing;	/* workers yet to close them */
	int			 d_signo;	/* the signal that stops us */
	struct status		*d_status;
	int			 d_stopping;
	/* The last reload, for /status. */
	time_t			 d_reload_time;
	int			 d_reload_ok;
	char			 d_reload_err[1024];
	unsigned		 d_reloads;
	struct privs		 d_privs;	/* pv_dropped once we did */
	struct sandbox		 d_sb;		/* what is in force */
	struct target_probe	*d_probes;	/* start-up lookups of names */
	size_t			 d_nprobes;
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

#endif
