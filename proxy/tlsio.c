/*
 * tlsio.c: the TLS side of a connection: session setup (ALPN, SNI,
 * hostname), the non-blocking handshake, and the identity policy run inside
 * the handshake so a denied peer gets an alert and the target is never
 * dialled.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include "../policy/certset.h"
#include "../policy/policy.h"
#include "conn.h"
#include "endpoint.h"
#include "log.h"
#include "route.h"

int
tls_setup(struct conn *c, struct endpoint *ep)
{
	struct route_rt *rt = c->c_route;
	struct route_conf *rc = rt->rt_conf;
	char alpn[512];
	WOLFSSL *ssl;

	if ((ssl = wolfSSL_new(certset_ctx(c->c_cs))) == NULL)
		return (-1);
	if (endpoint_attach_tls(ep, ssl) == -1)
		return (-1);
	wolfSSL_SetCertCbCtx(ssl, c);
	/* A server route sets ALPN once it has seen the ClientHello. */
	if (rc->kind != ROUTE_SERVER && rc->alpn.sl_n > 0) {
		strlist_join(&rc->alpn, ",", alpn, sizeof(alpn));
		if (wolfSSL_UseALPN(ssl, alpn, (unsigned)strlen(alpn),
		    WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS)
			return (-1);
	}
	if (rc->kind != ROUTE_SERVER) {
		if (certset_key_shares(ssl) == -1)
			return (-1);
		if (rt->rt_sni[0] != '\0' && wolfSSL_UseSNI(ssl,
		    WOLFSSL_SNI_HOST_NAME, rt->rt_sni,
		    (unsigned short)strlen(rt->rt_sni)) != WOLFSSL_SUCCESS)
			return (-1);
		if (rc->sec.server_name != NULL &&
		    wolfSSL_check_domain_name(ssl, rc->sec.server_name) !=
		    WOLFSSL_SUCCESS)
			return (-1);
	}
	return (0);
}

/* A short reason for a failed handshake, from the error and the alerts. */
static void
handshake_reason(struct conn *c, WOLFSSL *ssl, int err)
{
	WOLFSSL_ALERT_HISTORY h;
	char es[80];

	if (c->c_reason[0] != '\0')
		return;		/* the verify callback said why */
	wolfSSL_ERR_error_string_n((unsigned long)err, es, sizeof(es));
	memset(&h, 0, sizeof(h));
	wolfSSL_get_alert_history(ssl, &h);
	c->c_why = err == NO_PEER_CERT ? WHY_NOCERT : WHY_HANDSHAKE;
	if (h.last_rx.code > 0 && h.last_rx.level == alert_fatal)
		snprintf(c->c_reason, sizeof(c->c_reason),
		    "peer sent alert %d: %s", h.last_rx.code, es);
	else if (err == NO_PEER_CERT)
		snprintf(c->c_reason, sizeof(c->c_reason),
		    "no client certificate");
	else if (err == SOCKET_PEER_CLOSED_E || err == SOCKET_ERROR_E)
		snprintf(c->c_reason, sizeof(c->c_reason),
		    "peer closed the connection during the handshake");
	else
		snprintf(c->c_reason, sizeof(c->c_reason), "%s", es);
}

/* A TLS plaintext record holds at most 2^14 bytes (RFC 8446 5.1). */
#define TLS_RECORD_MAX	16384

/*
 * Check an ALPN extension's data (RFC 7301 3.1): a list length that covers
 * the rest exactly, then one or more names of 1 to 255 bytes that fill the
 * list exactly.  0 well-formed, -1 not.
 */
static int
alpn_parses(const uint8_t *p, size_t elen)
{
	size_t len, off;

	if (elen < 2)
		return (-1);
	len = (size_t)p[0] << 8 | p[1];
	if (len < 2 || len + 2 != elen)
		return (-1);
	for (off = 2; off < elen; off += 1 + p[off])
		if (p[off] == 0 || off + 1 + p[off] > elen)
			return (-1);
	return (0);
}

/*
 * Find the protocols a ClientHello offers (ALPN extension) in buf.
 * Returns 1 with the list (length-prefixed names, checked) in list and len,
 * 0 when it offers none, -1 when more bytes are needed, -2 when it is not a
 * ClientHello dmtls can read in one record (wolfSSL will judge it), -3 when
 * its ALPN extension does not parse.
 */
