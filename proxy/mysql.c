/*
 * mysql.c: the in-band TLS upgrade of `mysql` routes, as a state machine.
 *
 *   client (plaintext)          dmtls                         server
 *                                 <-- HandshakeV10 seq 0 ------ (needs CLIENT_SSL)
 *   <- greeting, CLIENT_SSL off --
 *   -- HandshakeResponse41 seq 1 ->
 *                                 -- SSLRequest seq 1 -------->  (its first 32 bytes)
 *                                 <== TLS handshake ==========>  (verified as a client route)
 *                                 == login seq 2 ============>
 *   <- auth packets, renumbered == auth packets ==============>  until OK or ERR
 *   <=============== bytes relayed untouched =================>
 *
 * The plaintext invariant (DESIGN 2, mysql step 3): the greeting is the only
 * plaintext the server leg may deliver.  on_greeting() refuses a greeting
 * with any byte behind it in ms_in[SRV]; from then until the TLS session
 * exists nothing reads the server leg, and server_quiet() refuses bytes
 * waiting in its socket right before each write of the SSLRequest (a real
 * server says nothing until it has the SSLRequest, and then only TLS: what
 * arrives after it is read by wolfSSL as TLS, where garbage fails the
 * handshake).  So when tls_setup() runs, ms_in[SRV] and the endpoint's
 * read-ahead are empty, and every server byte the relay ever sees came
 * through TLS.  Refusals end the upgrade with MYSQL_FAIL: the client then
 * gets an ERR (mysql_end) and the connection a conn_failed log line.
 *
 * Each leg keeps its own sequence counter: a packet received sets the leg's
 * next id, a packet sent is stamped with it.  That renumbers forwarded
 * packets and leaves room for the ones dmtls answers itself (the RSA public
 * key a plaintext client asks for in caching_sha2_password or
 * sha256_password full authentication).
 *
 * The packets themselves are parsed and built in mysqlproto.c.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bufpool.h"
#include "endpoint.h"
#include "mysql.h"
#include "mysqlkey.h"
#include "mysqlproto.h"
#include "tls.h"

enum { CLI = MYSQL_CLIENT, SRV = MYSQL_SERVER };

enum my_phase {
	MY_GREETING,		/* waiting for the server's greeting */
	MY_LOGIN,		/* waiting for the client's login packet */
	MY_SSLREQ,		/* sending the SSLRequest */
	MY_TLS,			/* TLS handshake with the server */
	MY_AUTH,		/* auth packets both ways */
	MY_DONE			/* OK/ERR forwarded: flush, then relay */
};

/* What the client's next auth packet may be, when dmtls must look at it. */
enum my_expect {
	EXPECT_NONE,		/* forward as is */
	EXPECT_RSA		/* key request, RSA ciphertext or cleartext */
};

/* One round's outcome inside the state machine. */
enum { R_FAIL = -1, R_BLOCKED = 0, R_MOVED = 1, R_TLS_FAIL = 2 };

struct mysql {
	struct mysql_params	 ms_p;
	struct endpoint		*ms_ep[2];
	enum my_phase		 ms_phase;
	enum my_expect		 ms_expect;
	uint8_t			 ms_in[2][MY_MAXPKT + 4];	/* read from a leg */
	size_t			 ms_inlen[2];
	uint8_t			 ms_out[2][MY_MAXPKT + 4];	/* to write to a leg */
	size_t			 ms_outoff[2];
	size_t			 ms_outlen[2];
	uint8_t			 ms_seq[2];	/* next sequence id on each leg */
	uint8_t			 ms_login[MY_MAXPKT];
	size_t			 ms_loginlen;
	uint8_t			 ms_nonce[20];
	char			 ms_plugin[64];
	uint8_t			*ms_left[2];	/* after MY_DONE: leftover input */
	size_t			 ms_leftlen[2];
	char			 ms_reason[200];
	unsigned		 ms_client_told:1; /* the client got OK/ERR */
	unsigned		 ms_refused:1;	/* the server's ERR, before TLS */
};

