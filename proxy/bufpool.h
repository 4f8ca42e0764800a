/*
 * bufpool.h: a per-thread pool of fixed-size buffers, so a busy connection
 * allocates nothing per read and an idle one holds no buffer.
 */
#ifndef DMTLS_BUFPOOL_H
#define DMTLS_BUFPOOL_H

#include <stdint.h>

#define BUFPOOL_SZ	65536	/* bytes of every pooled buffer */

/* bufpool_get(): a BUFPOOL_SZ buffer (uninitialised), or NULL. */
uint8_t *bufpool_get(void);

/* bufpool_put(b): give b back to the calling thread's pool; NULL is fine. */
void bufpool_put(uint8_t *);

/* bufpool_drain(): free the calling thread's pool (at thread exit). */
void bufpool_drain(void);

#endif
