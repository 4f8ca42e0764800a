/*
 * mysql.c: the in-band TLS upgrade of `mysql` routes.
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
 * through TLS.  Refusals end the connection with an ERR to the
 * client and a conn_failed log line.
 *
 * Each leg keeps its own sequence counter: a packet received sets the leg's
 * next id, a packet sent is stamped with it.  That renumbers forwarded
 * packets and leaves room for the ones dmtls answers itself (the RSA public
 * key a plaintext client asks for in caching_sha2_password or
 * sha256_password full authentication).
 */
#include <sys/socket.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include "bufpool.h"
#include "conn.h"
#include "endpoint.h"
#include "log.h"
#include "mysql.h"
#include "relay.h"
#include "route.h"

#define CLIENT_PROTOCOL_41	0x00000200U
#define CLIENT_SSL		0x00000800U
#define CLIENT_SECURE_CONN	0x00008000U
#define CLIENT_CONNECT_WITH_DB	0x00000008U
#define CLIENT_PLUGIN_AUTH	0x00080000U
#define CLIENT_LENENC_AUTH	0x00200000U

#define ER_HANDSHAKE_ERROR	1043

enum { CLI = 0, SRV = 1 };		/* legs: endpoint 0 and endpoint 1 */

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

struct mysql_state {
	enum my_phase	 ms_phase;
	enum my_expect	 ms_expect;
	uint8_t		 ms_in[2][MY_MAXPKT + 4];	/* read from a leg */
	size_t		 ms_inlen[2];
	uint8_t		 ms_out[2][MY_MAXPKT + 4];	/* to write to a leg */
	size_t		 ms_outoff[2];
	size_t		 ms_outlen[2];
	uint8_t		 ms_seq[2];	/* next sequence id on each leg */
	uint8_t		 ms_login[MY_MAXPKT];
	size_t		 ms_loginlen;
	uint8_t		 ms_nonce[20];
	char		 ms_plugin[64];
	unsigned	 ms_client_told:1; /* the client got OK/ERR */
};

/* ---- the RSA key offered to clients ---------------------------------- */

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static RsaKey key;
static WC_RNG key_rng;
static int key_ready;
static char key_pem[1024];
static size_t key_pem_len;

int
mysql_keys_init(char *err, size_t errlen)
{
	uint8_t der[1024];
	int n, rc = -1;

	pthread_mutex_lock(&key_lock);
	if (key_ready) {
		rc = 0;
		goto out;
	}
	if (wc_InitRng(&key_rng) != 0 || wc_InitRsaKey(&key, NULL) != 0 ||
	    wc_MakeRsaKey(&key, 2048, WC_RSA_EXPONENT, &key_rng) != 0 ||
	    wc_RsaSetRNG(&key, &key_rng) != 0) {
		snprintf(err, errlen, "cannot generate the RSA key offered to "
		    "MySQL clients");
		goto out;
	}
	if ((n = wc_RsaKeyToPublicDer(&key, der, sizeof(der))) <= 0 ||
	    (n = wc_DerToPem(der, (word32)n, (byte *)key_pem,
	    sizeof(key_pem) - 1, PUBLICKEY_TYPE)) <= 0) {
		snprintf(err, errlen, "cannot export the RSA public key");
		goto out;
	}
	key_pem_len = (size_t)n;
	key_ready = 1;
	rc = 0;
out:
	pthread_mutex_unlock(&key_lock);
	return (rc);
}

/* RSA-OAEP (SHA-1, as MySQL clients use) decrypt; length or -1. */
static int
key_decrypt(const uint8_t *in, size_t n, uint8_t *out, size_t outlen)
{
	int r;

	pthread_mutex_lock(&key_lock);
	r = key_ready ? wc_RsaPrivateDecrypt_ex(in, (word32)n, out,
	    (word32)outlen, &key, WC_RSA_OAEP_PAD, WC_HASH_TYPE_SHA,
	    WC_MGF1SHA1, NULL, 0) : -1;
	pthread_mutex_unlock(&key_lock);
	return (r < 0 ? -1 : r);
}

/* ---- packet parsing -------------------------------------------------- */

static uint32_t
le32(const uint8_t *p)
{
	return ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24);
}

