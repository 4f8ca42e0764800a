/*
 * fuzz_mysql: the in-band TLS upgrade of a mysql route (proxy/mysql.c, the
 * state machine, with the parsers of mysqlproto.c and the RSA exchange of
 * mysqlkey.c), fed a hostile MySQL server's and a hostile client's streams
 * from one input, through every phase: greeting, login, SSLRequest, TLS,
 * auth switch, full auth and the key exchange, OK/ERR, and what follows.
 *
 * The upgrade runs on two socketpairs, as conn.c drives it: both sockets
 * "fire" after every write of the input, until nothing moves.  The server
 * leg's TLS is one of three, by the input's first byte (bits 0-1):
 *   0  no TLS: tls_setup/tls_handshake succeed without a session (link
 *      wraps, see fuzz.mk), and the server's packets come in clear: the
 *      fastest way through the auth phase;
 *   1  an in-process wolfSSL server (the test PKI's leaf) completes the
 *      handshake; the server's bytes after the SSLRequest go through it;
 *   2  the server's bytes after the SSLRequest reach dmtls's wolfSSL
 *      client raw: a hostile TLS server.
 * Bit 2: an allow-list that refuses the test PKI's leaf (cert-allowed-cn
 * other).  Bit 3: each client packet of 256 bytes is replaced by its
 * first bytes encrypted (RSA-OAEP) with the key dmtls offers, as a real
 * client encrypts its password, so the decryption path is reached too.
 *
 * Then chunks: a header of two bytes (bit 0 of the first: 0 the client's
 * stream, 1 the server's; the other 15 bits the length), then the bytes.
 *
 * Checked on every input: the server's first packet is the SSLRequest (32
 * bytes, seq 1, CLIENT_SSL), and with TLS (modes 1, 2) the next byte is a
 * TLS handshake record, never the login in clear; the greeting the client
 * gets never shows CLIENT_SSL.
 */
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include "../../policy/certset.h"
#include "../../policy/policy.h"
#include "../../proxy/bufpool.h"
#include "../../proxy/conf.h"
#include "../../proxy/endpoint.h"
#include "../../proxy/mysql.h"
#include "../../proxy/mysqlkey.h"
#include "../../proxy/mysqlproto.h"
#include "../../proxy/tls.h"
#include "fuzz.h"

enum { CLI = MYSQL_CLIENT, SRV = MYSQL_SERVER };
enum { M_PLAIN, M_PEER, M_RAW };

int __real_tls_setup(struct tls_session *, struct endpoint *,
    const struct tls_params *);
enum tls_status __real_tls_handshake(struct tls_session *, struct endpoint *);
int __wrap_tls_setup(struct tls_session *, struct endpoint *,
    const struct tls_params *);
enum tls_status __wrap_tls_handshake(struct tls_session *, struct endpoint *);

static int mode;
static int verbose;		/* FUZZ_VERBOSE set: say how each input ended */
static RsaKey pubkey;
static WC_RNG rng;
static struct strlist no_alpn;
static char *cn_other[] = { "other", NULL };

int
__wrap_tls_setup(struct tls_session *ts, struct endpoint *ep,
    const struct tls_params *p)
{
	if (mode == M_PLAIN)
		return (0);
	return (__real_tls_setup(ts, ep, p));
}