static int
hello_alpn(const uint8_t *buf, size_t n, const uint8_t **list, size_t *len)
{
	size_t rec, off, end, elen, skip;

	if (n < 5)
		return (-1);
	if (buf[0] != 22)		/* handshake record */
		return (-2);
	rec = (size_t)buf[3] << 8 | buf[4];
	if (rec > TLS_RECORD_MAX)
		return (-2);
	if (n < 5 + rec)
		return (-1);
	end = 5 + rec;
	if (rec < 4 || buf[5] != 1)	/* client_hello */
		return (-2);
	off = 9 + 2 + 32;		/* headers, version, random */
	if (off + 1 > end)
		return (-2);
	off += 1 + buf[off];		/* session id */
	if (off + 2 > end)
		return (-2);
	off += 2 + ((size_t)buf[off] << 8 | buf[off + 1]);	/* suites */
	if (off + 1 > end)
		return (-2);
	off += 1 + buf[off];		/* compression */
	if (off + 2 > end)
		return (off == end ? 0 : -2);
	skip = (size_t)buf[off] << 8 | buf[off + 1];
	off += 2;
	if (off + skip > end)
		return (-2);
	end = off + skip;
	while (off + 4 <= end) {
		elen = (size_t)buf[off + 2] << 8 | buf[off + 3];
		if (off + 4 + elen > end)
			return (-2);
		if (buf[off] == 0 && buf[off + 1] == 16) {	/* ALPN */
			if (alpn_parses(buf + off + 4, elen) == -1)
				return (-3);
			*len = elen - 2;
			*list = buf + off + 6;
			return (1);
		}
		off += 4 + elen;
	}
	return (0);
}

static int
offered(const uint8_t *list, size_t len, const char *proto)
{
	size_t off = 0, plen = strlen(proto);

	while (off < len) {
		size_t l = list[off];
		if (off + 1 + l > len)
			return (0);
		if (l == plen && memcmp(list + off + 1, proto, plen) == 0)
			return (1);
		off += 1 + l;
	}
	return (0);
}

/*
 * Read the first record into the endpoint's read-ahead, where wolfSSL
 * reads it next.  Bytes are read, not peeked: a record that arrives in
 * pieces waits for the next piece instead of finding the socket readable
 * again at once (a peeked 5-byte header kept the level-triggered event
 * firing until the deadline).  A record never exceeds the buffer.
 * 1 with r set (hello_alpn's verdict), 0 waiting for more, -1 no memory.
 */
static int
hello_read(struct endpoint *ep, int *r, const uint8_t **list, size_t *len)
{
	for (;;) {
		*r = hello_alpn(ep->ep_ra, ep->ep_ra_len, list, len);
		if (*r != -1)
			return (1);
		switch (endpoint_fill(ep)) {
		case 1:
			continue;
		case 0:
			return (0);
		case -1:
			return (-1);
		default:
			/* EOF or error: wolfSSL reads what is here first. */
			return (1);
		}
	}
}

/*
 * Server routes select the first protocol of the route's list that the
 * client offers (wolfSSL alone would follow the client's order): read the
 * ClientHello, then give wolfSSL just that protocol.  A client that offers
 * only others is refused with no_application_protocol; one that offers
 * none gets none.  One whose ALPN extension does not parse is refused here
 * with decode_error, before wolfSSL reads it (wolfSSL before 5.9.0
 * over-reads such a list: CVE-2026-3547).
 * 1 done, 0 waiting for more bytes, -1 refused (the reason recorded).
 */
static int
alpn_select(struct conn *c, struct endpoint *ep)
{
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, alert_fatal,
	    decode_error };
	const struct route_conf *rc = c->c_route->rt_conf;
	const uint8_t *list = NULL;
	char all[512];
	size_t len = 0, i;
	int r = 0, got;

	if (rc->alpn.sl_n == 0)
		return (1);
	if ((got = hello_read(ep, &r, &list, &len)) != 1) {
		if (got == 0)
			return (0);
		c->c_result = "failed";
		c->c_why = WHY_HANDSHAKE;
		snprintf(c->c_reason, sizeof(c->c_reason), "out of memory");
		return (-1);
	}
	if (r == -3) {
		/* A fresh socket's send buffer takes 7 bytes. */
		(void)send(ep->ep_fd, alert, sizeof(alert), MSG_NOSIGNAL);
		c->c_result = "failed";
		c->c_why = WHY_HANDSHAKE;
		snprintf(c->c_reason, sizeof(c->c_reason), "malformed "
		    "ClientHello: its ALPN extension does not parse "
		    "(sent decode_error)");
		return (-1);
	}
	if (r != 1)
		return (1);
	for (i = 0; i < rc->alpn.sl_n; i++)
		if (offered(list, len, rc->alpn.sl_v[i])) {
			wolfSSL_UseALPN(ep->ep_ssl, rc->alpn.sl_v[i],
			    (unsigned)strlen(rc->alpn.sl_v[i]),
			    WOLFSSL_ALPN_FAILED_ON_MISMATCH);
			return (1);
		}
	strlist_join(&rc->alpn, ",", all, sizeof(all));
	wolfSSL_UseALPN(ep->ep_ssl, all, (unsigned)strlen(all),
	    WOLFSSL_ALPN_FAILED_ON_MISMATCH);
	return (1);
}