/* Queue a packet for a leg, stamped with that leg's next sequence id. */
static int
queue(struct mysql *ms, int leg, const uint8_t *p, size_t n)
{
	size_t k;

	k = my_packet(ms->ms_out[leg] + ms->ms_outlen[leg],
	    sizeof(ms->ms_out[0]) - ms->ms_outlen[leg], ms->ms_seq[leg], p, n);
	if (k == 0)
		return (-1);
	ms->ms_seq[leg]++;
	ms->ms_outlen[leg] += k;
	return (0);
}

/* Record why the upgrade failed; returns -1. */
static int
fail(struct mysql *ms, const char *why)
{
	snprintf(ms->ms_reason, sizeof(ms->ms_reason), "%s", why);
	return (-1);
}

/* Write what is queued for a leg.  1 all out, 0 waiting, -1 error. */
static int
flush(struct mysql *ms, int leg)
{
	struct endpoint *ep = ms->ms_ep[leg];
	size_t n;
	int err = 0;
	enum io io;

	while (ms->ms_outoff[leg] < ms->ms_outlen[leg]) {
		if (ep->ep_wr_wait)
			return (0);
		io = endpoint_write(ep, ms->ms_out[leg] + ms->ms_outoff[leg],
		    ms->ms_outlen[leg] - ms->ms_outoff[leg], &n, &err);
		if (io == IO_WAIT)
			return (0);
		if (io != IO_OK) {
			snprintf(ms->ms_reason, sizeof(ms->ms_reason), "write "
			    "to %s: %s", leg == CLI ? "client" : "server",
			    endpoint_errstr(ep, err));
			return (-1);
		}
		ms->ms_outoff[leg] += n;
	}
	ms->ms_outoff[leg] = ms->ms_outlen[leg] = 0;
	return (1);
}

/*
 * Take the next whole packet read from a leg: 1 with its payload in p/n
 * and sequence id in *seq, 0 waiting, -1 error (reason recorded).
 */
static int
next_packet(struct mysql *ms, int leg, const uint8_t **p, size_t *n,
    uint8_t *seq)
{
	struct endpoint *ep = ms->ms_ep[leg];
	size_t len, got;
	int err = 0;
	enum io io;

	for (;;) {
		if (ms->ms_inlen[leg] >= 4) {
			len = my_packet_len(ms->ms_in[leg]);
			if (len > MY_MAXPKT && leg == SRV &&
			    ms->ms_phase == MY_GREETING) {
				snprintf(ms->ms_reason, sizeof(ms->ms_reason),
				    "%s does not speak the MySQL protocol (its "
				    "first bytes are no MySQL greeting)",
				    ms->ms_p.mp_target);
				return (-1);
			}
			if (len > MY_MAXPKT) {
				snprintf(ms->ms_reason, sizeof(ms->ms_reason),
				    "%s sent a %zu-byte packet during login; "
				    "at most %d are accepted there",
				    leg == CLI ? "client" : "server", len,
				    MY_MAXPKT);
				return (-1);
			}
			if (ms->ms_inlen[leg] >= 4 + len) {
				*seq = ms->ms_in[leg][3];
				*p = ms->ms_in[leg] + 4;
				*n = len;
				return (1);
			}
		}
		if (ep->ep_rd_wait)
			return (0);
		io = endpoint_read(ep, ms->ms_in[leg] + ms->ms_inlen[leg],
		    sizeof(ms->ms_in[0]) - ms->ms_inlen[leg], &got, &err);
		if (io == IO_WAIT)
			return (0);
		if (io == IO_EOF || io == IO_ERR) {
			snprintf(ms->ms_reason, sizeof(ms->ms_reason), "%s %s "
			    "during login", leg == CLI ? "client" : "server",
			    io == IO_EOF ? "closed the connection" :
			    endpoint_errstr(ep, err));
			return (-1);
		}
		ms->ms_inlen[leg] += got;
	}
}

/* Drop the packet next_packet() returned; note its sequence id. */
static void
consume(struct mysql *ms, int leg, size_t n, uint8_t seq)
{
	size_t total = 4 + n;

	memmove(ms->ms_in[leg], ms->ms_in[leg] + total,
	    ms->ms_inlen[leg] - total);
	ms->ms_inlen[leg] -= total;
	ms->ms_seq[leg] = (uint8_t)(seq + 1);
}

