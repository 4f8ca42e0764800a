/*
 * route.h: a route at run time: its addresses, certificate source, listeners
 * (one per worker) and counters shared by all workers.
 */
#ifndef DMTLS_ROUTE_H
#define DMTLS_ROUTE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "../policy/policy.h"
#include "addr.h"
#include "conf.h"
#include "conn.h"

struct certsrc;
struct logfold;
struct worker;

/* A route's listening socket in one worker. */
struct listener {
	struct route_rt	*l_rt;
	struct worker	*l_w;		/* NULL once it stopped listening */
	struct worker	*l_home;	/* the worker, for conns it accepted */
	int		 l_fd;
	int		 l_owned;	/* close l_fd on stop */
	int		 l_paused;
	struct event	 l_ev;		/* EV_READ on l_fd */
	struct event	 l_resume;	/* activated from any thread */
	struct event	 l_retry;	/* EMFILE back-off timer */
};

#define DUR_BUCKETS	12	/* connection duration histogram */

/*
 * Counters of one route name.  A reload that keeps a route's name keeps its
 * counters, so /metrics never goes backwards; connections of the old
 * generation count into the same object (reference counted).
 */
struct route_stats {
	atomic_int		rs_refs;
	char			rs_name[128];
	/* max-conns counts rs_active, so connections of an older generation
	 * still open after a reload count against the new one's limit; their
	 * end wakes the listeners of rs_live, the generation serving now. */
	atomic_long		rs_active;	/* open, all generations */
	pthread_mutex_t		rs_lock;	/* rs_live, listeners' l_w */
	struct route_rt		*rs_live;
	atomic_uint_least64_t	rs_allowed;
	atomic_uint_least64_t	rs_denied;
	atomic_uint_least64_t	rs_failed;
	atomic_uint_least64_t	rs_bytes_in;	/* from the accepted side */
	atomic_uint_least64_t	rs_bytes_out;	/* to the accepted side */
	atomic_uint_least64_t	rs_deny_policy;	/* identity not allowed */
	atomic_uint_least64_t	rs_deny_revoked; /* leaf listed in a CRL */
	atomic_uint_least64_t	rs_deny_crl_expired; /* CRL past nextUpdate */
	atomic_uint_least64_t	rs_deny_crl_missing; /* no CRL for the issuer */
	atomic_uint_least64_t	rs_fail_verify;	/* chain/date/name failed */
	atomic_uint_least64_t	rs_fail_nocert;	/* no client certificate */
	atomic_uint_least64_t	rs_fail_timeout; /* handshake deadline */
	atomic_uint_least64_t	rs_fail_other;	/* any other handshake failure */
	atomic_uint_least64_t	rs_fail_connect; /* target unreachable */
	atomic_uint_least64_t	rs_dur[DUR_BUCKETS + 1];	/* + Inf */
	atomic_uint_least64_t	rs_dur_sum_ms;
	struct logfold		*rs_fold;	/* its repeated failure lines */
};

/* Upper bounds (seconds) of the duration histogram's buckets. */
extern const double route_dur_bounds[DUR_BUCKETS];

struct route_rt {
	struct route_conf	*rt_conf;
	struct policy_rules	 rt_rules;	/* rt_conf's cert-allowed-* */
	struct certsrc		*rt_certs;
	struct addr		 rt_listen;
	struct addr		 rt_target;
	char			 rt_sni[256];	/* "" when no SNI is sent */
	struct conn_params	 rt_cp;		/* what its connections get */
	atomic_int		 rt_refs;	/* the config's + one per conn */
	struct route_stats	*rt_stats;
	struct listener		*rt_lst;	/* one per worker */
	int			 rt_nlst;
	int			 rt_shared_fd;	/* unix/systemd listener, else -1 */
	int			 rt_shared_owned; /* close rt_shared_fd on free */
	int			 rt_retired;	/* a reload replaced the route
						 * (under rt_stats->rs_lock) */
};

struct certsrc_params;
struct policy_rules;

/* route_rules_of(sec, rules): sec's cert-allowed-* lists as policy rules
 * (pointing into sec, which must outlive them). */
void route_rules_of(const struct security_conf *, struct policy_rules *);

/* route_certsrc_params(rc, p): the certificate files and flags of rc for
 * certsrc_new(); the caller adds the verify callback and the log. */
void route_certsrc_params(const struct route_conf *, struct certsrc_params *);

/*
 * route_new(rc, err, errlen): resolve the listen address (a target host
 * name is left to each connection) and load the certificates of rc.  The route owns rc (heap-allocated) from here on, also
 * when it fails.  NULL with a message naming the key and the fix in err.
 */
struct route_rt *route_new(struct route_conf *, char *, size_t);

/*
 * route_bind(rt, nworkers, err, errlen): create the listening sockets, one per
 * worker with SO_REUSEPORT (a shared one for unix sockets).  0 or -1.
 */
int route_bind(struct route_rt *, int, char *, size_t);

/*
 * route_take_listeners(rt, old): a reload keeps old's bound sockets for rt
 * (same listen address), so no connection is refused meanwhile.
 */
void route_take_listeners(struct route_rt *, struct route_rt *);

/* route_retire(rt): no more listener wakeups; called before the swap. */
void route_retire(struct route_rt *);

/* route_hold/route_release(rt): references; the last release frees it. */
void route_hold(struct route_rt *);
void route_release(struct route_rt *);

/* route_stats_get(name): the counters of a route name (new reference). */
struct route_stats *route_stats_get(const char *);

/* route_stats_put(st): drop a reference from route_stats_get(). */
void route_stats_put(struct route_stats *);

/* route_fold_tick(): write the folded failure summaries that are due, of
 * every route name (DESIGN 7); from a timer, off the workers' loops. */
void route_fold_tick(void);


/* route_listen(rt, w): start accepting in worker w. */
int route_listen(struct route_rt *, struct worker *);

/* route_stop_listening(rt, w): stop accepting in worker w, close sockets. */
void route_stop_listening(struct route_rt *, struct worker *);

/* route_free(rt): free now (start-up errors, or the last reference). */
void route_free(struct route_rt *);

#endif
