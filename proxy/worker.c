/*
 * worker.c: worker threads, each with its own event loop, and the main
 * thread's signal handling: SIGTERM/SIGINT stop accepting and drain open
 * connections for up to shutdown-timeout.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/thread.h>

#include "conn.h"
#include "log.h"
#include "route.h"
#include "worker.h"

void
worker_conn_add(struct worker *w, struct conn *c)
{
	TAILQ_INSERT_TAIL(&w->w_conns, c, c_entry);
	w->w_nconns++;
}

void
worker_conn_del(struct worker *w, struct conn *c)
{
	TAILQ_REMOVE(&w->w_conns, c, c_entry);
	w->w_nconns--;
	if (w->w_draining && w->w_nconns == 0)
		event_base_loopexit(w->w_base, NULL);
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	size_t i;

	(void)fd;
	(void)what;
	for (i = 0; i < w->w_d->d_nroutes; i++)
		route_stop_listening(w->w_d->d_routes[i], w);
	w->w_draining = 1;
	if (w->w_nconns == 0)
		event_base_loopexit(w->w_base, NULL);
}

static void
kill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct conn *c;

	(void)fd;
	(void)what;
	while ((c = TAILQ_FIRST(&w->w_conns)) != NULL) {
		atomic_store(&w->w_d->d_forced, 1);
		conn_close(c, "shutdown timeout");
	}
	event_base_loopexit(w->w_base, NULL);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->w_base);
	return (NULL);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct timeval tv;
	int i;

	(void)what;
	log_msg(LOG_INFO, "stopping", "%s: no new connections; draining "
	    "open ones for up to %ldms", sig == SIGINT ? "SIGINT" : "SIGTERM",
	    d->d_g.shutdown_timeout_ms);
	for (i = 0; i < d->d_nworkers; i++)
		event_active(&d->d_workers[i].w_stop, 0, 0);
	tv.tv_sec = d->d_g.shutdown_timeout_ms / 1000;
	tv.tv_usec = (d->d_g.shutdown_timeout_ms % 1000) * 1000;
	/* The main loop ends at the deadline; workers still busy get cut. */
	event_base_loopexit(d->d_base, &tv);
}

/* Stop the main loop early once every worker has finished draining. */
static void *
joiner_main(void *arg)
{
	struct daemon *d = arg;
	int i;

	for (i = 0; i < d->d_nworkers; i++)
		pthread_join(d->d_workers[i].w_thread, NULL);
	event_base_loopbreak(d->d_base);
	return (NULL);
}

int
daemon_run(struct daemon *d)
{
	struct event *sigterm, *sigint;
	pthread_t joiner;
	size_t r;
	int i;

	evthread_use_pthreads();
	signal(SIGPIPE, SIG_IGN);
	if ((d->d_base = event_base_new()) == NULL)
		return (1);
	sigterm = evsignal_new(d->d_base, SIGTERM, signal_cb, d);
	sigint = evsignal_new(d->d_base, SIGINT, signal_cb, d);
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);

	for (i = 0; i < d->d_nworkers; i++) {
		struct worker *w = &d->d_workers[i];

		w->w_id = i;
		w->w_d = d;
		TAILQ_INIT(&w->w_conns);
		if ((w->w_base = event_base_new()) == NULL)
			return (1);
		event_assign(&w->w_stop, w->w_base, -1, 0, stop_cb, w);
		event_assign(&w->w_kill, w->w_base, -1, 0, kill_cb, w);
		for (r = 0; r < d->d_nroutes; r++)
			route_listen(d->d_routes[r], w);
	}
	for (i = 0; i < d->d_nworkers; i++)
		pthread_create(&d->d_workers[i].w_thread, NULL, worker_main,
		    &d->d_workers[i]);
	log_msg(LOG_INFO, "ready", "%zu route(s), %d worker(s)",
	    d->d_nroutes, d->d_nworkers);
	pthread_create(&joiner, NULL, joiner_main, d);

	event_base_dispatch(d->d_base);
	/* Either every worker drained, or the shutdown deadline passed. */
	for (i = 0; i < d->d_nworkers; i++)
		event_active(&d->d_workers[i].w_kill, 0, 0);
	pthread_join(joiner, NULL);

	event_free(sigterm);
	event_free(sigint);
	for (i = 0; i < d->d_nworkers; i++)
		event_base_free(d->d_workers[i].w_base);
	event_base_free(d->d_base);
	if (atomic_load(&d->d_forced)) {
		log_msg(LOG_WARN, "stopped", "shutdown timeout: open "
		    "connections were cut");
		return (1);
	}
	log_msg(LOG_INFO, "stopped", "all connections finished");
	return (0);
}
