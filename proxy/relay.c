/*
 * relay.c: moving bytes between two endpoints, with bounded buffers,
 * backpressure and half-close in both directions.
 *
 * Each direction ("half") holds at most one pooled buffer and reads from
 * its source only when that buffer is empty, so a side that cannot take
 * more stops the other side being read (backpressure), and a TLS write
 * that would block is retried with the same bytes, as wolfSSL requires.
 * Buffers go back to the pool as soon as they are empty: an idle relay
 * holds none.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bufpool.h"
#include "endpoint.h"
#include "relay.h"

void
relay_init(struct relay *r, struct endpoint *accepted, struct endpoint *dialled)
{
	memset(r, 0, sizeof(*r));
	r->r_ep[0] = accepted;
	r->r_ep[1] = dialled;
	r->r_up.h_src = r->r_down.h_dst = accepted;
	r->r_up.h_dst = r->r_down.h_src = dialled;
}

void
relay_give(struct relay *r, struct half *h, uint8_t *buf, size_t len)
{
	(void)r;
	h->h_buf = buf;
	h->h_off = 0;
	h->h_len = len;
	h->h_bytes += len;
}

/*
 * The destination of h refused a write: this direction is over.  Its
 * buffered bytes are dropped and its source is not read again, while the
 * other direction goes on to its own end (the tail of a reply still
 * reaches a client whose upload the target no longer takes).  The first
 * such reason is the relay's.
 */
static void
half_kill(struct relay *r, struct half *h, const char *side, const char *why)
{
	if (r->r_reason[0] == '\0')
		snprintf(r->r_reason, sizeof(r->r_reason), "write to %s: %s",
		    side, why);
	bufpool_put(h->h_buf);
	h->h_buf = NULL;
	h->h_off = h->h_len = 0;
	endpoint_drop_output(h->h_dst);	/* staged TLS output cannot leave */
	h->h_dead = h->h_done = 1;
}

/*
 * A TLS stream that failed (bad record MAC, a record cut by EOF, any
 * decoding error) ends the relay, and the plaintext side must see a
 * reset: never a FIN that would make a truncated stream look complete.
 */
static int
read_failed(struct relay *r, struct endpoint *src, const char *side, int err)
{
	r->r_abort = src->ep_ssl != NULL;
	snprintf(r->r_reason, sizeof(r->r_reason), "read from %s: %s%s", side,
	    endpoint_errstr(src, err), r->r_abort ?
	    "; plaintext side aborted (reset)" : "");
	return (-1);
}

/* Write what h holds.  1 moved, 0 nothing, -1 the half died doing it. */
static int
half_write(struct relay *r, struct half *h, const char *side)
{
	struct endpoint *dst = h->h_dst;
	size_t n;
	int err = 0;
	enum io io;

	if (h->h_len <= h->h_off || dst->ep_wr_wait != 0)
		return (0);
	io = endpoint_write(dst, h->h_buf + h->h_off, h->h_len - h->h_off, &n,
	    &err);
	if (io == IO_ERR || io == IO_EOF) {
		half_kill(r, h, side, endpoint_errstr(dst, err));
		return (-1);
	}
	if (io != IO_OK)
		return (0);
	h->h_off += n;
	if (h->h_off == h->h_len) {
		bufpool_put(h->h_buf);
		h->h_buf = NULL;
		h->h_off = h->h_len = 0;
	}
	return (1);
}

/*
 * Fill h's empty buffer from its source.  1 moved (bytes or the EOF), 0
 * nothing, -1 the relay failed (reason recorded).
 */
