/*
 * tls.c: TLS sessions on endpoints: setup (ALPN, SNI, hostname, key
 * shares), the non-blocking handshake, ALPN selection on server routes,
 * and the identity policy run inside the handshake so a denied peer gets
 * an alert and the caller never dials the target for it.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "../policy/certset.h"
#include "../policy/crl.h"
#include "../policy/hostname.h"
#include "../policy/policy.h"
#include "conf.h"
#include "endpoint.h"
#include "hello.h"
#include "log.h"
#include "tls.h"

int
tls_setup(struct tls_session *ts, struct endpoint *ep,
    const struct tls_params *p)
{
	char alpn[512];
	WOLFSSL *ssl;

	memset(ts, 0, sizeof(*ts));
	ts->ts_p = *p;
	ts->ts_v.tv_magic = TLS_VERDICT_MAGIC;
	ts->ts_v.tv_rules = p->tp_rules;
	ts->ts_v.tv_server_name = p->tp_kind == TLS_SERVER ? NULL :
	    p->tp_server_name;
	ts->ts_v.tv_certs = p->tp_certs;
	if ((ssl = wolfSSL_new(p->tp_ctx)) == NULL)
		return (-1);
	ts->ts_v.tv_ssl = ssl;
	if (endpoint_attach_tls(ep, ssl) == -1)
		return (-1);
	wolfSSL_SetCertCbCtx(ssl, &ts->ts_v);
	if (p->tp_kind == TLS_SERVER)
		return (0);	/* ALPN once it has seen the ClientHello */
	if (p->tp_alpn->sl_n > 0) {
		strlist_join(p->tp_alpn, ",", alpn, sizeof(alpn));
		if (wolfSSL_UseALPN(ssl, alpn, (unsigned)strlen(alpn),
		    WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS)
			return (-1);
	}
	if (certset_key_shares(ssl) == -1)
		return (-1);
	if (p->tp_sni[0] != '\0' && wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME,
	    p->tp_sni, (unsigned short)strlen(p->tp_sni)) != WOLFSSL_SUCCESS)
		return (-1);
	/* server-name is checked in tls_verify_cb (policy/hostname.c):
	 * wolfSSL's own check refuses single labels and addresses. */
	return (0);
}

/* A failure of the handshake itself (not the verdict's). */
static enum tls_status
failed(struct tls_verdict *v, const char *why)
{
	snprintf(v->tv_reason, sizeof(v->tv_reason), "%s", why);
	v->tv_why = TLS_WHY_HANDSHAKE;
	v->tv_denied = 0;
	v->tv_failed = 1;
	return (TLS_FAIL);
}

/* A short reason for a failed handshake, from the error and the alerts. */
static void
handshake_reason(struct tls_verdict *v, WOLFSSL *ssl, int err)
{
	WOLFSSL_ALERT_HISTORY h;
	char es[80];

	if (v->tv_reason[0] != '\0')
		return;		/* the verify callback said why */
	wolfSSL_ERR_error_string_n((unsigned long)err, es, sizeof(es));
	memset(&h, 0, sizeof(h));
	wolfSSL_get_alert_history(ssl, &h);
	v->tv_why = err == NO_PEER_CERT ? TLS_WHY_NOCERT : TLS_WHY_HANDSHAKE;
	if (h.last_rx.code > 0 && h.last_rx.level == alert_fatal)
		snprintf(v->tv_reason, sizeof(v->tv_reason),
		    "peer sent alert %d: %s", h.last_rx.code, es);
	else if (err == NO_PEER_CERT)
		snprintf(v->tv_reason, sizeof(v->tv_reason),
		    "no client certificate");
	else if (err == SOCKET_PEER_CLOSED_E || err == SOCKET_ERROR_E)
		snprintf(v->tv_reason, sizeof(v->tv_reason),
		    "peer closed the connection during the handshake");
	else
		snprintf(v->tv_reason, sizeof(v->tv_reason), "%s", es);
}

/*
 * Read the first record into the endpoint's read-ahead, where wolfSSL
 * reads it next.  Bytes are read, not peeked: a record that arrives in
 * pieces waits for the next piece instead of finding the socket readable
 * again at once (a peeked 5-byte header kept the level-triggered event
 * firing until the deadline).  A record never exceeds the buffer.
 * 1 with the verdict in *r, 0 waiting for more, -1 no memory.
 */