int
tls_handshake(struct conn *c, struct endpoint *ep)
{
	WOLFSSL *ssl = ep->ep_ssl;
	int r, err;

	/*
	 * A staged flight goes out before anything else, also while wolfSSL
	 * waits to read: the peer answers only once it has the whole flight.
	 */
	if (endpoint_pending(ep) && !ep->ep_wr_wait && endpoint_flush(ep) == -1) {
		snprintf(c->c_reason, sizeof(c->c_reason), "peer closed the "
		    "connection during the handshake");
		c->c_result = "failed";
		c->c_why = WHY_HANDSHAKE;
		conn_close(c, NULL);
		return (-1);
	}
	if (ep->ep_rd_wait || ep->ep_wr_wait)
		return (0);
	if (wolfSSL_is_init_finished(ssl)) {
		/* Done; the last flight was flushed above. */
		return (1);
	}
	if (c->c_route->rt_conf->kind == ROUTE_SERVER && !c->c_alpn_done) {
		if ((r = alpn_select(c, ep)) == 0)
			return (0);
		if (r == -1) {
			conn_close(c, NULL);	/* alpn_select said why */
			return (-1);
		}
		c->c_alpn_done = 1;
	}
	r = c->c_route->rt_conf->kind == ROUTE_SERVER ? wolfSSL_accept(ssl) :
	    wolfSSL_connect(ssl);
	err = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(ssl, r);
	/* Send the flight (or the alert) wolfSSL staged. */
	if (endpoint_pending(ep) && endpoint_flush(ep) == -1 && err == 0)
		err = SOCKET_ERROR_E;
	if (r == WOLFSSL_SUCCESS && err == 0)
		return (endpoint_pending(ep) ? 0 : 1);
	if (err == WOLFSSL_ERROR_WANT_READ) {
		ep->ep_rd_wait = EV_READ;
		return (0);
	}
	if (err == WOLFSSL_ERROR_WANT_WRITE) {
		ep->ep_wr_wait = EV_WRITE;
		return (0);
	}
	handshake_reason(c, ssl, err);
	if (strcmp(c->c_result, "denied") != 0)
		c->c_result = "failed";
	conn_close(c, NULL);
	return (-1);
}

int
tls_verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct conn *c = store->userCtx;
	struct peer_id id;

	if (c == NULL || c->c_magic != CONN_MAGIC)
		return (0);
	if (store->error_depth != 0)
		return (preverify);
	if (store->certs != NULL && store->totalCerts > 0 &&
	    peer_id_from_der(store->certs[0].buffer, store->certs[0].length,
	    &id) == 0) {
		peer_id_cn(&id, c->c_cn, sizeof(c->c_cn));
		peer_id_sans(&id, c->c_sans, sizeof(c->c_sans));
	} else
		memset(&id, 0, sizeof(id));
	if (!preverify) {
		c->c_result = "failed";
		c->c_why = WHY_VERIFY;
		snprintf(c->c_reason, sizeof(c->c_reason),
		    "certificate verification failed: %s",
		    wolfSSL_ERR_reason_error_string(
		    (unsigned long)store->error));
		return (0);
	}
	if (!policy_allows(&c->c_route->rt_rules, &id)) {
		c->c_result = "denied";
		c->c_why = WHY_POLICY;
		policy_denial(&c->c_route->rt_rules, &id, c->c_reason,
		    sizeof(c->c_reason));
		return (0);
	}
	return (1);
}

void
tls_log_fields(const struct conn *c, struct logline *l)
{
	const struct endpoint *ep;
	char *proto = NULL;
	unsigned short plen = 0;
	char alpn[64];

	ep = &c->c_ep[c->c_route->rt_conf->kind == ROUTE_SERVER ? 0 : 1];
	if (ep->ep_ssl == NULL || c->c_state == CS_HANDSHAKE ||
	    !wolfSSL_is_init_finished(ep->ep_ssl))
		return;
	if (wolfSSL_ALPN_GetProtocol(ep->ep_ssl, &proto, &plen) ==
	    WOLFSSL_SUCCESS && proto != NULL && plen > 0) {
		snprintf(alpn, sizeof(alpn), "%.*s", (int)plen, proto);
		log_str(l, "alpn", alpn);
	}
	log_str(l, "tls", wolfSSL_get_version(ep->ep_ssl));
	log_str(l, "cipher", wolfSSL_get_cipher_name(ep->ep_ssl));
}