/* Refuse plaintext the server leg sent after its greeting; returns -1. */
static int
injected(struct mysql *ms, const uint8_t *p, size_t n)
{
	char hex[8 * 3];
	size_t i, off = 0;

	hex[0] = '\0';
	for (i = 0; i < n && i < 8; i++)
		off += (size_t)snprintf(hex + off, sizeof(hex) - off, "%s%02x",
		    i > 0 ? " " : "", p[i]);
	snprintf(ms->ms_reason, sizeof(ms->ms_reason), "the server sent %zu "
	    "byte%s in plaintext after its greeting, before TLS (%s); refused "
	    "as injected on the path to %s", n, n == 1 ? "" : "s", hex,
	    ms->ms_p.mp_target);
	return (-1);
}

/*
 * Before TLS, the server must be silent after its greeting: 0 when nothing
 * waits in the server's socket, -1 (reason recorded) when bytes do, or the
 * server closed or failed.
 */
static int
server_quiet(struct mysql *ms)
{
	uint8_t peek[512];
	ssize_t r;

	r = recv(ms->ms_ep[SRV]->ep_fd, peek, sizeof(peek), MSG_PEEK |
	    MSG_DONTWAIT);
	if (r > 0)
		return (injected(ms, peek, (size_t)r));
	if (r == 0)
		return (fail(ms, "server closed the connection during login"));
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return (0);
	snprintf(ms->ms_reason, sizeof(ms->ms_reason), "server %s during "
	    "login", strerror(errno));
	return (-1);
}

/* The server's greeting: refuse servers without TLS, hide CLIENT_SSL. */
static int
on_greeting(struct mysql *ms, const uint8_t *p, size_t n, uint8_t seq)
{
	struct my_greeting g;
	uint8_t copy[MY_MAXPKT];

	if (n > 0 && p[0] == 0xff) {
		/* The server refused us (too many connections, host
		 * blocked): the client hears it in the server's words. */
		memcpy(copy, p, n);
		consume(ms, SRV, n, seq);
		ms->ms_seq[CLI] = seq;
		ms->ms_client_told = 1;
		if (queue(ms, CLI, copy, n) == -1)
			return (-1);
		ms->ms_phase = MY_DONE;
		ms->ms_refused = 1;
		snprintf(ms->ms_reason, sizeof(ms->ms_reason), "the server "
		    "refused the connection before TLS");
		return (0);
	}
	if (my_parse_greeting(p, n, &g) == -1)
		return (fail(ms, "the server's greeting is not a MySQL "
		    "protocol 10 handshake"));
	/* Whatever came with the greeting is plaintext an on-path party
	 * could have written (a forged OK, a whole result set). */
	if (ms->ms_inlen[SRV] > 4 + n)
		return (injected(ms, p + n, ms->ms_inlen[SRV] - 4 - n));
	if (!(g.g_caps & CLIENT_SSL)) {
		snprintf(ms->ms_reason, sizeof(ms->ms_reason), "server %s "
		    "does not support TLS (its greeting lacks CLIENT_SSL); "
		    "enable TLS on the server", ms->ms_p.mp_target);
		return (-1);
	}
	if (g.g_nonce_len != 20 || !(g.g_caps & CLIENT_PROTOCOL_41))
		return (fail(ms, "the server speaks a pre-4.1 protocol"));
	memcpy(ms->ms_nonce, g.g_nonce, 20);
	snprintf(ms->ms_plugin, sizeof(ms->ms_plugin), "%s", g.g_plugin);
	memcpy(copy, p, n);
	my_hide_ssl(copy, &g);
	consume(ms, SRV, n, seq);
	ms->ms_seq[CLI] = 0;
	if (queue(ms, CLI, copy, n) == -1)
		return (-1);
	ms->ms_phase = MY_LOGIN;
	return (0);
}

