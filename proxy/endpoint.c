/*
 * endpoint.c: socket and TLS record I/O for one side of a connection:
 * the wolfSSL I/O callbacks (read-ahead, staged output, record framing),
 * and reads, writes and shutdowns that say what they wait for.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfio.h>

#include "bufpool.h"
#include "endpoint.h"

void
endpoint_init(struct endpoint *ep, int fd)
{
	memset(ep, 0, sizeof(*ep));
	ep->ep_fd = fd;
}

void
endpoint_ready(struct endpoint *ep, short what)
{
	if (what & EV_READ)
		ep->ep_drained = 0;
	if (ep->ep_rd_wait & what)
		ep->ep_rd_wait = 0;
	if (ep->ep_wr_wait & what)
		ep->ep_wr_wait = 0;
}

/*
 * wolfSSL reads a record in two calls (its 5-byte header, then the body).
 * This receive callback reads ahead into a pooled buffer, so one recv()
 * usually serves a whole record or a whole handshake flight; large reads
 * with nothing staged go straight into wolfSSL's buffer.  The buffer goes
 * back to the pool as soon as it is empty, and data staged here is always
 * consumed before WANT_READ is reported, so no wakeup is lost.
 */
static int
tls_recv_raw(struct endpoint *ep, char *buf, int sz)
{
	size_t n;
	ssize_t r;

	if (ep->ep_ra_len == 0 && ep->ep_drained)
		return (WOLFSSL_CBIO_ERR_WANT_READ);	/* see endpoint_read */
	if (ep->ep_ra_len == 0 && sz < BUFPOOL_SZ / 2) {
		if (ep->ep_ra == NULL && (ep->ep_ra = bufpool_get()) == NULL)
			return (WOLFSSL_CBIO_ERR_GENERAL);
		r = recv(ep->ep_fd, ep->ep_ra, BUFPOOL_SZ, 0);
		if (r > 0) {
			ep->ep_ra_off = 0;
			ep->ep_ra_len = (uint32_t)r;
			ep->ep_drained = r < BUFPOOL_SZ;
		}
	} else if (ep->ep_ra_len == 0) {
		r = recv(ep->ep_fd, buf, (size_t)sz, 0);
		if (r > 0)
			ep->ep_drained = r < sz;
	} else
		r = 1;
	if (r > 0 && ep->ep_ra_len > 0) {
		n = ep->ep_ra_len - ep->ep_ra_off;
		if (n > (size_t)sz)
			n = (size_t)sz;
		memcpy(buf, ep->ep_ra + ep->ep_ra_off, n);
		ep->ep_ra_off += (uint32_t)n;
		if (ep->ep_ra_off == ep->ep_ra_len) {
			ep->ep_ra_off = ep->ep_ra_len = 0;
			bufpool_put(ep->ep_ra);
			ep->ep_ra = NULL;
		}
		return ((int)n);
	}
	if (r > 0)
		return ((int)r);
	if (ep->ep_ra != NULL && ep->ep_ra_len == 0) {
		bufpool_put(ep->ep_ra);
		ep->ep_ra = NULL;
	}
	if (r == 0)
		return (WOLFSSL_CBIO_ERR_CONN_CLOSE);
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return (WOLFSSL_CBIO_ERR_WANT_READ);
	if (errno == EINTR)
		return (WOLFSSL_CBIO_ERR_ISR);
	if (errno == ECONNRESET)
		return (WOLFSSL_CBIO_ERR_CONN_RST);
	return (WOLFSSL_CBIO_ERR_GENERAL);
}

/* Follow the record framing of n bytes handed to wolfSSL. */
static void
rec_track(struct endpoint *ep, const uint8_t *p, size_t n)
{
	size_t k;

	while (n > 0) {
		if (ep->ep_rec_left > 0) {
			k = n < ep->ep_rec_left ? n : ep->ep_rec_left;
			ep->ep_rec_left = (uint16_t)(ep->ep_rec_left - k);
			p += k;
			n -= k;
			continue;
		}
		/* A header byte: type, version (2), length (2). */
		if (ep->ep_rec_hlen == 3)
			ep->ep_rec_hi = *p;
		if (ep->ep_rec_hlen == 4) {
			ep->ep_rec_left = (uint16_t)(ep->ep_rec_hi << 8 | *p);
			ep->ep_rec_hlen = 0;
		} else
			ep->ep_rec_hlen++;
		p++;
		n--;
	}
}

/*
 * The receive callback: tls_recv_raw, plus the record framing, so that an
 * EOF inside a record reaches wolfSSL as a reset, not as a clean close.
 */
