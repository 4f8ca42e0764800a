/*
 * status.h: the status listener (libevent's evhttp on the main thread):
 * GET /healthz, /metrics (Prometheus text) and /status (JSON).
 */
#ifndef DMTLS_STATUS_H
#define DMTLS_STATUS_H

#include <stddef.h>

struct daemon;
struct status;

/* status_start(d, addr, err, errlen): listen on addr; NULL with a reason. */
struct status *status_start(struct daemon *, const char *, char *, size_t);

/* status_free(st): NULL is fine. */
void status_free(struct status *);

#endif