enum tls_status
__wrap_tls_handshake(struct tls_session *ts, struct endpoint *ep)
{
	if (mode == M_PLAIN)
		return (TLS_DONE);
	return (__real_tls_handshake(ts, ep));
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint8_t der[1024];
	const char *pem;
	size_t len;
	word32 idx = 0;
	char err[256];
	int n;

	(void)argc;
	(void)argv;
	if (mysqlkey_init(err, sizeof(err)) == -1) {
		fprintf(stderr, "fuzz: %s\n", err);
		exit(1);
	}
	pem = mysqlkey_pem(&len);
	if ((n = wc_PubKeyPemToDer((const unsigned char *)pem, (int)len, der,
	    sizeof(der))) <= 0 || wc_InitRsaKey(&pubkey, NULL) != 0 ||
	    wc_RsaPublicKeyDecode(der, &idx, &pubkey, (word32)n) != 0 ||
	    wc_InitRng(&rng) != 0) {
		fprintf(stderr, "fuzz: cannot read dmtls's MySQL RSA key\n");
		exit(1);
	}
	(void)fuzz_certset_of(FUZZ_CLIENT);
	(void)fuzz_certset_of(FUZZ_PEER_SERVER);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	return (0);
}

/* The harness's side of the two legs. */
struct rig {
	struct endpoint		 r_ep[2];	/* dmtls's endpoints */
	struct tls_session	 r_ts;
	struct mysql		*r_ms;
	enum mysql_status	 r_st;
	int			 r_peer[2];	/* the client's, the server's */
	int			 r_encrypt;
	/* The server: what it got before TLS, its TLS session (mode 1). */
	uint8_t			 r_srv_head[37];
	size_t			 r_srv_seen;
	WOLFSSL			*r_srv_ssl;
	int			 r_srv_hs_done;
	uint8_t			*r_srv_pend;	/* to send over its TLS */
	size_t			 r_srv_pendlen;
	/* The client: the first packet it got. */
	uint8_t			 r_cli_head[4 + 256];
	size_t			 r_cli_seen;
};

static size_t
send_all(int fd, const uint8_t *p, size_t n)
{
	size_t off = 0;
	ssize_t w;

	while (off < n && (w = send(fd, p + off, n - off, MSG_NOSIGNAL)) > 0)
		off += (size_t)w;
	return (off);
}

/* Each client packet of 256 bytes, encrypted as a real client would. */
static void
encrypt_passwords(uint8_t *p, size_t n)
{
	uint8_t out[256];
	size_t off, len;

	for (off = 0; off + 4 <= n; off += 4 + len) {
		len = my_packet_len(p + off);
		if (len != 256 || off + 4 + len > n)
			continue;
		if (wc_RsaPublicEncrypt_ex(p + off + 4, 20 + p[off + 4] % 100,
		    out, sizeof(out), &pubkey, &rng, WC_RSA_OAEP_PAD,
		    WC_HASH_TYPE_SHA, WC_MGF1SHA1, NULL, 0) == (int)sizeof(out))
			memcpy(p + off + 4, out, sizeof(out));
	}
}

static void
deliver(struct rig *r, int leg, const uint8_t *p, size_t n)
{
	uint8_t *b;

	if (leg == CLI) {
		if (r->r_encrypt && (b = malloc(n > 0 ? n : 1)) != NULL) {
			memcpy(b, p, n);
			encrypt_passwords(b, n);
			send_all(r->r_peer[CLI], b, n);
			free(b);
		} else
			send_all(r->r_peer[CLI], p, n);
		return;
	}
	if (mode != M_PEER || r->r_srv_seen < 36) {
		send_all(r->r_peer[SRV], p, n);
		return;
	}
	if (n == 0)
		return;
	if ((b = realloc(r->r_srv_pend, r->r_srv_pendlen + n)) == NULL)
		return;
	memcpy(b + r->r_srv_pendlen, p, n);
	r->r_srv_pend = b;
	r->r_srv_pendlen += n;
}

/* What dmtls sent to the client: keep the first packet, drop the rest. */
static size_t
client_reads(struct rig *r)
{
	uint8_t buf[16384];
	size_t moved = 0, k;
	ssize_t got;

	while ((got = recv(r->r_peer[CLI], buf, sizeof(buf), MSG_DONTWAIT)) >
	    0) {
		k = sizeof(r->r_cli_head) - r->r_cli_seen;
		if (k > (size_t)got)
			k = (size_t)got;
		memcpy(r->r_cli_head + r->r_cli_seen, buf, k);
		r->r_cli_seen += k;
		moved += (size_t)got;
	}
	return (moved);
}

