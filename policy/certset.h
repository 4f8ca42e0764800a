/*
 * certset.h: a route's certificate files, reread for every new connection.
 *
 * A certsrc belongs to one route and remembers the set in use.  For every
 * new connection certsrc_acquire() reads ssl-ca, ssl-cert, ssl-key and the
 * ssl-crl files again:
 * unchanged bytes reuse the TLS context already built; changed, valid bytes
 * build and publish a new set for this and later connections; broken bytes
 * keep the last good set and are logged once per distinct bad state.
 * Sets are reference counted, so open connections keep theirs.
 */
#ifndef DMTLS_CERTSET_H
#define DMTLS_CERTSET_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

struct certset;
struct certsrc;

/*
 * What certset has to say, for its user's log: an event name, and either a
 * sentence (cn_msg) or, for "cert_reload_failed", the fields of the fault.
 */
struct certset_note {
	int		 cn_warn;	/* a warning, else information */
	const char	*cn_event;	/* "cert_reloaded", "cert_not_from_ca"... */
	const char	*cn_msg;	/* one sentence, or NULL */
	const char	*cn_route;	/* with cn_msg NULL: the fields */
	const char	*cn_file;
	const char	*cn_key;	/* "ssl-ca", "ssl-cert" or "ssl-key" */
	const char	*cn_reason;
	const char	*cn_action;
};

/* certset_log_cb(arg, note): write note down (any thread). */
typedef void certset_log_cb(void *, const struct certset_note *);

/* What a source needs: its files, how to build contexts, where to log. */
struct certsrc_params {
	const char	*name;		/* the route's name, for log lines */
	const char	*ssl_ca;	/* paths; NULL when not set */
	const char	*ssl_cert;
	const char	*ssl_key;
	char *const	*ssl_crl;	/* n_crl CRL files (PEM or DER) */
	size_t		 n_crl;
	int		 tls_server;	/* build server contexts */
	int		 verify_client;	/* server: require a client cert */
	int		 reread;	/* reread the files per connection */
	VerifyCallback	 verify_cb;	/* installed on every context */
	certset_log_cb	*log;		/* NULL: say nothing */
	void		*log_arg;
};

/*
 * certsrc_new(params, err, errlen): read and validate the files once.  The
 * strings of params must outlive the source.
 * Returns the source with a published set, or NULL with a message for
 * people in err naming the flag, the file and what is wrong.
 */
struct certsrc *certsrc_new(const struct certsrc_params *, char *, size_t);

/*
 * certsrc_acquire(src): the set to use for a new connection, after rereading
 * the files (unless the route disabled rereading).  Never NULL: when the
 * files are broken it is the last good set.  The caller owns one reference.
 */
struct certset *certsrc_acquire(struct certsrc *);

/* certsrc_current(src): like acquire, without rereading the files. */
struct certset *certsrc_current(struct certsrc *);

/* certsrc_stats(src, ok, err): sets published and broken states seen. */
void certsrc_stats(struct certsrc *, uint64_t *, uint64_t *);

/* certsrc_last(src, when, ok, err, errlen): the last build attempt. */
void certsrc_last(struct certsrc *, time_t *, int *, char *, size_t);

/* certsrc_free(src): drop the source and its reference to the set. */
void certsrc_free(struct certsrc *);

/* certset_release(cs): drop one reference; frees the set on the last. */
void certset_release(struct certset *);

/* certset_ctx(cs): the wolfSSL context built from the set. */
WOLFSSL_CTX *certset_ctx(const struct certset *);

/*
 * certset_ctx_tune(ctx, server, err, errlen): the protocol settings every
 * route's context gets: TLS 1.2 minimum, AEAD ciphers only, the key
 * exchange groups in dmtls's order (server or client side), one send per
 * handshake flight.  0, or -1 with the reason in err.  (`dmtls probe`
 * without --ssl-ca builds its context with it.)
 */
int certset_ctx_tune(WOLFSSL_CTX *, int, char *, size_t);

/*
 * certset_key_shares(ssl): the key shares a client session sends: P-256
 * first, then X25519MLKEM768 unless built with --disable-hybrid-kex.
 * 0, or -1 when wolfSSL refuses one.
 */
int certset_key_shares(WOLFSSL *);

/* certset_subject(cs): "CN=dm" of ssl-cert's leaf, or "" without one. */
const char *certset_subject(const struct certset *);

/* certset_not_after(cs): not-after of ssl-cert's leaf (0 without one). */
time_t certset_not_after(const struct certset *);

/* certset_chains(cs): 1 when ssl-cert chains to ssl-ca (or has none). */
int certset_chains(const struct certset *);

/* certset_sans(cs): "DNS:a,IP:b" of ssl-cert's leaf. */
const char *certset_sans(const struct certset *);

/* certset_digest(cs): hex SHA-256 over the files' bytes (and the CRLs'). */
const char *certset_digest(const struct certset *);

struct crl_info;

/*
 * certset_crls(cs, v): the CRLs of the set's ssl-crl files, in file order:
 * their count, *v pointing at the first (owned by the set).
 */
int certset_crls(const struct certset *, const struct crl_info **);

/*
 * certset_crl_expired(cs, now): a CRL of the set past its nextUpdate at
 * now (the first), or NULL when none is.
 */
const struct crl_info *certset_crl_expired(const struct certset *, time_t);

/* certset_thread_done(): free the calling thread's read buffers. */
void certset_thread_done(void);

/* Bounds on what is read from disk. */
#define CERTFILE_MAX	(1024 * 1024)

#endif
