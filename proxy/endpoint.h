/*
 * endpoint.h: one side of a proxied connection: a non-blocking socket,
 * with or without a TLS session on it, and the buffers between the two:
 * TLS read-ahead, TLS output staged for one send(), and what each blocked
 * operation waits for.  An endpoint knows nothing of connections, routes
 * or the other side; its owner polls its fd for ep_rd_wait | ep_wr_wait
 * and calls endpoint_ready() when the event fires.
 */
#ifndef DMTLS_ENDPOINT_H
#define DMTLS_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

/* Result of one I/O attempt on an endpoint. */
enum io { IO_OK, IO_EOF, IO_WAIT, IO_ERR };

struct endpoint {
	int		 ep_fd;		/* -1 until there is a socket */
	WOLFSSL		*ep_ssl;	/* NULL on the plaintext side */
	short		 ep_rd_wait;	/* a read is blocked until this fires */
	short		 ep_wr_wait;	/* a write is blocked until this fires */
	uint8_t		*ep_ra;		/* TLS read-ahead (pooled), or NULL */
	uint32_t	 ep_ra_off;
	uint32_t	 ep_ra_len;
	uint8_t		*ep_wa;		/* TLS output staged (pooled), or NULL */
	uint32_t	 ep_wa_off;
	uint32_t	 ep_wa_len;
	unsigned	 ep_notify_sent:1; /* close_notify staged */
	unsigned	 ep_rd_eof:1;	/* the peer ended its sending side */
	unsigned	 ep_drained:1;	/* the last recv() came back short */
	unsigned	 ep_closed_notify:1; /* ... with a TLS close_notify */
	/* TLS record boundaries of what wolfSSL was given, so an EOF inside
	 * a record (a cut stream) is told from one between records. */
	uint16_t	 ep_rec_left;	/* body bytes of the current record */
	uint8_t		 ep_rec_hlen;	/* header bytes seen (0-4) */
	uint8_t		 ep_rec_hi;	/* high byte of its length */
	unsigned	 ep_cut:1;	/* the stream ended inside a record */
};

/* endpoint_init(ep, fd): an endpoint on fd (-1: no socket yet). */
void endpoint_init(struct endpoint *, int);

/*
 * endpoint_attach_tls(ep, ssl): speak TLS on ep through ssl, whose I/O
 * goes through ep's buffers from now on.  ep owns ssl from here on, also
 * when this fails.  0, or -1 when wolfSSL refuses.
 */
int endpoint_attach_tls(struct endpoint *, WOLFSSL *);

/*
 * endpoint_ready(ep, what): EV_READ and/or EV_WRITE fired on ep's fd: the
 * waits they satisfy are over.
 */
void endpoint_ready(struct endpoint *, short);

/*
 * endpoint_read/endpoint_write(ep, buf, len, n, err): one non-blocking
 * read or write, through TLS when ep has a session.  IO_WAIT records in
 * ep_rd_wait/ep_wr_wait what must fire first; IO_ERR leaves a code in err
 * for endpoint_errstr().  A write that waited must be retried with the same
 * bytes.  A TLS stream cut inside a record reads as IO_ERR, never IO_EOF.
 */
enum io endpoint_read(struct endpoint *, uint8_t *, size_t, size_t *, int *);
enum io endpoint_write(struct endpoint *, const uint8_t *, size_t, size_t *,
    int *);

/* endpoint_errstr(ep, err): a short description of an IO_ERR code. */
const char *endpoint_errstr(const struct endpoint *, int);

/*
 * endpoint_shutdown(ep): end our sending side: TLS close_notify (staged
 * once), then TCP FIN.  IO_OK done, IO_WAIT while the close_notify waits
 * for the socket (ep_wr_wait set).  The other direction keeps flowing.
 */
enum io endpoint_shutdown(struct endpoint *);

/*
 * endpoint_flush(ep): send the TLS output staged for ep (records of a
 * write, a handshake flight, an alert).  1 all sent, 0 would block
 * (ep_wr_wait set), -1 error (errno).
 */
int endpoint_flush(struct endpoint *);

/* endpoint_pending(ep): 1 while TLS output is staged for ep. */
#define endpoint_pending(ep)	((ep)->ep_wa_len > (ep)->ep_wa_off)

/* endpoint_drop_output(ep): forget staged output that cannot leave. */
void endpoint_drop_output(struct endpoint *);

/*
 * endpoint_fill(ep): read what the socket holds into ep's read-ahead,
 * where TLS will read it first, without handing it to TLS yet; for a
 * caller that must look at the first bytes (a ClientHello) before TLS
 * does.  The bytes so far are ep_ra[0..ep_ra_len).  A silent peer holds
 * no buffer.  1 when the buffer was taken or more bytes arrived, 0 waiting
 * (ep_rd_wait set), -1 out of memory, -2 end of stream or error (what is
 * buffered stays for TLS).
 */
int endpoint_fill(struct endpoint *);

/*
 * endpoint_release(ep): send what TLS output is still staged (best effort),
 * free the TLS session and the buffers.  The socket is left to the caller.
 */
void endpoint_release(struct endpoint *);

#endif
