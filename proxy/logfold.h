/*
 * logfold.h: repeats of one failure on one route, folded (DESIGN 7).
 *
 * The first failure of a kind (same event, same reason) is logged whole by
 * its connection; its repeats are counted here and written as one summary
 * line (the same event, with repeated=N) at most every LOGFOLD_INTERVAL_MS,
 * by the next repeat or by logfold_tick(), whichever comes first.  The next
 * connection that gets through writes a summary of what is left and, when
 * some failures were folded, one event=recovered line.  A kind not seen for LOGFOLD_FORGET_MS is
 * forgotten: its next failure is logged whole again.  Safe from any thread
 * (one lock per route, taken only on failures and at recovery).
 */
#ifndef DMTLS_LOGFOLD_H
#define DMTLS_LOGFOLD_H

#define LOGFOLD_INTERVAL_MS	5000	/* between summaries of one kind */
#define LOGFOLD_FORGET_MS	60000	/* a kind this quiet is forgotten */
#define LOGFOLD_KINDS		4	/* kinds of failure tracked at once */

struct logfold;

/* logfold_new(route): the fold state of a route name; NULL on ENOMEM. */
struct logfold *logfold_new(const char *);

/* logfold_free(f): write the summaries still pending, free f (NULL ok). */
void logfold_free(struct logfold *);

/*
 * logfold_fail(f, event, reason): a connection of the route failed.
 * Returns 1 when the caller writes its line (the first of its kind, or f
 * is NULL), 0 when the failure was counted into a summary instead.
 */
int logfold_fail(struct logfold *, const char *, const char *);

/*
 * logfold_ok(f): a connection of the route got through.  After failures,
 * writes their pending summaries and (some were folded) one
 * event=recovered line; otherwise costs one atomic load.
 */
void logfold_ok(struct logfold *);

/* logfold_tick(f): write the summaries that are due (a timer calls it). */
void logfold_tick(struct logfold *);

#endif
