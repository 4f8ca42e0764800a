/*
 * bufpool.c: per-thread pools of BUFPOOL_SZ buffers.  A thread keeps at
 * most POOL_MAX spare buffers; the rest go back to malloc.
 */
#include <stdlib.h>

#include "bufpool.h"

#define POOL_MAX	64

static __thread uint8_t *pool[POOL_MAX];
static __thread int pool_n;

uint8_t *
bufpool_get(void)
{
	if (pool_n > 0)
		return (pool[--pool_n]);
	return (malloc(BUFPOOL_SZ));
}

void
bufpool_put(uint8_t *b)
{
	if (b == NULL)
		return;
	if (pool_n < POOL_MAX)
		pool[pool_n++] = b;
	else
		free(b);
}

void
bufpool_drain(void)
{
	while (pool_n > 0)
		free(pool[--pool_n]);
}