/* The in-process TLS server (mode 1): handshake, read, send its part. */
static size_t
server_tls(struct rig *r)
{
	uint8_t buf[4096];
	size_t moved = 0;
	int k;

	if (r->r_srv_ssl == NULL) {
		if ((r->r_srv_ssl = wolfSSL_new(certset_ctx(fuzz_certset_of(
		    FUZZ_PEER_SERVER)))) == NULL ||
		    wolfSSL_set_fd(r->r_srv_ssl, r->r_peer[SRV]) !=
		    WOLFSSL_SUCCESS)
			abort();
		wolfSSL_set_using_nonblock(r->r_srv_ssl, 1);
	}
	if (!r->r_srv_hs_done) {
		if (wolfSSL_accept(r->r_srv_ssl) != WOLFSSL_SUCCESS)
			return (0);
		r->r_srv_hs_done = 1;
		moved++;
	}
	while ((k = wolfSSL_read(r->r_srv_ssl, buf, sizeof(buf))) > 0)
		moved += (size_t)k;
	if (r->r_srv_pendlen > 0) {
		k = wolfSSL_write(r->r_srv_ssl, r->r_srv_pend,
		    (int)r->r_srv_pendlen);
		if (k > 0) {
			memmove(r->r_srv_pend, r->r_srv_pend + k,
			    r->r_srv_pendlen - (size_t)k);
			r->r_srv_pendlen -= (size_t)k;
			moved += (size_t)k;
		}
	}
	return (moved);
}

/* What dmtls sent to the server: the SSLRequest first, then TLS or not. */
static size_t
server_reads(struct rig *r)
{
	uint8_t buf[16384];
	size_t moved = 0, want, k;
	ssize_t got;

	for (;;) {
		want = sizeof(buf);
		/* Mode 1: the TLS server reads what follows the SSLRequest. */
		if (mode == M_PEER && r->r_srv_seen >= 36)
			return (moved + server_tls(r));
		if (mode == M_PEER)
			want = 36 - r->r_srv_seen;
		if ((got = recv(r->r_peer[SRV], buf, want, MSG_DONTWAIT)) <= 0)
			return (moved);
		k = sizeof(r->r_srv_head) - r->r_srv_seen;
		if (r->r_srv_seen < sizeof(r->r_srv_head)) {
			if (k > (size_t)got)
				k = (size_t)got;
			memcpy(r->r_srv_head + r->r_srv_seen, buf, k);
		}
		r->r_srv_seen += (size_t)got;
		moved += (size_t)got;
	}
}

/* Let both sides run, as if both sockets fired, until nothing moves. */
static void
run(struct rig *r)
{
	size_t moved;
	int round, i;

	for (round = 0; round < 64; round++) {
		moved = 0;
		if (r->r_st == MYSQL_WAIT) {
			for (i = 0; i < 2; i++)
				endpoint_ready(&r->r_ep[i], EV_READ | EV_WRITE);
			r->r_st = mysql_step(r->r_ms);
		}
		moved += client_reads(r);
		moved += server_reads(r);
		if (moved == 0)
			break;
	}
}

