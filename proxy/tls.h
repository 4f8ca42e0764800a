/*
 * tls.h: a TLS session on an endpoint: set up from explicit parameters,
 * driven through its handshake without blocking, with the identity policy
 * run inside the handshake (a denied peer gets an alert, and the caller
 * learns it before anything else happens).
 */
#ifndef DMTLS_TLS_H
#define DMTLS_TLS_H

#include <stdint.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "endpoint.h"

struct certset;
struct logline;
struct policy_rules;
struct strlist;

enum tls_kind { TLS_SERVER, TLS_CLIENT };

/* Where a handshake is. */
enum tls_status {
	TLS_DONE,		/* finished, the last flight sent */
	TLS_WAIT,		/* the endpoint's waits say for what */
	TLS_FAIL		/* over: the verdict says why */
};

/* Why a handshake failed. */
enum tls_why {
	TLS_WHY_NONE = 0,
	TLS_WHY_POLICY,		/* identity not in the allow-list */
	TLS_WHY_REVOKED,	/* the leaf is in a CRL of ssl-crl */
	TLS_WHY_CRL_EXPIRED,	/* its CA's CRL is past nextUpdate */
	TLS_WHY_CRL_MISSING,	/* ssl-crl holds no CRL of its CA */
	TLS_WHY_VERIFY,		/* chain, date or hostname verification */
	TLS_WHY_NOCERT,		/* no client certificate */
	TLS_WHY_HANDSHAKE	/* any other handshake failure */
};

#define TLS_VERDICT_MAGIC	0x76726463U	/* "vrdc" */

/*
 * What the handshake found out about the peer.  The verify callback gets
 * it as its context and fills it; a failed handshake adds its reason.
 */
struct tls_verdict {
	uint32_t		 tv_magic;	/* while the session lives */
	const struct policy_rules *tv_rules;	/* in: whom to allow */
	const char		*tv_server_name; /* in: client: the name the
						 * leaf's SANs must hold */
	const struct certset	*tv_certs;	/* in: the set (its CRLs) */
	WOLFSSL			*tv_ssl;	/* in: to send an alert */
	char			 tv_cn[256];	/* the peer leaf's CNs */
	char			 tv_sans[256];
	char			 tv_reason[200];	/* why it failed */
	enum tls_why		 tv_why;
	unsigned		 tv_denied:1;	/* the rules refused the peer */
	unsigned		 tv_failed:1;	/* anything else went wrong */
};

/* What a session is set up from; the pointers must outlive the session. */
struct tls_params {
	WOLFSSL_CTX		*tp_ctx;	/* the certificate set's */
	const struct certset	*tp_certs;	/* that set, or NULL */
	enum tls_kind		 tp_kind;
	const struct strlist	*tp_alpn;	/* client: offered; server:
						 * the first the client
						 * offers is selected */
	const char		*tp_sni;	/* client: "" for none */
	const char		*tp_server_name; /* client: verify, or NULL */
	const struct policy_rules *tp_rules;
};

/* A session's state besides the WOLFSSL the endpoint holds. */
struct tls_session {
	struct tls_params	 ts_p;
	struct tls_verdict	 ts_v;
	int			 ts_hello_done;	/* server: ClientHello read */
};

/*
 * tls_setup(ts, ep, p): a TLS session of kind p->tp_kind on ep (which owns
 * the WOLFSSL from here on, also on failure): ALPN (a client's; a server
 * sets its own once it has read the ClientHello), SNI, hostname, key
 * shares.  ts must stay where it is while the session lives: the verify
 * callback writes to ts->ts_v.  0, or -1 when wolfSSL refuses.
 */
int tls_setup(struct tls_session *, struct endpoint *,
    const struct tls_params *);

/*
 * tls_handshake(ts, ep): advance the handshake as far as it goes.  With
 * TLS_FAIL, ts->ts_v holds the reason (tv_reason), why (tv_why) and
 * whether the peer was denied or the handshake failed; an alert wolfSSL
 * staged has been sent when the socket took it.  Never closes anything.
 */
enum tls_status tls_handshake(struct tls_session *, struct endpoint *);

/*
 * tls_verify_cb: the identity policy inside the handshake, for
 * wolfSSL_CTX_set_verify(); its context is a struct tls_verdict.
 */
int tls_verify_cb(int, WOLFSSL_X509_STORE_CTX *);

/* tls_log_fields(ep, l): alpn=, tls= and cipher= of a finished session. */
void tls_log_fields(const struct endpoint *, struct logline *);

#endif