static int
hello_read(struct endpoint *ep, enum hello_verdict *r, const uint8_t **list,
    size_t *len)
{
	for (;;) {
		*r = hello_parse(ep->ep_ra, ep->ep_ra_len, list, len);
		if (*r != HELLO_MORE)
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
 */
static enum tls_status
alpn_select(struct tls_session *ts, struct endpoint *ep)
{
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, alert_fatal,
	    decode_error };
	const struct strlist *alpn = ts->ts_p.tp_alpn;
	const uint8_t *list = NULL;
	enum hello_verdict r = HELLO_MORE;
	char all[512];
	size_t len = 0, i;
	int got;

	if (alpn->sl_n == 0)
		return (TLS_DONE);
	if ((got = hello_read(ep, &r, &list, &len)) != 1)
		return (got == 0 ? TLS_WAIT : failed(&ts->ts_v,
		    "out of memory"));
	if (r == HELLO_BAD_ALPN) {
		/* A fresh socket's send buffer takes 7 bytes. */
		(void)send(ep->ep_fd, alert, sizeof(alert), MSG_NOSIGNAL);
		return (failed(&ts->ts_v, "malformed ClientHello: its ALPN "
		    "extension does not parse (sent decode_error)"));
	}
	if (r != HELLO_ALPN)
		return (TLS_DONE);
	for (i = 0; i < alpn->sl_n; i++)
		if (hello_offers(list, len, alpn->sl_v[i])) {
			wolfSSL_UseALPN(ep->ep_ssl, alpn->sl_v[i],
			    (unsigned)strlen(alpn->sl_v[i]),
			    WOLFSSL_ALPN_FAILED_ON_MISMATCH);
			return (TLS_DONE);
		}
	strlist_join(alpn, ",", all, sizeof(all));
	wolfSSL_UseALPN(ep->ep_ssl, all, (unsigned)strlen(all),
	    WOLFSSL_ALPN_FAILED_ON_MISMATCH);
	return (TLS_DONE);
}

enum tls_status
tls_handshake(struct tls_session *ts, struct endpoint *ep)
{
	struct tls_verdict *v = &ts->ts_v;
	WOLFSSL *ssl = ep->ep_ssl;
	enum tls_status st;
	int r, err;

	/*
	 * A staged flight goes out before anything else, also while wolfSSL
	 * waits to read: the peer answers only once it has the whole flight.
	 */
	if (endpoint_pending(ep) && !ep->ep_wr_wait &&
	    endpoint_flush(ep) == -1)
		return (failed(v, "peer closed the connection during the "
		    "handshake"));
	if (ep->ep_rd_wait || ep->ep_wr_wait)
		return (TLS_WAIT);
	if (wolfSSL_is_init_finished(ssl))
		return (TLS_DONE);	/* the last flight was flushed above */
	if (ts->ts_p.tp_kind == TLS_SERVER && !ts->ts_hello_done) {
		if ((st = alpn_select(ts, ep)) != TLS_DONE)
			return (st);
		ts->ts_hello_done = 1;
	}
	r = ts->ts_p.tp_kind == TLS_SERVER ? wolfSSL_accept(ssl) :
	    wolfSSL_connect(ssl);
	err = r == WOLFSSL_SUCCESS ? 0 : wolfSSL_get_error(ssl, r);
	/* Send the flight (or the alert) wolfSSL staged. */
	if (endpoint_pending(ep) && endpoint_flush(ep) == -1 && err == 0)
		err = SOCKET_ERROR_E;
	if (r == WOLFSSL_SUCCESS && err == 0)
		return (endpoint_pending(ep) ? TLS_WAIT : TLS_DONE);
	if (err == WOLFSSL_ERROR_WANT_READ) {
		ep->ep_rd_wait = EV_READ;
		return (TLS_WAIT);
	}
	if (err == WOLFSSL_ERROR_WANT_WRITE) {
		ep->ep_wr_wait = EV_WRITE;
		return (TLS_WAIT);
	}
	handshake_reason(v, ssl, err);
	if (!v->tv_denied)
		v->tv_failed = 1;
	return (TLS_FAIL);
}

/*
 * wolfSSL's own alert (sent after the callback) is certificate_revoked only
 * in builds with its OpenSSL layer; this one goes first.  Internal to
 * wolfSSL, linked from the static library.
 */
int SendAlert(WOLFSSL *, int, int);

/*
 * The leaf failed wolfSSL's CRL check (err): a denial, with the reason the
 * metrics and the log name.  0 when err is no CRL verdict.
 */
static int
crl_verdict(struct tls_verdict *v, int err, const WOLFSSL_BUFFER_INFO *leaf)
{
	const struct crl_info *ci;
	char serial[80], when[32];
	struct tm tm;

	if (err != CRL_CERT_REVOKED && err != CRL_CERT_DATE_ERR &&
	    err != CRL_MISSING)
		return (0);
	v->tv_denied = 1;
	if (err == CRL_CERT_REVOKED) {
		crl_serial_hex(leaf ? leaf->buffer : NULL, leaf ? leaf->length :
		    0, serial, sizeof(serial));
		v->tv_why = TLS_WHY_REVOKED;
		snprintf(v->tv_reason, sizeof(v->tv_reason), "certificate "
		    "revoked (serial %s)", serial);
		if (v->tv_ssl != NULL)
			(void)SendAlert(v->tv_ssl, alert_fatal,
			    certificate_revoked);
		return (1);
	}
	ci = v->tv_certs ? certset_crl_expired(v->tv_certs, time(NULL)) : NULL;
	if (err == CRL_CERT_DATE_ERR || ci != NULL) {
		v->tv_why = TLS_WHY_CRL_EXPIRED;
		when[0] = '\0';
		if (ci != NULL) {
			gmtime_r(&ci->ci_next_update, &tm);
			strftime(when, sizeof(when), " at %Y-%m-%dT%H:%M:%SZ",
			    &tm);
		}
		snprintf(v->tv_reason, sizeof(v->tv_reason), "crl_expired: the "
		    "CRL of %.80s passed its nextUpdate%s; refusing until "
		    "ssl-crl is renewed", ci ? ci->ci_issuer : "the issuer",
		    when);
		return (1);
	}
	v->tv_why = TLS_WHY_CRL_MISSING;
	snprintf(v->tv_reason, sizeof(v->tv_reason), "crl_missing: ssl-crl "
	    "holds no CRL of the certificate's issuer");
	return (1);
}

int
tls_verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_verdict *v = store->userCtx;
	struct peer_id id;

	if (v == NULL || v->tv_magic != TLS_VERDICT_MAGIC)
		return (0);
	if (store->error_depth != 0)
		return (preverify);
	if (store->certs != NULL && store->totalCerts > 0 &&
	    peer_id_from_der(store->certs[0].buffer, store->certs[0].length,
	    &id) == 0) {
		peer_id_cn(&id, v->tv_cn, sizeof(v->tv_cn));
		peer_id_sans(&id, v->tv_sans, sizeof(v->tv_sans));
	} else
		memset(&id, 0, sizeof(id));
	if (!preverify && crl_verdict(v, store->error, store->certs != NULL &&
	    store->totalCerts > 0 ? &store->certs[0] : NULL))
		return (0);
	if (!preverify) {
		v->tv_failed = 1;
		v->tv_why = TLS_WHY_VERIFY;
		snprintf(v->tv_reason, sizeof(v->tv_reason),
		    "certificate verification failed: %s",
		    wolfSSL_ERR_reason_error_string(
		    (unsigned long)store->error));
		return (0);
	}
	if (v->tv_server_name != NULL &&
	    !hostname_matches(&id, v->tv_server_name)) {
		v->tv_failed = 1;
		v->tv_why = TLS_WHY_VERIFY;
		snprintf(v->tv_reason, sizeof(v->tv_reason), "certificate does "
		    "not match server-name %.64s (SANs %.72s)",
		    v->tv_server_name, v->tv_sans[0] ? v->tv_sans : "none");
		return (0);
	}
	if (!policy_allows(v->tv_rules, &id)) {
		v->tv_denied = 1;
		v->tv_why = TLS_WHY_POLICY;
		policy_denial(v->tv_rules, &id, v->tv_reason,
		    sizeof(v->tv_reason));
		return (0);
	}
	return (1);
}

void
tls_log_fields(const struct endpoint *ep, struct logline *l)
{
	char *proto = NULL;
	unsigned short plen = 0;
	char alpn[64];

	if (ep->ep_ssl == NULL || !wolfSSL_is_init_finished(ep->ep_ssl))
		return;
	if (wolfSSL_ALPN_GetProtocol(ep->ep_ssl, &proto, &plen) ==
	    WOLFSSL_SUCCESS && proto != NULL && plen > 0) {
		snprintf(alpn, sizeof(alpn), "%.*s", (int)plen, proto);
		log_str(l, "alpn", alpn);
	}
	log_str(l, "tls", wolfSSL_get_version(ep->ep_ssl));
	log_str(l, "cipher", wolfSSL_get_cipher_name(ep->ep_ssl));
}
