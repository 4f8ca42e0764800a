/*
 * logfold.c: folding repeated failure lines of a route into summaries.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "logfold.h"
#include "util.h"

/* One kind of failure: an event and a reason. */
struct lf_kind {
	int		 k_used;
	char		 k_event[32];
	char		 k_reason[256];
	uint64_t	 k_pending;	/* repeats not yet in a summary */
	int64_t		 k_line_ms;	/* its last line (first or summary) */
	int64_t		 k_last_ms;	/* its last failure */
};

struct logfold {
	pthread_mutex_t	 lf_lock;
	atomic_int	 lf_down;	/* failures since the last success */
	char		 lf_route[128];
	uint64_t	 lf_failures;	/* since the last success */
	int		 lf_folded;	/* some of them were folded */
	int64_t		 lf_since_ms;	/* the first of them */
	struct lf_kind	 lf_k[LOGFOLD_KINDS];
};

struct logfold *
logfold_new(const char *route)
{
	struct logfold *f;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return (NULL);
	pthread_mutex_init(&f->lf_lock, NULL);
	atomic_init(&f->lf_down, 0);
	snprintf(f->lf_route, sizeof(f->lf_route), "%s", route);
	return (f);
}

/* The summary of k's pending repeats, under lf_lock. */
static void
summary(struct logfold *f, struct lf_kind *k, int64_t now)
{
	struct logline l;

	if (k->k_pending == 0)
		return;
	log_begin(&l, LOG_WARN, k->k_event);
	log_str(&l, "route", f->lf_route);
	log_int(&l, "repeated", (int64_t)k->k_pending);
	log_int(&l, "period_ms", now - k->k_line_ms);
	log_str(&l, "reason", k->k_reason);
	log_end(&l);
	k->k_pending = 0;
	k->k_line_ms = now;
}

/* Summaries that are due; kinds gone quiet are forgotten.  Under lf_lock. */
static void
due(struct logfold *f, int64_t now)
{
	struct lf_kind *k;
	int i;

	for (i = 0; i < LOGFOLD_KINDS; i++) {
		k = &f->lf_k[i];
		if (!k->k_used)
			continue;
		if (k->k_pending > 0 && now - k->k_line_ms >=
		    LOGFOLD_INTERVAL_MS)
			summary(f, k, now);
		if (k->k_pending == 0 && now - k->k_last_ms >=
		    LOGFOLD_FORGET_MS)
			k->k_used = 0;
	}
}

int
logfold_fail(struct logfold *f, const char *event, const char *reason)
{
	struct lf_kind *k, *lru = NULL;
	int64_t now = now_ms();
	int i, first = 1;

	if (f == NULL)
		return (1);
	pthread_mutex_lock(&f->lf_lock);
	if (f->lf_failures++ == 0)
		f->lf_since_ms = now;
	atomic_store(&f->lf_down, 1);
	for (i = 0; i < LOGFOLD_KINDS; i++) {
		k = &f->lf_k[i];
		if (k->k_used && k->k_pending == 0 && now - k->k_last_ms >=
		    LOGFOLD_FORGET_MS)
			k->k_used = 0;		/* gone quiet: forgotten */
		if (k->k_used && strcmp(k->k_event, event) == 0 &&
		    strncmp(k->k_reason, reason, sizeof(k->k_reason) - 1) ==
		    0) {
			/* A repeat: counted, and summarised when due. */
			k->k_pending++;
			k->k_last_ms = now;
			f->lf_folded = 1;
			first = 0;
			goto out;
		}
		if (lru == NULL || !k->k_used || (lru->k_used &&
		    k->k_last_ms < lru->k_last_ms))
			lru = k;
	}
	/* A new kind takes a free slot, or the quietest one's. */
	if (lru->k_used)
		summary(f, lru, now);
	memset(lru, 0, sizeof(*lru));
	lru->k_used = 1;
	snprintf(lru->k_event, sizeof(lru->k_event), "%s", event);
	snprintf(lru->k_reason, sizeof(lru->k_reason), "%s", reason);
	lru->k_line_ms = lru->k_last_ms = now;
out:
	due(f, now);		/* this repeat included */
	pthread_mutex_unlock(&f->lf_lock);
	return (first);
}

void
logfold_ok(struct logfold *f)
{
	struct logline l;
	int64_t now;
	uint64_t n;
	int i;

	if (f == NULL || atomic_load(&f->lf_down) == 0)
		return;
	now = now_ms();
	pthread_mutex_lock(&f->lf_lock);
	if ((n = f->lf_failures) == 0)
		goto out;	/* another worker saw the recovery first */
	for (i = 0; i < LOGFOLD_KINDS; i++) {
		summary(f, &f->lf_k[i], now);
		f->lf_k[i].k_used = 0;
	}
	/* After failures that were all logged whole, the next close line
	 * says enough; after folded ones, say that they are over. */
	if (f->lf_folded) {
		log_begin(&l, LOG_INFO, "recovered");
		log_str(&l, "route", f->lf_route);
		log_int(&l, "failures", (int64_t)n);
		log_int(&l, "down_ms", now - f->lf_since_ms);
		log_end(&l);
	}
	f->lf_failures = 0;
	f->lf_folded = 0;
	atomic_store(&f->lf_down, 0);
out:
	pthread_mutex_unlock(&f->lf_lock);
}

void
logfold_tick(struct logfold *f)
{
	if (f == NULL || atomic_load(&f->lf_down) == 0)
		return;
	pthread_mutex_lock(&f->lf_lock);
	due(f, now_ms());
	pthread_mutex_unlock(&f->lf_lock);
}

void
logfold_free(struct logfold *f)
{
	int64_t now = now_ms();
	int i;

	if (f == NULL)
		return;
	for (i = 0; i < LOGFOLD_KINDS; i++)
		summary(f, &f->lf_k[i], now);
	pthread_mutex_destroy(&f->lf_lock);
	free(f);
}