static void
check(const struct rig *r)
{
	const uint8_t *h = r->r_srv_head;
	struct my_greeting g;
	size_t n;

	if (r->r_srv_seen >= 36)
		fuzz_check(h[0] == 32 && h[1] == 0 && h[2] == 0 && h[3] == 1 &&
		    (h[5] & (CLIENT_SSL >> 8)),
		    "the server's first packet is not the SSLRequest");
	if (mode == M_RAW && r->r_srv_seen >= 37)
		fuzz_check(h[36] == 22,
		    "after the SSLRequest, the server got no TLS handshake");
	if (r->r_cli_seen >= 4) {
		n = my_packet_len(r->r_cli_head);
		if (n <= r->r_cli_seen - 4 && n > 0 && r->r_cli_head[4] == 0x0a &&
		    my_parse_greeting(r->r_cli_head + 4, n, &g) == 0)
			fuzz_check(!(g.g_caps & CLIENT_SSL),
			    "the client was shown CLIENT_SSL");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mysql_params mp;
	struct policy_rules rules;
	struct rig r;
	size_t off = 1, n, len;
	uint8_t *left;
	int sv[2], leg, i;

	if (size < 1)
		return (0);
	mode = (data[0] & 3) % 3;
	memset(&r, 0, sizeof(r));
	r.r_encrypt = (data[0] >> 3) & 1;
	memset(&rules, 0, sizeof(rules));
	if (data[0] & 4) {
		rules.pr_cn.pl_v = cn_other;
		rules.pr_cn.pl_n = 1;
	}
	memset(&mp, 0, sizeof(mp));
	for (i = 0; i < 2; i++) {
		fuzz_nonblock_pair(sv);
		endpoint_init(&r.r_ep[i], sv[0]);
		r.r_peer[i] = sv[1];
		mp.mp_ep[i] = &r.r_ep[i];
	}
	mp.mp_tls = &r.r_ts;
	mp.mp_tlsp.tp_ctx = certset_ctx(fuzz_certset_of(FUZZ_CLIENT));
	mp.mp_tlsp.tp_kind = TLS_CLIENT;
	mp.mp_tlsp.tp_alpn = &no_alpn;
	mp.mp_tlsp.tp_sni = "localhost";
	mp.mp_tlsp.tp_server_name = "localhost";
	mp.mp_tlsp.tp_rules = &rules;
	mp.mp_target = "db:3306";
	if ((r.r_ms = mysql_begin(&mp)) == NULL)
		abort();
	r.r_st = MYSQL_WAIT;

	run(&r);
	while (off + 2 <= size) {
		leg = data[off] & 1;
		len = (size_t)(data[off] >> 1) << 8 | data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		deliver(&r, leg, data + off, len);
		off += len;
		run(&r);
	}
	/* Both peers end their side. */
	shutdown(r.r_peer[CLI], SHUT_WR);
	shutdown(r.r_peer[SRV], SHUT_WR);
	run(&r);
	check(&r);
	if (verbose)
		fprintf(stderr, "fuzz_mysql: mode %d: %s (%s); server got %zu "
		    "bytes%s, client %zu\n", mode, r.r_st == MYSQL_DONE ?
		    "done" : r.r_st == MYSQL_WAIT ? "waiting" : r.r_st ==
		    MYSQL_TLS_FAIL ? "TLS failed" : "failed",
		    r.r_st == MYSQL_TLS_FAIL ? r.r_ts.ts_v.tv_reason :
		    mysql_reason(r.r_ms), r.r_srv_seen, r.r_srv_hs_done ?
		    " and a TLS handshake" : "", r.r_cli_seen);

	if (r.r_st == MYSQL_DONE) {
		for (i = 0; i < 2; i++)
			if ((left = mysql_take(r.r_ms, i, &n)) != NULL) {
				fuzz_check(n > 0 && n <= BUFPOOL_SZ,
				    "leftover size");
				bufpool_put(left);
			}
		mysql_end(r.r_ms, NULL);
	} else
		mysql_end(r.r_ms, r.r_st == MYSQL_WAIT ? "timed out" :
		    mysql_reason(r.r_ms)[0] != '\0' ? mysql_reason(r.r_ms) :
		    "failed");
	for (i = 0; i < 2; i++) {
		endpoint_release(&r.r_ep[i]);
		close(r.r_ep[i].ep_fd);
		close(r.r_peer[i]);
	}
	if (r.r_srv_ssl != NULL)
		wolfSSL_free(r.r_srv_ssl);
	free(r.r_srv_pend);
	return (0);
}