/* Copy a NUL-terminated string at p[*off] (within n) into dst. */
static int
get_cstr(const uint8_t *p, size_t n, size_t *off, char *dst, size_t dstlen)
{
	const uint8_t *nul;
	size_t len;

	if (*off > n)
		return (-1);
	if ((nul = memchr(p + *off, 0, n - *off)) == NULL)
		return (-1);
	len = (size_t)(nul - (p + *off));
	if (dst != NULL) {
		if (len >= dstlen)
			len = dstlen - 1;
		memcpy(dst, p + *off, len);
		dst[len] = '\0';
	}
	*off = (size_t)(nul - p) + 1;
	return (0);
}

int
my_parse_greeting(const uint8_t *p, size_t n, struct my_greeting *g)
{
	size_t off = 1, part2;
	uint8_t auth_len = 0;

	memset(g, 0, sizeof(*g));
	if (n < 1 || p[0] != 0x0a)
		return (-1);
	if (get_cstr(p, n, &off, g->g_version, sizeof(g->g_version)) == -1)
		return (-1);
	/* connection id 4, scramble part 1 8, filler 1, caps low 2 */
	if (off + 15 > n)
		return (-1);
	off += 4;
	memcpy(g->g_nonce, p + off, 8);
	g->g_nonce_len = 8;
	off += 9;
	g->g_caps_lo_off = off;
	g->g_caps = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8;
	off += 2;
	if (off == n)
		return (0);		/* a pre-4.1 server: no more fields */
	/* charset 1, status 2, caps high 2, auth data length 1, reserved 10 */
	if (off + 16 > n)
		return (-1);
	g->g_caps |= ((uint32_t)p[off + 3] | (uint32_t)p[off + 4] << 8) << 16;
	auth_len = p[off + 5];
	off += 16;
	if (g->g_caps & CLIENT_SECURE_CONN) {
		part2 = auth_len > 8 ? (size_t)auth_len - 8 : 13;
		if (part2 < 13)
			part2 = 13;
		if (off + part2 > n)
			return (-1);
		/* 12 scramble bytes and a NUL. */
		memcpy(g->g_nonce + 8, p + off, 12);
		g->g_nonce_len = 20;
		off += part2;
	}
	if ((g->g_caps & CLIENT_PLUGIN_AUTH) && off < n) {
		/* Some servers omit the final NUL. */
		size_t len = n - off;
		const uint8_t *nul = memchr(p + off, 0, len);
		if (nul != NULL)
			len = (size_t)(nul - (p + off));
		if (len >= sizeof(g->g_plugin))
			return (-1);
		memcpy(g->g_plugin, p + off, len);
		g->g_plugin[len] = '\0';
	}
	return (0);
}

/* A length-encoded integer at p[*off]; -1 when it runs past n. */
static int
get_lenenc(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
	size_t need;
	uint8_t b;

	if (*off >= n)
		return (-1);
	b = p[(*off)++];
	if (b < 0xfb) {
		*v = b;
		return (0);
	}
	need = b == 0xfc ? 2 : b == 0xfd ? 3 : b == 0xfe ? 8 : 0;
	if (need == 0 || *off + need > n)
		return (-1);
	*v = 0;
	while (need-- > 0)
		*v |= (uint64_t)p[*off + need] << (8 * need);
	*off += b == 0xfc ? 2 : b == 0xfd ? 3 : 8;
	return (0);
}

int
my_parse_login(const uint8_t *p, size_t n, struct my_login *l)
{
	size_t off = 32;
	uint64_t alen;

	memset(l, 0, sizeof(*l));
	if (n < 32)
		return (-1);
	l->l_caps = le32(p);
	if (!(l->l_caps & CLIENT_PROTOCOL_41))
		return (-1);
	if (n == 32)
		return (0);		/* an SSLRequest: no more fields */
	if (get_cstr(p, n, &off, l->l_user, sizeof(l->l_user)) == -1)
		return (-1);
	if (l->l_caps & CLIENT_LENENC_AUTH) {
		if (get_lenenc(p, n, &off, &alen) == -1)
			return (-1);
	} else if (l->l_caps & CLIENT_SECURE_CONN) {
		if (off >= n)
			return (-1);
		alen = p[off++];
	} else {
		/* Old clients: a NUL-terminated response. */
		size_t start = off;
		if (get_cstr(p, n, &off, NULL, 0) == -1)
			return (-1);
		l->l_auth = p + start;
		l->l_auth_len = off - start - 1;
		goto rest;
	}
	if (alen > n - off)
		return (-1);
	l->l_auth = p + off;
	l->l_auth_len = (size_t)alen;
	off += (size_t)alen;
rest:
	if ((l->l_caps & CLIENT_CONNECT_WITH_DB) && off < n &&
	    get_cstr(p, n, &off, NULL, 0) == -1)
		return (-1);
	if ((l->l_caps & CLIENT_PLUGIN_AUTH) && off < n &&
	    get_cstr(p, n, &off, l->l_plugin, sizeof(l->l_plugin)) == -1)
		return (-1);
	/* Connection attributes and the rest are forwarded unread. */
	return (0);
}

