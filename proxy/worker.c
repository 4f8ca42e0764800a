/*
 * worker.c: worker threads, each with its own event loop.  The main thread
 * talks to a worker only by activating one of its events: stop (close the
 * listeners, drain), kill (cut what is still open), switch (serve the
 * current generation of routes after a reload).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../policy/certset.h"
#include "bufpool.h"
#include "conn.h"
#include "linger.h"
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
	for (i = 0; i < w->w_routes.rs_n; i++)
		route_stop_listening(w->w_routes.rs_v[i], w);
	w->w_draining = 1;
	if (atomic_fetch_sub(&w->w_d->d_closing, 1) == 1)
		event_active(&w->w_d->d_closed, 0, 0);
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

/* Stop the old generation's listeners, start the new one's. */
static void
switch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct daemon *d = w->w_d;
	size_t i;

	(void)fd;
	(void)what;
	if (!w->w_draining) {
		for (i = 0; i < w->w_routes.rs_n; i++)
			route_stop_listening(w->w_routes.rs_v[i], w);
		w->w_routes = d->d_routes;
		for (i = 0; i < w->w_routes.rs_n; i++)
			route_listen(w->w_routes.rs_v[i], w);
	}
	if (atomic_fetch_sub(&d->d_switching, 1) == 1)
		event_active(&d->d_switched, 0, 0);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	/* A worker with its listeners paused and no connection has no
	 * event pending, yet must wait for a wakeup. */
	event_base_loop(w->w_base, EVLOOP_NO_EXIT_ON_EMPTY);
	linger_drain();
	bufpool_drain();
	certset_thread_done();
	return (NULL);
}

int
worker_start(struct daemon *d)
{
	size_t r;
	int i;

	for (i = 0; i < d->d_nworkers; i++) {
		struct worker *w = &d->d_workers[i];

		w->w_id = i;
		w->w_d = d;
		TAILQ_INIT(&w->w_conns);
		if ((w->w_base = event_base_new()) == NULL)
			return (-1);
		event_assign(&w->w_stop, w->w_base, -1, 0, stop_cb, w);
		event_assign(&w->w_kill, w->w_base, -1, 0, kill_cb, w);
		event_assign(&w->w_switch, w->w_base, -1, 0, switch_cb, w);
		w->w_routes = d->d_routes;
		for (r = 0; r < w->w_routes.rs_n; r++)
			route_listen(w->w_routes.rs_v[r], w);
	}
	for (i = 0; i < d->d_nworkers; i++)
		if (pthread_create(&d->d_workers[i].w_thread, NULL,
		    worker_main, &d->d_workers[i]) != 0)
			return (-1);
	return (0);
}

void
worker_switch_all(struct daemon *d)
{
	int i;

	atomic_store(&d->d_switching, d->d_nworkers);
	for (i = 0; i < d->d_nworkers; i++)
		event_active(&d->d_workers[i].w_switch, 0, 0);
}