static int
half_read(struct relay *r, struct half *h, const char *from)
{
	struct endpoint *src = h->h_src;
	size_t n, more;
	int err = 0, failed = 0;
	enum io io;

	if (h->h_buf == NULL && (h->h_buf = bufpool_get()) == NULL) {
		snprintf(r->r_reason, sizeof(r->r_reason), "out of memory");
		return (-1);
	}
	io = endpoint_read(src, h->h_buf, RELAY_READMAX, &n, &err);
	/* wolfSSL returns a record per read: gather a few, so the plaintext
	 * side gets one large send. */
	while (io == IO_OK && src->ep_ssl != NULL &&
	    h->h_len + n < RELAY_READMAX) {
		more = 0;
		h->h_len += n;
		h->h_bytes += n;
		switch (endpoint_read(src, h->h_buf + h->h_len,
		    RELAY_READMAX - h->h_len, &more, &err)) {
		case IO_OK:
			break;
		case IO_EOF:
			/*
			 * Record the end now: wolfSSL reports a close_notify
			 * once, and a write the other way may reset its state
			 * before the next read.  The bytes already read still
			 * go out first.
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
	if (failed || io == IO_ERR)
		return (read_failed(r, src, from, err));
	if (io == IO_OK) {
		h->h_len += n;
		h->h_bytes += n;
	} else if (io == IO_EOF)
		src->ep_rd_eof = 1;
	if (h->h_len == 0) {
		bufpool_put(h->h_buf);
		h->h_buf = NULL;
	}
	return (io == IO_OK || io == IO_EOF);
}

/*
 * Move what can be moved in one direction: write what it holds, read more
 * once that is out, pass the source's EOF on once everything before it is
 * out.  1 when something happened, 0 when everything is blocked, -1 when
 * the relay failed.
 *
 * Invariant: h holds at most one buffer, and its source is read only while
 * that buffer is empty (backpressure); a dead half (h_dead) neither reads
 * nor writes again.
 */
static int
half_pump(struct relay *r, struct half *h, const char *side)
{
	const char *from = side[0] == 't' ? "client" : "target";
	int moved, rd;

	if (h->h_dead)
		return (0);
	if ((moved = half_write(r, h, side)) == -1)
		return (1);
	if (h->h_len == 0 && !h->h_src->ep_rd_eof &&
	    h->h_src->ep_rd_wait == 0) {
		if ((rd = half_read(r, h, from)) == -1)
			return (-1);
		moved |= rd;
	}
	if (h->h_src->ep_rd_eof && h->h_len == 0 && !h->h_done &&
	    h->h_dst->ep_wr_wait == 0 && endpoint_shutdown(h->h_dst) == IO_OK) {
		h->h_done = 1;
		moved = 1;
	}
	return (moved);
}

/* What the relay's state says once nothing more moves now. */
static enum relay_status
settled(const struct relay *r, enum relay_status st)
{
	return (r->r_up.h_done && r->r_down.h_done ? RELAY_DONE : st);
}

enum relay_status
relay_pump(struct relay *r)
{
	struct half *toward[2] = { &r->r_down, &r->r_up };	/* by dst */
	uint64_t start = r->r_up.h_bytes + r->r_down.h_bytes;
	int up, down, i;

	do {
		if (r->r_up.h_bytes + r->r_down.h_bytes - start >=
		    RELAY_BUDGET)
			return (settled(r, RELAY_MORE));
		/* TLS output staged by an earlier write goes out first; a
		 * side that refuses it ends the direction toward it. */
		for (i = 0; i < 2; i++)
			if (endpoint_pending(r->r_ep[i]) &&
			    r->r_ep[i]->ep_wr_wait == 0 &&
			    endpoint_flush(r->r_ep[i]) == -1)
				half_kill(r, toward[i], i == 0 ? "client" :
				    "target", strerror(errno));
		if ((up = half_pump(r, &r->r_up, "target")) == -1)
			return (RELAY_FAILED);
		if ((down = half_pump(r, &r->r_down, "client")) == -1)
			return (RELAY_FAILED);
	} while (up || down);
	return (settled(r, RELAY_BLOCKED));
}

short
relay_interest(const struct relay *r, const struct endpoint *ep)
{
	const struct half *in = ep == r->r_up.h_src ? &r->r_up : &r->r_down;
	const struct half *out = ep == r->r_up.h_dst ? &r->r_up : &r->r_down;
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

int
relay_half_closed(const struct relay *r)
{
	return (r->r_up.h_done || r->r_down.h_done);
}

void
relay_free(struct relay *r)
{
	bufpool_put(r->r_up.h_buf);
	bufpool_put(r->r_down.h_buf);
	r->r_up.h_buf = r->r_down.h_buf = NULL;
	r->r_up.h_off = r->r_up.h_len = r->r_down.h_off = r->r_down.h_len = 0;
}