size_t
my_err_packet(uint8_t *buf, size_t len, uint8_t seq, const char *msg)
{
	size_t mlen = strlen(msg), n;

	if (len < 13)
		return (0);
	if (mlen > len - 13)
		mlen = len - 13;
	n = 9 + mlen;
	buf[0] = (uint8_t)(n & 0xff);
	buf[1] = (uint8_t)(n >> 8);
	buf[2] = 0;
	buf[3] = seq;
	buf[4] = 0xff;
	buf[5] = ER_HANDSHAKE_ERROR & 0xff;
	buf[6] = ER_HANDSHAKE_ERROR >> 8;
	memcpy(buf + 7, "#08S01", 6);
	memcpy(buf + 13, msg, mlen);
	return (4 + n);
}

/* ---- the upgrade ----------------------------------------------------- */

/* Queue a packet for a leg, stamped with that leg's next sequence id. */
static int
queue(struct mysql_state *ms, int leg, const uint8_t *p, size_t n)
{
	uint8_t *o;

	if (n > MY_MAXPKT || ms->ms_outlen[leg] + 4 + n > sizeof(ms->ms_out[0]))
		return (-1);
	o = ms->ms_out[leg] + ms->ms_outlen[leg];
	o[0] = (uint8_t)(n & 0xff);
	o[1] = (uint8_t)((n >> 8) & 0xff);
	o[2] = (uint8_t)(n >> 16);
	o[3] = ms->ms_seq[leg]++;
	memcpy(o + 4, p, n);
	ms->ms_outlen[leg] += 4 + n;
	return (0);
}