static int
tls_recv_cb(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct endpoint *ep = arg;
	int r;

	(void)ssl;
	r = tls_recv_raw(ep, buf, sz);
	if (r > 0)
		rec_track(ep, (const uint8_t *)buf, (size_t)r);
	else if (r == WOLFSSL_CBIO_ERR_CONN_CLOSE &&
	    (ep->ep_rec_left != 0 || ep->ep_rec_hlen != 0)) {
		ep->ep_cut = 1;
		return (WOLFSSL_CBIO_ERR_CONN_RST);
	}
	return (r);
}

int
endpoint_flush(struct endpoint *ep)
{
	ssize_t n;

	while (ep->ep_wa_off < ep->ep_wa_len) {
		n = send(ep->ep_fd, ep->ep_wa + ep->ep_wa_off,
		    ep->ep_wa_len - ep->ep_wa_off, MSG_NOSIGNAL);
		if (n > 0) {
			ep->ep_wa_off += (uint32_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep->ep_wr_wait = EV_WRITE;
			return (0);
		}
		return (-1);
	}
	ep->ep_wa_off = ep->ep_wa_len = 0;
	bufpool_put(ep->ep_wa);
	ep->ep_wa = NULL;
	return (1);
}

/*
 * wolfSSL sends each record (and each handshake message) in its own call.
 * This send callback stages them, so a write of four records or a whole
 * handshake flight leaves in one send(); endpoint_flush() sends what is
 * staged.  When the stage is full and the socket will not take more,
 * wolfSSL sees WANT_WRITE and retries the same write later, as it requires.
 */
static int
tls_send_cb(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct endpoint *ep = arg;
	size_t room;

	(void)ssl;
	if (ep->ep_wa == NULL && (ep->ep_wa = bufpool_get()) == NULL)
		return (WOLFSSL_CBIO_ERR_GENERAL);
	room = BUFPOOL_SZ - ep->ep_wa_len;
	if ((size_t)sz > room) {
		if (ep->ep_wa_off > 0) {
			memmove(ep->ep_wa, ep->ep_wa + ep->ep_wa_off,
			    ep->ep_wa_len - ep->ep_wa_off);
			ep->ep_wa_len -= ep->ep_wa_off;
			ep->ep_wa_off = 0;
		}
		if (endpoint_flush(ep) == -1)
			return (errno == EPIPE || errno == ECONNRESET ?
			    WOLFSSL_CBIO_ERR_CONN_CLOSE :
			    WOLFSSL_CBIO_ERR_GENERAL);
		if (ep->ep_wa == NULL && (ep->ep_wa = bufpool_get()) == NULL)
			return (WOLFSSL_CBIO_ERR_GENERAL);
		room = BUFPOOL_SZ - ep->ep_wa_len;
		if (room == 0)
			return (WOLFSSL_CBIO_ERR_WANT_WRITE);
		if ((size_t)sz > room)
			sz = (int)room;
	}
	memcpy(ep->ep_wa + ep->ep_wa_len, buf, (size_t)sz);
	ep->ep_wa_len += (uint32_t)sz;
	return (sz);
}

int
endpoint_attach_tls(struct endpoint *ep, WOLFSSL *ssl)
{
	ep->ep_ssl = ssl;
	if (wolfSSL_set_fd(ssl, ep->ep_fd) != WOLFSSL_SUCCESS)
		return (-1);
	wolfSSL_SSLSetIORecv(ssl, tls_recv_cb);
	wolfSSL_SetIOReadCtx(ssl, ep);
	wolfSSL_SSLSetIOSend(ssl, tls_send_cb);
	wolfSSL_SetIOWriteCtx(ssl, ep);
	return (0);
}

/* Translate a wolfSSL result into a wait, EOF or error. */
static enum io
tls_result(struct endpoint *ep, int ret, short *wait, int *err)
{
	int e = wolfSSL_get_error(ep->ep_ssl, ret);

	if (ep->ep_cut) {
		*err = e;
		return (IO_ERR);	/* EOF inside a record: not an end */
	}
	switch (e) {
	case WOLFSSL_ERROR_WANT_READ:
		*wait = EV_READ;
		return (IO_WAIT);
	case WOLFSSL_ERROR_WANT_WRITE:
		*wait = EV_WRITE;
		return (IO_WAIT);
	case WOLFSSL_ERROR_ZERO_RETURN:
		ep->ep_closed_notify = 1;
		return (IO_EOF);
	case SOCKET_PEER_CLOSED_E:
		return (IO_EOF);	/* TCP FIN without close_notify */
	default:
		*err = e;
		return (IO_ERR);
	}
}

enum io
endpoint_read(struct endpoint *ep, uint8_t *buf, size_t len, size_t *got,
    int *err)
{
	ssize_t n;

	if (ep->ep_ssl != NULL) {
		n = wolfSSL_read(ep->ep_ssl, buf, (int)len);
		if (n > 0) {
			*got = (size_t)n;
			return (IO_OK);
		}
		return (tls_result(ep, (int)n, &ep->ep_rd_wait, err));
	}
	/*
	 * A short read left the socket empty: wait for EV_READ instead of a
	 * recv() that would only say EAGAIN (epoll is level-triggered, so
	 * data that arrived meanwhile still wakes us).
	 */
	if (ep->ep_drained) {
		ep->ep_rd_wait = EV_READ;
		return (IO_WAIT);
	}
	n = recv(ep->ep_fd, buf, len, 0);
	if (n > 0) {
		*got = (size_t)n;
		ep->ep_drained = (size_t)n < len;
		return (IO_OK);
	}
	if (n == 0)
		return (IO_EOF);
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		ep->ep_rd_wait = EV_READ;
		return (IO_WAIT);
	}
	*err = errno;
	return (IO_ERR);
}

