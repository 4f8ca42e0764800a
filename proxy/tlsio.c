/*
 * tlsio.c: the TLS side of a connection: session setup (ALPN, SNI,
 * hostname), the non-blocking handshake, and the identity policy run inside
 * the handshake so a denied peer gets an alert and the target is never
 * dialled.
 */
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>

#include "../policy/certset.h"
#include "../policy/policy.h"
#include "conn.h"
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
	ep->ep_ssl = ssl;
	if (wolfSSL_set_fd(ssl, ep->ep_fd) != WOLFSSL_SUCCESS)
		return (-1);
	wolfSSL_SetCertCbCtx(ssl, c);
	if (rc->alpn.sl_n > 0) {
		strlist_join(&rc->alpn, ",", alpn, sizeof(alpn));
		if (wolfSSL_UseALPN(ssl, alpn, (unsigned)strlen(alpn),
		    rc->kind == ROUTE_SERVER ? WOLFSSL_ALPN_FAILED_ON_MISMATCH :
		    WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS)
			return (-1);
	}
	if (rc->kind != ROUTE_SERVER) {
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

int
tls_handshake(struct conn *c, struct endpoint *ep)
{
	WOLFSSL *ssl = ep->ep_ssl;
	int r, err;

	if (ep->ep_rd_wait || ep->ep_wr_wait)
		return (0);
	r = c->c_route->rt_conf->kind == ROUTE_SERVER ? wolfSSL_accept(ssl) :
	    wolfSSL_connect(ssl);
	if (r == WOLFSSL_SUCCESS)
		return (1);
	err = wolfSSL_get_error(ssl, r);
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
	struct route_conf *rc;
	struct peer_id id;

	if (c == NULL || c->c_magic != CONN_MAGIC)
		return (0);
	rc = c->c_route->rt_conf;
	if (store->error_depth != 0)
		return (preverify);
	if (store->certs != NULL && store->totalCerts > 0 &&
	    peer_id_from_der(store->certs[0].buffer, store->certs[0].length,
	    &id) == 0) {
		snprintf(c->c_cn, sizeof(c->c_cn), "%s", id.pi_cn);
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
	if (!policy_allows(&rc->sec, &id)) {
		c->c_result = "denied";
		c->c_why = WHY_POLICY;
		snprintf(c->c_reason, sizeof(c->c_reason),
		    "certificate identity not allowed");
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
