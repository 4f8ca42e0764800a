/*
 * conf.h: what a route is told to do, whether it came from the command line
 * or (later) a config file.  Plain data; no runtime state lives here.
 */
#ifndef DMTLS_CONF_H
#define DMTLS_CONF_H

#include <stddef.h>

enum route_kind {
	ROUTE_SERVER = 0,	/* TLS in, plaintext out */
	ROUTE_CLIENT,		/* plaintext in, TLS out */
	ROUTE_MYSQL		/* plaintext MySQL in, in-band TLS out */
};

/* A NULL-terminated growable list of strings. */
struct strlist {
	char	**sl_v;
	size_t	  sl_n;
};

struct security_conf {
	char		*ssl_ca;
	char		*ssl_cert;
	char		*ssl_key;
	struct strlist	 allowed_cn;
	struct strlist	 allowed_dns;
	struct strlist	 allowed_uri;
	struct strlist	 allowed_ou;
	struct strlist	 ssl_crl;	/* CRL files (PEM or DER) */
	char		*server_name;	/* client/mysql: verify and send as SNI */
	int		 verify_client;	/* server: require a client certificate */
};

struct route_conf {
	char			*name;
	enum route_kind		 kind;
	char			*listen;
	char			*target;
	struct strlist		 alpn;
	long			 max_conns;	/* 0 = unlimited */
	long			 connect_timeout_ms;
	long			 handshake_timeout_ms;
	long			 idle_timeout_ms;	/* 0 = none */
	long			 close_timeout_ms;
	int			 reread;	/* reread certificates per connection */
	char			*src_file;	/* where it was defined, for errors */
	int			 src_line;
	struct security_conf	 sec;
};

struct global_conf {
	int	workers;		/* 0 = one per CPU */
	long	shutdown_timeout_ms;
	char	*status;
	char	*log_level;
	char	*log_format;
	char	*user;			/* drop to it after binding (root only) */
	char	*group;			/* its primary group instead of the user's */
	int	 sandbox;		/* confine after start-up (default 1) */
};

/* Defaults (milliseconds). */
#define DEF_CONNECT_TIMEOUT_MS		10000
#define DEF_HANDSHAKE_TIMEOUT_MS	10000
#define DEF_CLOSE_TIMEOUT_MS		60000
#define DEF_SHUTDOWN_TIMEOUT_MS		30000

/* route_kind_name(kind): "server", "client" or "mysql". */
const char *route_kind_name(enum route_kind);

/* route_conf_init(rc, kind): fill defaults (alpn h2,http/1.1, timeouts). */
void route_conf_init(struct route_conf *, enum route_kind);

/* route_conf_free(rc): free every string the route owns. */
void route_conf_free(struct route_conf *);

/*
 * route_conf_files(rc, out, max): the files the route reads (ssl-ca,
 * ssl-cert, ssl-key, each ssl-crl, and every file a security key names), at most max of
 * them, into out; returns how many.  The sandbox confines reading to
 * their folders: a new file key joins this list and only this one.
 */
#define ROUTE_CONF_FILES_MAX	(3 + 16)	/* + CRL_FILES_MAX ssl-crl files */
size_t route_conf_files(const struct route_conf *, const char **, size_t);

/* strlist_add(sl, s): append a copy of s; 0 or -1 on ENOMEM. */
int strlist_add(struct strlist *, const char *);

/* strlist_add_csv(sl, s): append each non-empty comma-separated item of s. */
int strlist_add_csv(struct strlist *, const char *);

/* strlist_has(sl, s): 1 when s is an exact member of sl, else 0. */
int strlist_has(const struct strlist *, const char *);

/* strlist_join(sl, sep, buf, len): write the items joined by sep into buf. */
void strlist_join(const struct strlist *, const char *, char *, size_t);

/* strlist_free(sl): free the items and reset the list. */
void strlist_free(struct strlist *);

#endif