/* The client's login: keep it, and send its first 32 bytes as SSLRequest. */
static int
on_login(struct mysql *ms, const uint8_t *p, size_t n, uint8_t seq)
{
	struct my_login l;
	uint8_t req[32];

	if (my_parse_login(p, n, &l) == -1)
		return (fail(ms, "malformed login packet from the client"));
	if (n == 32 && (l.l_caps & CLIENT_SSL))
		return (fail(ms, "the client asked for TLS; connect to dmtls "
		    "without TLS (ssl-mode=DISABLED), dmtls adds TLS toward "
		    "the server"));
	if (l.l_plugin[0] != '\0')
		snprintf(ms->ms_plugin, sizeof(ms->ms_plugin), "%s",
		    l.l_plugin);
	memcpy(ms->ms_login, p, n);
	ms->ms_loginlen = n;
	/* mysqld takes flags, max packet size and charset from here. */
	my_ssl_request(p, req);
	ms->ms_login[1] |= CLIENT_SSL >> 8;
	consume(ms, CLI, n, seq);
	ms->ms_seq[SRV] = 1;
	if (queue(ms, SRV, req, sizeof(req)) == -1)
		return (-1);
	ms->ms_phase = MY_SSLREQ;
	return (0);
}

static int
plugin_is(const struct mysql *ms, const char *name)
{
	return (strcmp(ms->ms_plugin, name) == 0);
}

/* A packet from the server during the auth phase. */
static int
on_server_auth(struct mysql *ms, const uint8_t *p, size_t n, uint8_t seq)
{
	uint8_t copy[MY_MAXPKT];

	memcpy(copy, p, n);
	consume(ms, SRV, n, seq);
	if (n == 0)
		return (fail(ms, "empty packet from the server during login"));
	switch (copy[0]) {
	case 0x00:		/* OK: the auth phase is over */
	case 0xff:		/* ERR: the server's own words, unchanged */
		ms->ms_phase = MY_DONE;
		ms->ms_client_told = 1;
		ms->ms_expect = EXPECT_NONE;
		break;
	case 0xfe:		/* AuthSwitchRequest: new plugin, new nonce */
		if (my_parse_auth_switch(copy, n, ms->ms_plugin,
		    sizeof(ms->ms_plugin), ms->ms_nonce) == -1)
			return (fail(ms, "malformed auth switch request"));
		/* sha256_password's first client reply may be a key request. */
		ms->ms_expect = plugin_is(ms, "sha256_password") ?
		    EXPECT_RSA : EXPECT_NONE;
		break;
	case 0x01:		/* AuthMoreData */
		if (plugin_is(ms, "caching_sha2_password") && n == 2 &&
		    copy[1] == 0x04)
			ms->ms_expect = EXPECT_RSA;	/* full auth */
		break;
	}
	return (queue(ms, CLI, copy, n));
}

/*
 * The client's answer when the server wants the password: a plaintext
 * client asks for the public key (02 for caching_sha2, 01 for sha256) or
 * sends RSA ciphertext; dmtls answers the first and decrypts the second,
 * and the server, which sees TLS, gets the cleartext password.
 */
static int
on_client_password(struct mysql *ms, const uint8_t *p, size_t n, uint8_t seq)
{
	uint8_t pw[512], more[1 + MYSQLKEY_PEM_MAX];
	const char *pem;
	size_t pemlen;
	int len, i;

	if (n == 1 && (p[0] == 0x02 || p[0] == 0x01)) {
		consume(ms, CLI, n, seq);
		pem = mysqlkey_pem(&pemlen);
		more[0] = 0x01;
		memcpy(more + 1, pem, pemlen);
		return (queue(ms, CLI, more, 1 + pemlen));
	}
	if (n == 256) {
		if ((len = mysqlkey_decrypt(p, n, pw, sizeof(pw))) <= 0) {
			consume(ms, CLI, n, seq);
			return (fail(ms, "the client encrypted its password "
			    "with a server public key it already had, which "
			    "dmtls cannot read; let the client request the key "
			    "(--get-server-public-key, allowPublicKeyRetrieval)"));
		}
		for (i = 0; i < len; i++)
			pw[i] ^= ms->ms_nonce[i % 20];
		consume(ms, CLI, n, seq);
		ms->ms_expect = EXPECT_NONE;
		i = queue(ms, SRV, pw, (size_t)len);
		explicit_bzero(pw, sizeof(pw));
		return (i);
	}
	if (n == 0) {
		consume(ms, CLI, n, seq);
		return (fail(ms, "the client sent an empty password packet"));
	}
	if (p[n - 1] != 0) {
		consume(ms, CLI, n, seq);
		return (fail(ms, "the client sent an encrypted password dmtls "
		    "cannot read; let the client request the server's public "
		    "key (--get-server-public-key, allowPublicKeyRetrieval)"));
	}
	/* Cleartext (a client that trusts its link, e.g. a unix socket). */
	ms->ms_expect = EXPECT_NONE;
	memcpy(pw, p, n < sizeof(pw) ? n : sizeof(pw));
	consume(ms, CLI, n, seq);
	i = queue(ms, SRV, pw, n < sizeof(pw) ? n : sizeof(pw));
	explicit_bzero(pw, sizeof(pw));
	return (i);
}