enum io
endpoint_write(struct endpoint *ep, const uint8_t *buf, size_t len,
    size_t *put, int *err)
{
	ssize_t n;

	if (ep->ep_ssl != NULL) {
		n = wolfSSL_write(ep->ep_ssl, buf, (int)len);
		if (n > 0) {
			/* The records are staged; send them now if the
			 * socket takes them (else ep_wr_wait says so). */
			*put = (size_t)n;
			if (endpoint_flush(ep) == -1) {
				*err = SOCKET_ERROR_E;
				return (IO_ERR);
			}
			return (IO_OK);
		}
		return (tls_result(ep, (int)n, &ep->ep_wr_wait, err));
	}
	n = send(ep->ep_fd, buf, len, MSG_NOSIGNAL);
	if (n >= 0) {
		*put = (size_t)n;
		return (IO_OK);
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		ep->ep_wr_wait = EV_WRITE;
		return (IO_WAIT);
	}
	*err = errno;
	return (IO_ERR);
}

enum io
endpoint_shutdown(struct endpoint *ep)
{
	if (ep->ep_ssl != NULL) {
		if (!ep->ep_notify_sent) {
			/* Stages close_notify (sent once, never retried). */
			(void)wolfSSL_shutdown(ep->ep_ssl);
			ep->ep_notify_sent = 1;
		}
		/* A failed flush means the peer is gone: nothing more to say. */
		if (endpoint_pending(ep) && endpoint_flush(ep) == 0)
			return (IO_WAIT);
	}
	shutdown(ep->ep_fd, SHUT_WR);
	return (IO_OK);
}

const char *
endpoint_errstr(const struct endpoint *ep, int err)
{
	static __thread char buf[96];

	if (ep->ep_ssl != NULL && ep->ep_cut)
		return ("the TLS stream ended inside a record (truncated)");
	if (ep->ep_ssl != NULL) {
		wolfSSL_ERR_error_string_n((unsigned long)err, buf,
		    sizeof(buf));
		return (buf);
	}
	return (strerror(err));
}

void
endpoint_drop_output(struct endpoint *ep)
{
	bufpool_put(ep->ep_wa);
	ep->ep_wa = NULL;
	ep->ep_wa_off = ep->ep_wa_len = 0;
	ep->ep_wr_wait = 0;
}

int
endpoint_fill(struct endpoint *ep)
{
	size_t room;
	ssize_t n;
	uint8_t b;

	if (ep->ep_ra == NULL) {
		/* A silent peer holds no buffer. */
		n = recv(ep->ep_fd, &b, 1, MSG_PEEK);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep->ep_rd_wait = EV_READ;
			return (0);
		}
		if ((ep->ep_ra = bufpool_get()) == NULL)
			return (-1);
		return (1);
	}
	for (;;) {
		room = BUFPOOL_SZ - ep->ep_ra_len;
		n = recv(ep->ep_fd, ep->ep_ra + ep->ep_ra_len, room, 0);
		if (n > 0) {
			ep->ep_ra_len += (uint32_t)n;
			ep->ep_drained = (size_t)n < room;
			return (1);
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep->ep_rd_wait = EV_READ;
			return (0);
		}
		return (-2);
	}
}

void
endpoint_release(struct endpoint *ep)
{
	/* Best effort: an alert or close_notify still staged. */
	if (endpoint_pending(ep))
		(void)endpoint_flush(ep);
	if (ep->ep_ssl != NULL)
		wolfSSL_free(ep->ep_ssl);
	ep->ep_ssl = NULL;
	bufpool_put(ep->ep_ra);
	bufpool_put(ep->ep_wa);
	ep->ep_ra = ep->ep_wa = NULL;
	ep->ep_ra_off = ep->ep_ra_len = ep->ep_wa_off = ep->ep_wa_len = 0;
}