/* Write what is queued for a leg.  1 all out, 0 waiting, -1 error. */
static int
flush(struct conn *c, int leg)
{
	struct mysql_state *ms = c->c_my;
	struct endpoint *ep = &c->c_ep[leg];
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
			snprintf(c->c_reason, sizeof(c->c_reason), "write to "
			    "%s: %s", leg == CLI ? "client" : "server",
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
next_packet(struct conn *c, int leg, const uint8_t **p, size_t *n,
    uint8_t *seq)
{
	struct mysql_state *ms = c->c_my;
	struct endpoint *ep = &c->c_ep[leg];
	size_t len, got;
	int err = 0;
	enum io io;

	for (;;) {
		if (ms->ms_inlen[leg] >= 4) {
			len = (size_t)ms->ms_in[leg][0] |
			    (size_t)ms->ms_in[leg][1] << 8 |
			    (size_t)ms->ms_in[leg][2] << 16;
			if (len > MY_MAXPKT && leg == SRV &&
			    ms->ms_phase == MY_GREETING) {
				snprintf(c->c_reason, sizeof(c->c_reason),
				    "%s does not speak the MySQL protocol (its "
				    "first bytes are no MySQL greeting)",
				    c->c_route->rt_conf->target);
				return (-1);
			}
			if (len > MY_MAXPKT) {
				snprintf(c->c_reason, sizeof(c->c_reason),
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
			snprintf(c->c_reason, sizeof(c->c_reason), "%s %s "
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
consume(struct mysql_state *ms, int leg, size_t n, uint8_t seq)
{
	size_t total = 4 + n;

	memmove(ms->ms_in[leg], ms->ms_in[leg] + total,
	    ms->ms_inlen[leg] - total);
	ms->ms_inlen[leg] -= total;
	ms->ms_seq[leg] = (uint8_t)(seq + 1);
}

/* Record why the upgrade failed; returns -1. */
static int
fail(struct conn *c, const char *why)
{
	snprintf(c->c_reason, sizeof(c->c_reason), "%s", why);
	return (-1);
}

/* Refuse plaintext the server leg sent after its greeting; returns -1. */
static int
injected(struct conn *c, const uint8_t *p, size_t n)
{
	char hex[8 * 3];
	size_t i, off = 0;

	hex[0] = '\0';
	for (i = 0; i < n && i < 8; i++)
		off += (size_t)snprintf(hex + off, sizeof(hex) - off, "%s%02x",
		    i > 0 ? " " : "", p[i]);
	snprintf(c->c_reason, sizeof(c->c_reason), "the server sent %zu byte%s "
	    "in plaintext after its greeting, before TLS (%s); refused as "
	    "injected on the path to %s", n, n == 1 ? "" : "s", hex,
	    c->c_route->rt_conf->target);
	return (-1);
}

/*
 * Before TLS, the server must be silent after its greeting: 0 when nothing
 * waits in the server's socket, -1 (reason recorded) when bytes do, or the
 * server closed or failed.
 */
static int
server_quiet(struct conn *c)
{
	uint8_t peek[512];
	ssize_t r;

	r = recv(c->c_ep[SRV].ep_fd, peek, sizeof(peek), MSG_PEEK |
	    MSG_DONTWAIT);
	if (r > 0)
		return (injected(c, peek, (size_t)r));
	if (r == 0)
		return (fail(c, "server closed the connection during login"));
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return (0);
	snprintf(c->c_reason, sizeof(c->c_reason), "server %s during login",
	    strerror(errno));
	return (-1);
}

/* The server's greeting: refuse servers without TLS, hide CLIENT_SSL. */
static int
on_greeting(struct conn *c, const uint8_t *p, size_t n, uint8_t seq)
{
	struct mysql_state *ms = c->c_my;
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
		c->c_result = "failed";
		snprintf(c->c_reason, sizeof(c->c_reason), "the server "
		    "refused the connection before TLS");
		return (0);
	}
	if (my_parse_greeting(p, n, &g) == -1)
		return (fail(c, "the server's greeting is not a MySQL "
		    "protocol 10 handshake"));
	/* Whatever came with the greeting is plaintext an on-path party
	 * could have written (a forged OK, a whole result set). */
	if (ms->ms_inlen[SRV] > 4 + n)
		return (injected(c, p + n, ms->ms_inlen[SRV] - 4 - n));
	if (!(g.g_caps & CLIENT_SSL)) {
		snprintf(c->c_reason, sizeof(c->c_reason), "server %s does "
		    "not support TLS (its greeting lacks CLIENT_SSL); enable "
		    "TLS on the server", c->c_route->rt_conf->target);
		return (-1);
	}
	if (g.g_nonce_len != 20 || !(g.g_caps & CLIENT_PROTOCOL_41))
		return (fail(c, "the server speaks a pre-4.1 protocol"));
	memcpy(ms->ms_nonce, g.g_nonce, 20);
	snprintf(ms->ms_plugin, sizeof(ms->ms_plugin), "%s", g.g_plugin);
	memcpy(copy, p, n);
	copy[g.g_caps_lo_off + 1] &= (uint8_t)~(CLIENT_SSL >> 8);
	consume(ms, SRV, n, seq);
	ms->ms_seq[CLI] = 0;
	if (queue(ms, CLI, copy, n) == -1)
		return (-1);
	ms->ms_phase = MY_LOGIN;
	return (0);
}

/* The client's login: keep it, and send its first 32 bytes as SSLRequest. */
static int
on_login(struct conn *c, const uint8_t *p, size_t n, uint8_t seq)
{
	struct mysql_state *ms = c->c_my;
	struct my_login l;
	uint8_t req[32];

	if (my_parse_login(p, n, &l) == -1)
		return (fail(c, "malformed login packet from the client"));
	if (n == 32 && (l.l_caps & CLIENT_SSL))
		return (fail(c, "the client asked for TLS; connect to dmtls "
		    "without TLS (ssl-mode=DISABLED), dmtls adds TLS toward "
		    "the server"));
	if (l.l_plugin[0] != '\0')
		snprintf(ms->ms_plugin, sizeof(ms->ms_plugin), "%s",
		    l.l_plugin);
	memcpy(ms->ms_login, p, n);
	ms->ms_loginlen = n;
	/* mysqld takes flags, max packet size and charset from here. */
	memcpy(req, p, 32);
	req[1] |= CLIENT_SSL >> 8;
	ms->ms_login[1] |= CLIENT_SSL >> 8;
	consume(ms, CLI, n, seq);
	ms->ms_seq[SRV] = 1;
	if (queue(ms, SRV, req, sizeof(req)) == -1)
		return (-1);
	ms->ms_phase = MY_SSLREQ;
	return (0);
}

static int
plugin_is(const struct mysql_state *ms, const char *name)
{
	return (strcmp(ms->ms_plugin, name) == 0);
}

/* A packet from the server during the auth phase. */
static int
on_server_auth(struct conn *c, const uint8_t *p, size_t n, uint8_t seq)
{
	struct mysql_state *ms = c->c_my;
	uint8_t copy[MY_MAXPKT];
	size_t off;

	memcpy(copy, p, n);
	consume(ms, SRV, n, seq);
	if (n == 0)
		return (fail(c, "empty packet from the server during login"));
	switch (copy[0]) {
	case 0x00:		/* OK: the auth phase is over */
	case 0xff:		/* ERR: the server's own words, unchanged */
		ms->ms_phase = MY_DONE;
		ms->ms_client_told = 1;
		ms->ms_expect = EXPECT_NONE;
		break;
	case 0xfe:		/* AuthSwitchRequest: new plugin, new nonce */
		off = 1;
		if (get_cstr(copy, n, &off, ms->ms_plugin,
		    sizeof(ms->ms_plugin)) == -1)
			return (fail(c, "malformed auth switch request"));
		if (n - off >= 20)
			memcpy(ms->ms_nonce, copy + off, 20);
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
on_client_password(struct conn *c, const uint8_t *p, size_t n, uint8_t seq)
{
	struct mysql_state *ms = c->c_my;
	uint8_t pw[512], more[1 + sizeof(key_pem)];
	int len, i;

	if (n == 1 && (p[0] == 0x02 || p[0] == 0x01)) {
		consume(ms, CLI, n, seq);
		more[0] = 0x01;
		memcpy(more + 1, key_pem, key_pem_len);
		return (queue(ms, CLI, more, 1 + key_pem_len));
	}
	if (n == 256) {
		if ((len = key_decrypt(p, n, pw, sizeof(pw))) <= 0) {
			consume(ms, CLI, n, seq);
			return (fail(c, "the client encrypted its password with "
			    "a server public key it already had, which dmtls "
			    "cannot read; let the client request the key "
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
		return (fail(c, "the client sent an empty password packet"));
	}
	if (p[n - 1] != 0) {
		consume(ms, CLI, n, seq);
		return (fail(c, "the client sent an encrypted password dmtls "
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
on_client_auth(struct conn *c, const uint8_t *p, size_t n, uint8_t seq)
{
	struct mysql_state *ms = c->c_my;
	uint8_t copy[MY_MAXPKT];
	int r;

	if (ms->ms_expect == EXPECT_RSA)
		return (on_client_password(c, p, n, seq));
	memcpy(copy, p, n);
	consume(ms, CLI, n, seq);
	r = queue(ms, SRV, copy, n);
	explicit_bzero(copy, n);	/* a cleartext plugin's password */
	return (r);
}

int
mysql_begin(struct conn *c)
{
	if ((c->c_my = calloc(1, sizeof(*c->c_my))) == NULL)
		return (-1);
	c->c_my->ms_phase = MY_GREETING;
	return (0);
}

/* The one way the upgrade's state goes: wiped (logins, passwords), freed. */
static void
ms_free(struct conn *c)
{
	explicit_bzero(c->c_my, sizeof(*c->c_my));
	free(c->c_my);
	c->c_my = NULL;
}

/*
 * Hand leftover input to the relay and free the upgrade's state.  0, or -1
 * (reason recorded, state kept for the caller's close) when no buffer is
 * left.  By the plaintext invariant, the server's leftover came over TLS.
 */
static int
finish(struct conn *c)
{
	struct mysql_state *ms = c->c_my;
	struct half *h[2] = { &c->c_relay.r_up, &c->c_relay.r_down };
	int leg;

	for (leg = CLI; leg <= SRV; leg++) {
		if (ms->ms_inlen[leg] == 0)
			continue;
		if ((h[leg]->h_buf = bufpool_get()) == NULL)
			return (fail(c, "out of memory for the relay's buffers"));
		memcpy(h[leg]->h_buf, ms->ms_in[leg], ms->ms_inlen[leg]);
		h[leg]->h_off = 0;
		h[leg]->h_len = ms->ms_inlen[leg];
		h[leg]->h_bytes += ms->ms_inlen[leg];
	}
	ms_free(c);
	return (0);
}

/* One round of work; 1 when something moved, 0 when blocked, -1 error. */
static int
step_once(struct conn *c)
{
	struct mysql_state *ms = c->c_my;
	const uint8_t *p;
	size_t n;
	uint8_t seq;
	int r, leg, moved = 0;

	for (leg = CLI; leg <= SRV; leg++) {
		if (ms->ms_outlen[leg] == 0)
			continue;
		/* The SSLRequest goes out in clear, before the TLS session
		 * exists; everything later to the server goes through TLS.
		 * Until all of it is out, the server has nothing to answer. */
		if (leg == SRV && ms->ms_phase == MY_SSLREQ &&
		    server_quiet(c) == -1)
			return (-1);
		if ((r = flush(c, leg)) == -1)
			return (-1);
		moved |= r;
	}
	switch (ms->ms_phase) {
	case MY_GREETING:
		if ((r = next_packet(c, SRV, &p, &n, &seq)) != 1)
			return (r == -1 ? -1 : moved);
		return (on_greeting(c, p, n, seq) == -1 ? -1 : 1);
	case MY_LOGIN:
		if ((r = next_packet(c, CLI, &p, &n, &seq)) != 1)
			return (r == -1 ? -1 : moved);
		return (on_login(c, p, n, seq) == -1 ? -1 : 1);
	case MY_SSLREQ:
		if (ms->ms_outlen[SRV] != 0)
			return (moved);
		/* The invariant at the top: no plaintext from the server
		 * is left anywhere TLS or the relay would read it.  (What
		 * the server sends once the SSLRequest is out is read by
		 * wolfSSL as TLS: garbage there fails the handshake.) */
		if (ms->ms_inlen[SRV] != 0 || c->c_ep[SRV].ep_ra_len != 0)
			return (fail(c, "internal error: server bytes read "
			    "before TLS"));
		if (tls_setup(&c->c_tls, &c->c_ep[SRV], &c->c_tlsp) == -1)
			return (fail(c, "cannot create a TLS session"));
		ms->ms_phase = MY_TLS;
		return (1);
	case MY_TLS:
		switch (tls_handshake(&c->c_tls, &c->c_ep[SRV])) {
		case TLS_WAIT:
			return (moved);
		case TLS_FAIL:
			return (-2);
		case TLS_DONE:
			break;
		}
		if (queue(ms, SRV, ms->ms_login, ms->ms_loginlen) == -1)
			return (-1);
		explicit_bzero(ms->ms_login, sizeof(ms->ms_login));
		ms->ms_phase = MY_AUTH;
		return (1);
	case MY_AUTH:
		if ((r = next_packet(c, SRV, &p, &n, &seq)) == -1)
			return (-1);
		if (r == 1)
			return (on_server_auth(c, p, n, seq) == -1 ? -1 : 1);
		if ((r = next_packet(c, CLI, &p, &n, &seq)) == -1)
			return (-1);
		if (r == 1)
			return (on_client_auth(c, p, n, seq) == -1 ? -1 : 1);
		return (moved);
	case MY_DONE:
		return (moved);
	}
	return (moved);
}

int
mysql_step(struct conn *c)
{
	struct mysql_state *ms = c->c_my;
	int r;

	do {
		if ((r = step_once(c)) == -2) {
			conn_tls_failed(c);	/* the handshake failed */
			return (-1);
		}
		if (r == -1)
			goto err;
	} while (r == 1);
	if (ms->ms_phase != MY_DONE || ms->ms_outlen[CLI] != 0 ||
	    ms->ms_outlen[SRV] != 0)
		return (0);
	if (c->c_reason[0] != '\0') {
		/* The server refused before TLS: the client has its ERR. */
		conn_close(c, NULL);
		return (-1);
	}
	if (finish(c) == -1)
		goto err;
	return (1);
err:
	if (c->c_result == NULL || strcmp(c->c_result, "allowed") == 0)
		c->c_result = "failed";
	conn_close(c, NULL);
	return (-1);
}

void
mysql_abort(struct conn *c)
{
	struct mysql_state *ms = c->c_my;
	uint8_t pkt[600];
	char msg[512];
	size_t n;
	ssize_t w;

	if (ms == NULL)
		return;
	if (!ms->ms_client_told && c->c_ep[CLI].ep_fd != -1) {
		snprintf(msg, sizeof(msg), "dmtls (route %s): %s",
		    c->c_route->rt_conf->name, c->c_reason);
		n = my_err_packet(pkt, sizeof(pkt), ms->ms_seq[CLI], msg);
		/* Best effort: an empty socket buffer takes a small packet. */
		w = send(c->c_ep[CLI].ep_fd, pkt, n, MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		(void)w;
	}
	ms_free(c);
}