/* A packet from the client during the auth phase. */
static int
on_client_auth(struct mysql *ms, const uint8_t *p, size_t n, uint8_t seq)
{
	uint8_t copy[MY_MAXPKT];
	int r;

	if (ms->ms_expect == EXPECT_RSA)
		return (on_client_password(ms, p, n, seq));
	memcpy(copy, p, n);
	consume(ms, CLI, n, seq);
	r = queue(ms, SRV, copy, n);
	explicit_bzero(copy, n);	/* a cleartext plugin's password */
	return (r);
}

struct mysql *
mysql_begin(const struct mysql_params *p)
{
	struct mysql *ms;

	if ((ms = calloc(1, sizeof(*ms))) == NULL)
		return (NULL);
	ms->ms_p = *p;
	ms->ms_ep[CLI] = p->mp_ep[CLI];
	ms->ms_ep[SRV] = p->mp_ep[SRV];
	ms->ms_phase = MY_GREETING;
	return (ms);
}

/*
 * Move leftover input into pooled buffers for the relay.  0, or -1 (reason
 * recorded) when no buffer is left.  By the plaintext invariant, the
 * server's leftover came over TLS.
 */
static int
finish(struct mysql *ms)
{
	int leg;

	for (leg = CLI; leg <= SRV; leg++) {
		if (ms->ms_inlen[leg] == 0)
			continue;
		if ((ms->ms_left[leg] = bufpool_get()) == NULL)
			return (fail(ms, "out of memory for the relay's "
			    "buffers"));
		memcpy(ms->ms_left[leg], ms->ms_in[leg], ms->ms_inlen[leg]);
		ms->ms_leftlen[leg] = ms->ms_inlen[leg];
	}
	return (0);
}

/* Flush what is queued for both legs; R_MOVED, R_BLOCKED or R_FAIL. */
static int
flush_both(struct mysql *ms)
{
	int r, leg, moved = R_BLOCKED;

	for (leg = CLI; leg <= SRV; leg++) {
		if (ms->ms_outlen[leg] == 0)
			continue;
		/* The SSLRequest goes out in clear, before the TLS session
		 * exists; everything later to the server goes through TLS.
		 * Until all of it is out, the server has nothing to answer. */
		if (leg == SRV && ms->ms_phase == MY_SSLREQ &&
		    server_quiet(ms) == -1)
			return (R_FAIL);
		if ((r = flush(ms, leg)) == -1)
			return (R_FAIL);
		if (r == 1)
			moved = R_MOVED;
	}
	return (moved);
}

/* Read a leg's next packet and hand it to fn; R_* as step_once. */
static int
take(struct mysql *ms, int leg, int (*fn)(struct mysql *, const uint8_t *,
    size_t, uint8_t), int moved)
{
	const uint8_t *p;
	size_t n;
	uint8_t seq;
	int r;

	if ((r = next_packet(ms, leg, &p, &n, &seq)) != 1)
		return (r == -1 ? R_FAIL : moved);
	return (fn(ms, p, n, seq) == -1 ? R_FAIL : R_MOVED);
}

