/*
 * route.h: a route at run time: its addresses, certificate source, listeners
 * (one per worker) and counters shared by all workers.
 */
#ifndef DMTLS_ROUTE_H
#define DMTLS_ROUTE_H

#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "addr.h"
#include "conf.h"

struct certsrc;
struct worker;
struct daemon;

/* A route's listening socket in one worker. */
struct listener {
	struct route_rt	*l_rt;
	struct worker	*l_w;
	int		 l_fd;
	int		 l_owned;	/* close l_fd on stop */
	int		 l_paused;
	struct event	 l_ev;		/* EV_READ on l_fd */
	struct event	 l_resume;	/* activated from any thread */
	struct event	 l_retry;	/* EMFILE back-off timer */
};

struct route_stats {
	atomic_uint_least64_t	rs_allowed;
	atomic_uint_least64_t	rs_denied;
	atomic_uint_least64_t	rs_failed;
	atomic_uint_least64_t	rs_bytes_in;	/* from the accepted side */
	atomic_uint_least64_t	rs_bytes_out;	/* to the accepted side */
};

struct route_rt {
	struct route_conf	*rt_conf;
	struct daemon		*rt_d;
	struct certsrc		*rt_certs;
	struct addr		 rt_listen;
	struct addr		 rt_target;
	char			 rt_sni[256];	/* "" when no SNI is sent */
	atomic_long		 rt_active;	/* open connections, all workers */
	struct route_stats	 rt_stats;
	struct listener		*rt_lst;	/* one per worker */
	int			 rt_shared_fd;	/* unix listener, else -1 */
};

/*
 * route_new(d, rc, err, errlen): resolve the addresses and load the
 * certificates of rc (which the route keeps).  NULL with a message naming
 * the flag and the fix in err.
 */
struct route_rt *route_new(struct daemon *, struct route_conf *, char *,
    size_t);

/*
 * route_bind(rt, nworkers, err, errlen): create the listening sockets, one per
 * worker with SO_REUSEPORT (a shared one for unix sockets).  0 or -1.
 */
int route_bind(struct route_rt *, int, char *, size_t);

/* route_listen(rt, w): start accepting in worker w. */
int route_listen(struct route_rt *, struct worker *);

/* route_stop_listening(rt, w): stop accepting in worker w, close sockets. */
void route_stop_listening(struct route_rt *, struct worker *);

/* route_conn_done(rt): a connection ended; wake paused listeners. */
void route_conn_done(struct route_rt *);

/* route_free(rt): after all workers stopped. */
void route_free(struct route_rt *);

#endif
