/*
 * worker.c: worker threads, each with its own event loop.  Other threads
 * talk to a worker only by activating events in its loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../policy/certset.h"
#include "bufpool.h"
#include "conn.h"
#include "linger.h"
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

void
worker_drain(struct worker *w)
{
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
	/* Each close takes the connection off the list (its end callback). */
	while ((c = TAILQ_FIRST(&w->w_conns)) != NULL) {
		atomic_store(&w->w_forced, 1);
		conn_close(c, "shutdown timeout");
	}
	event_base_loopexit(w->w_base, NULL);
}

void
worker_kill(struct worker *w)
{
	event_active(&w->w_kill, 0, 0);
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
worker_init(struct worker *w, int id)
{
	w->w_id = id;
	TAILQ_INIT(&w->w_conns);
	if ((w->w_base = event_base_new()) == NULL)
		return (-1);
	event_assign(&w->w_kill, w->w_base, -1, 0, kill_cb, w);
	return (0);
}

int
worker_run(struct worker *w)
{
	return (pthread_create(&w->w_thread, NULL, worker_main, w) == 0 ? 0 :
	    -1);
}

void
worker_free(struct worker *w)
{
	if (w->w_base != NULL)
		event_base_free(w->w_base);
	w->w_base = NULL;
}