/* One round of work: R_MOVED, R_BLOCKED, R_FAIL or R_TLS_FAIL. */
static int
step_once(struct mysql *ms)
{
	int r, moved;

	if ((moved = flush_both(ms)) == R_FAIL)
		return (R_FAIL);
	switch (ms->ms_phase) {
	case MY_GREETING:
		return (take(ms, SRV, on_greeting, moved));
	case MY_LOGIN:
		return (take(ms, CLI, on_login, moved));
	case MY_SSLREQ:
		if (ms->ms_outlen[SRV] != 0)
			return (moved);
		/* The invariant at the top: no plaintext from the server
		 * is left anywhere TLS or the relay would read it.  (What
		 * the server sends once the SSLRequest is out is read by
		 * wolfSSL as TLS: garbage there fails the handshake.) */
		if (ms->ms_inlen[SRV] != 0 || ms->ms_ep[SRV]->ep_ra_len != 0)
			return (fail(ms, "internal error: server bytes read "
			    "before TLS"));
		if (tls_setup(ms->ms_p.mp_tls, ms->ms_ep[SRV],
		    &ms->ms_p.mp_tlsp) == -1)
			return (fail(ms, "cannot create a TLS session"));
		ms->ms_phase = MY_TLS;
		return (R_MOVED);
	case MY_TLS:
		switch (tls_handshake(ms->ms_p.mp_tls, ms->ms_ep[SRV])) {
		case TLS_WAIT:
			return (moved);
		case TLS_FAIL:
			return (R_TLS_FAIL);
		case TLS_DONE:
			break;
		}
		if (queue(ms, SRV, ms->ms_login, ms->ms_loginlen) == -1)
			return (R_FAIL);
		explicit_bzero(ms->ms_login, sizeof(ms->ms_login));
		ms->ms_phase = MY_AUTH;
		return (R_MOVED);
	case MY_AUTH:
		if ((r = take(ms, SRV, on_server_auth, R_BLOCKED)) != R_BLOCKED)
			return (r);
		return (take(ms, CLI, on_client_auth, moved));
	case MY_DONE:
		return (moved);
	}
	return (moved);
}

enum mysql_status
mysql_step(struct mysql *ms)
{
	int r;

	do {
		r = step_once(ms);
		if (r == R_TLS_FAIL)
			return (MYSQL_TLS_FAIL);
		if (r == R_FAIL)
			return (MYSQL_FAIL);
	} while (r == R_MOVED);
	if (ms->ms_phase != MY_DONE || ms->ms_outlen[CLI] != 0 ||
	    ms->ms_outlen[SRV] != 0)
		return (MYSQL_WAIT);
	/* The server refused before TLS: the client has its ERR. */
	if (ms->ms_refused || finish(ms) == -1)
		return (MYSQL_FAIL);
	return (MYSQL_DONE);
}

const char *
mysql_reason(const struct mysql *ms)
{
	return (ms->ms_reason);
}

uint8_t *
mysql_take(struct mysql *ms, int leg, size_t *len)
{
	uint8_t *b = ms->ms_left[leg];

	*len = ms->ms_leftlen[leg];
	ms->ms_left[leg] = NULL;
	ms->ms_leftlen[leg] = 0;
	return (b);
}

void
mysql_end(struct mysql *ms, const char *msg)
{
	struct endpoint *cli;
	uint8_t pkt[600];
	size_t n;
	ssize_t w;
	int leg;

	if (ms == NULL)
		return;
	cli = ms->ms_ep[CLI];
	if (msg != NULL && !ms->ms_client_told && cli->ep_fd != -1) {
		n = my_err_packet(pkt, sizeof(pkt), ms->ms_seq[CLI], msg);
		/* Best effort: an empty socket buffer takes a small packet. */
		w = send(cli->ep_fd, pkt, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)w;
	}
	for (leg = CLI; leg <= SRV; leg++)
		bufpool_put(ms->ms_left[leg]);
	/* The one way the state goes: wiped (logins, passwords), freed. */
	explicit_bzero(ms, sizeof(*ms));
	free(ms);
}
