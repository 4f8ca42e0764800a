/*
 * relay.c: moving bytes between the two endpoints of a connection, with
 * bounded buffers, backpressure and half-close in both directions.
 *
 * Each direction ("half") holds at most one buffer of RELAY_BUFSZ bytes and
 * reads from its source only when that buffer is empty, so a side that
 * cannot take more stops the other side being read (backpressure), and a
 * TLS write that would block is retried with the same bytes, as wolfSSL
 * requires.  Buffers come from a per-thread pool and go back as soon as they
 * are empty: an idle connection holds none.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bufpool.h"
#include "conn.h"
#include "endpoint.h"

/*
 * The destination of h refused a write: this direction is over.  Its
 * buffered bytes are dropped and its source is not read again, while the
 * other direction goes on to its own end (the tail of a reply still
 * reaches a client whose upload the target no longer takes).  The first
 * such reason is the connection's.
 */
static void
half_kill(struct conn *c, struct half *h, const char *side, const char *why)
{
	struct endpoint *dst = h->h_dst;

	if (c->c_reason[0] == '\0')
		snprintf(c->c_reason, sizeof(c->c_reason), "write to %s: %s",
		    side, why);
	bufpool_put(h->h_buf);
	h->h_buf = NULL;
	h->h_off = h->h_len = 0;
	endpoint_drop_output(dst);	/* staged TLS output cannot leave */
	h->h_dead = h->h_done = 1;
}

/*
 * A TLS stream that failed (bad record MAC, a record cut by EOF, any
 * decoding error) ends the connection, and the plaintext side sees a
 * reset: never a FIN that would make a truncated stream look complete.
 */
static int
tls_read_failed(struct conn *c, struct endpoint *src, const char *side,
    int err)
{
	c->c_abort = src->ep_ssl != NULL;
	conn_fail(c, "allowed", "read from %s: %s%s", side,
	    endpoint_errstr(src, err), c->c_abort ?
	    "; plaintext side aborted (reset)" : "");
	return (-1);
}

/*
 * Move what can be moved in one direction.  Returns 1 when something
 * happened, 0 when everything is blocked, -1 when the connection was closed.
 *
 * Invariant: h holds at most one buffer, and its source is read only while
 * that buffer is empty (backpressure); a dead half (h_dead) neither reads
 * nor writes again.
 */
static int
half_pump(struct conn *c, struct half *h, const char *side)
{
	struct endpoint *src = h->h_src, *dst = h->h_dst;
	const char *from = side[0] == 't' ? "client" : "target";
	size_t n;
	int err = 0, moved = 0, failed = 0;
	enum io io;

	if (h->h_dead)
		return (0);
	if (h->h_len > h->h_off && dst->ep_wr_wait == 0) {
		io = endpoint_write(dst, h->h_buf + h->h_off, h->h_len - h->h_off,
		    &n, &err);
		if (io == IO_ERR || io == IO_EOF) {
			half_kill(c, h, side, endpoint_errstr(dst, err));
			return (1);
		}
		if (io == IO_OK) {
			h->h_off += n;
			moved = 1;
			if (h->h_off == h->h_len) {
				bufpool_put(h->h_buf);
				h->h_buf = NULL;
				h->h_off = h->h_len = 0;
			}
		}
	}
	if (h->h_len == 0 && !src->ep_rd_eof && src->ep_rd_wait == 0) {
		if (h->h_buf == NULL && (h->h_buf = bufpool_get()) == NULL) {
			conn_fail(c, "allowed", "out of memory");
			return (-1);
		}
		io = endpoint_read(src, h->h_buf, RELAY_READMAX, &n, &err);
		/* wolfSSL returns a record per read: gather a few, so the
		 * plaintext side gets one large send. */
		while (io == IO_OK && src->ep_ssl != NULL &&
		    h->h_len + n < RELAY_READMAX) {
			size_t more = 0;
			h->h_len += n;
			h->h_bytes += n;
			switch (endpoint_read(src, h->h_buf + h->h_len,
			    RELAY_READMAX - h->h_len, &more, &err)) {
			case IO_OK:
				break;
			case IO_EOF:
				/*
				 * Record the end now: wolfSSL reports a
				 * close_notify once, and a write the other way
				 * may reset its state before the next read.
				 * The bytes already read still go out first.
				 */
				src->ep_rd_eof = 1;
				break;
			case IO_ERR:
				failed = 1;	/* the stream is corrupt */
				break;
			case IO_WAIT:
				break;		/* the wait is recorded */
			}
			n = more;
			if (more == 0)
				break;
		}
		if (failed)
			return (tls_read_failed(c, src, from, err));
		switch (io) {
		case IO_OK:
			h->h_len += n;
			h->h_bytes += n;
			moved = 1;
			break;
		case IO_EOF:
			src->ep_rd_eof = 1;
			moved = 1;
			break;
		case IO_ERR:
			return (tls_read_failed(c, src, from, err));
		case IO_WAIT:
			break;
		}
		if (h->h_len == 0) {
			bufpool_put(h->h_buf);
			h->h_buf = NULL;
		}
	}
	if (src->ep_rd_eof && h->h_len == 0 && !h->h_done &&
	    dst->ep_wr_wait == 0) {
		io = endpoint_shutdown(dst);
		if (io == IO_OK) {
			h->h_done = 1;
			moved = 1;
		}
	}
	return (moved);
}

int
relay_pump(struct conn *c)
{
	struct half *toward[2] = { &c->c_down, &c->c_up };	/* by dst */
	uint64_t start = c->c_up.h_bytes + c->c_down.h_bytes;
	int up, down, i;

	do {
		if (c->c_up.h_bytes + c->c_down.h_bytes - start >=
		    RELAY_BUDGET)
			return (1);	/* fair to the worker's others */
		/* TLS output staged by an earlier write goes out first; a
		 * side that refuses it ends the direction toward it. */
		for (i = 0; i < 2; i++)
			if (endpoint_pending(&c->c_ep[i]) &&
			    c->c_ep[i].ep_wr_wait == 0 &&
			    endpoint_flush(&c->c_ep[i]) == -1)
				half_kill(c, toward[i], i == 0 ? "client" :
				    "target", strerror(errno));
		if ((up = half_pump(c, &c->c_up, "target")) == -1)
			return (-1);
		if ((down = half_pump(c, &c->c_down, "client")) == -1)
			return (-1);
	} while (up || down);
	return (0);
}

short
relay_interest(const struct conn *c, const struct endpoint *ep)
{
	const struct half *in = ep == c->c_up.h_src ? &c->c_up : &c->c_down;
	const struct half *out = ep == c->c_up.h_dst ? &c->c_up : &c->c_down;
	short want = 0;

	/* Reading: while the half it feeds lives, has room and no EOF yet. */
	if (!ep->ep_rd_eof && !in->h_dead && in->h_len == 0)
		want |= ep->ep_rd_wait;
	/* Writing: while bytes or the EOF are waiting to go out. */
	if (out->h_len > out->h_off || (out->h_src->ep_rd_eof && !out->h_done) ||
	    endpoint_pending(ep))
		want |= ep->ep_wr_wait;
	return (want);
}
