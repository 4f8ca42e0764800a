/*
 * probe.c: `dmtls probe ADDR`, the tool to reach for when a route is
 * refused.  It connects as a client route would (TLS from the first byte,
 * or after the MySQL greeting and an SSLRequest with --mysql), with the
 * same TLS context (certset: TLS 1.2 minimum, AEAD ciphers, dmtls's key
 * shares), SNI and host name check, then prints what the server showed and
 * one verdict per rule:
 *
 *   ssl-ca        the chain leads to a CA of --ssl-ca, every certificate
 *                 of it within its validity
 *   server-name   the leaf is valid for --server-name
 *   allow-list    the identity policy of policy/ on the leaf (the same
 *                 function and denial text as the routes)
 *   client-cert   the server's own verdict on what the probe presented:
 *                 a fatal alert after the handshake is a refusal
 *
 * The verify callback records what wolfSSL found and lets the handshake go
 * on, so the report shows the whole chain even when a rule fails.  The
 * probe never sends application data (no MySQL login, no HTTP request):
 * after the handshake it only waits --wait for an alert, then closes with
 * close_notify.  Blocking sockets with an absolute deadline per phase.
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include "../policy/certset.h"
#include "../policy/hostname.h"
#include "../policy/policy.h"
#include "addr.h"
#include "conf.h"
#include "conffile.h"
#include "mysqlproto.h"
#include "route.h"
#include "probe.h"
#include "util.h"

#define CHAIN_MAX	10		/* certificates of the chain kept */
#define CERT_MAX	(64 * 1024)	/* bytes of one kept certificate */
#define DEF_WAIT_MS	2000

/* MySQL capability flags the SSLRequest needs. */
#define MY_LONG_PASSWORD	0x00000001U
#define MY_PROTOCOL_41		0x00000200U
#define MY_SSL			0x00000800U
#define MY_SECURE_CONN		0x00008000U
#define MY_PLUGIN_AUTH		0x00080000U

struct probe {
	struct route_conf p_rc;		/* what a client route would hold */
	const char	*p_addr;
	struct addr	 p_a;
	char		 p_sni[256];
	int		 p_mysql;
	long		 p_wait_ms;
	int		 p_fd;
	int64_t		 p_deadline;	/* of the phase under way (ms) */

	/* What the server showed. */
	uint8_t		*p_chain[CHAIN_MAX];
	size_t		 p_chain_len[CHAIN_MAX];
	int		 p_nchain;
	int		 p_sent;	/* certificates the server sent */
	int		 p_leaf_seen;	/* the callback ran on the leaf */
	int		 p_chain_err;	/* first chain error wolfSSL found */
	int		 p_chain_depth;
	struct peer_id	 p_id;
	int		 p_id_ok;
	uint8_t		 p_first[16];	/* the first bytes received */
	size_t		 p_nfirst;
	int		 p_timed_out;
	int		 p_eof;

	/* The verdict. */
	char		 p_failed[256];	/* names of the rules that failed */
};

/* "dmtls probe: message" on stderr; returns EXIT_USAGE. */
#define usage_error(...)	cmd_error("dmtls probe", EXIT_USAGE, __VA_ARGS__)

static void
usage(FILE *f)
{
	fprintf(f, "usage: dmtls probe ADDR [--ssl-ca FILE] [--ssl-cert FILE "
	    "--ssl-key FILE] [--server-name NAME] [--cert-allowed-cn CN]... "
	    "[--cert-allowed-dns NAME]... [--cert-allowed-uri URI]... "
	    "[--cert-allowed-ou OU]... [--alpn LIST] [--mysql] "
	    "[--connect-timeout D] [--handshake-timeout D] [--wait D]\n"
	    "Connects to ADDR as a client route would, prints the TLS version, "
	    "cipher, ALPN and the server's certificates, and the verdict of "
	    "each rule.\nExit status: 0 all pass, 1 something failed, 2 usage "
	    "error.  No application data is sent.\n");
}

/*
 * E(s): s for a terminal, printable ASCII as is and every other byte as
 * \xNN: peer text (names, versions, messages) goes through it.  The result
 * lives in one of 8 rotating buffers, so a printf may use several.
 */
static const char *
E(const char *s)
{
	static char bufs[8][1024];
	static int next;
	char *b = bufs[next++ % 8];
	size_t off = 0;

	for (; *s != '\0' && off + 5 < sizeof(bufs[0]); s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			b[off++] = (char)ch;
		else
			off += (size_t)snprintf(b + off, 5, "\\x%02x", ch);
	}
	b[off] = '\0';
	return (b);
}

static void
say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line of the report. */
static void
say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* Record that rule failed (for the result line). */
static void
failed(struct probe *p, const char *rule)
{
	size_t off = strlen(p->p_failed);

	snprintf(p->p_failed + off, sizeof(p->p_failed) - off, "%s%s",
	    off ? ", " : "", rule);
}

/* ---- the peer's certificates ------------------------------------------- */

/*
 * The verify callback: keep the chain the server sent, note the errors
 * wolfSSL found, read the leaf's identity, and let the handshake continue
 * whatever it found (the verdict is made afterwards).
 */
static int
probe_verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *st)
{
	struct probe *p = st->userCtx;
	int i, n;

	if (p == NULL)
		return (0);
	if (p->p_nchain == 0 && st->certs != NULL && st->totalCerts > 0) {
		p->p_sent = st->totalCerts;
		n = st->totalCerts < CHAIN_MAX ? st->totalCerts : CHAIN_MAX;
		for (i = 0; i < n; i++) {
			size_t len = st->certs[i].length;

			if (len == 0 || len > CERT_MAX ||
			    (p->p_chain[i] = malloc(len)) == NULL)
				break;
			memcpy(p->p_chain[i], st->certs[i].buffer, len);
			p->p_chain_len[i] = len;
			p->p_nchain = i + 1;
		}
		if (p->p_nchain > 0)
			p->p_id_ok = peer_id_from_der(p->p_chain[0],
			    p->p_chain_len[0], &p->p_id) == 0;
	}
	if (!preverify && st->error != 0 && p->p_chain_err == 0) {
		p->p_chain_err = st->error;
		p->p_chain_depth = st->error_depth;
	}
	if (st->error_depth == 0)
		p->p_leaf_seen = 1;
	return (1);
}

/* An ASN.1 time (with or without its tag) as a time_t; 0 if unreadable. */
static time_t
cert_time(const uint8_t *d, int len)
{
	const byte *date = d;
	byte format;
	int dlen = len;
	struct tm tm;

	if (d == NULL || len < 2)
		return (0);
	if ((d[0] == ASN_UTC_TIME || d[0] == ASN_GENERALIZED_TIME) &&
	    d[1] == len - 2) {
		if (wc_GetDateInfo(d, len, &date, &format, &dlen) != 0)
			return (0);
	} else
		format = len >= 15 ? ASN_GENERALIZED_TIME : ASN_UTC_TIME;
	memset(&tm, 0, sizeof(tm));
	if (wc_GetDateAsCalendarTime(date, dlen, format, &tm) != 0)
		return (0);
	return (timegm(&tm));
}

/* wolfSSL's "/O=x/CN=y" as "O=x, CN=y" into buf. */
static void
dn_str(const char *w, char *buf, size_t len)
{
	size_t off = 0;
	const char *s;

	if (*w == '/')
		w++;
	for (s = w; *s != '\0' && off + 3 < len; s++) {
		/* A '/' that starts "XX=" separates attributes. */
		if (*s == '/' && s[1] != '\0' && strchr(s + 1, '=') != NULL &&
		    strspn(s + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz") == (size_t)(strchr(s + 1,
		    '=') - s - 1)) {
			buf[off++] = ',';
			buf[off++] = ' ';
			continue;
		}
		buf[off++] = *s;
	}
	buf[off] = '\0';
}

/* Print one certificate of the chain; remember its not-after. */
static void
print_cert(int i, const uint8_t *der, size_t len, time_t *na)
{
	DecodedCert dc;
	char subj[WC_ASN_NAME_MAX + 64], iss[WC_ASN_NAME_MAX + 64], when[32];
	time_t now = time(NULL);
	struct tm tm;

	*na = 0;
	InitDecodedCert(&dc, der, (word32)len, NULL);
	if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) != 0) {
		say("  %d: (a certificate wolfSSL cannot parse, %zu bytes)", i,
		    len);
		FreeDecodedCert(&dc);
		return;
	}
	dn_str(dc.subject, subj, sizeof(subj));
	dn_str(dc.issuer, iss, sizeof(iss));
	*na = cert_time(dc.afterDate, dc.afterDateLen);
	gmtime_r(na, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	say("  %d: subject=\"%s\" issuer=\"%s\"", i, E(subj), E(iss));
	if (*na >= now)
		say("     not_after=%s days_left=%ld", when,
		    (long)((*na - now) / 86400));
	else
		say("     not_after=%s EXPIRED", when);
	FreeDecodedCert(&dc);
}

/* ---- sockets ----------------------------------------------------------- */

/* Wait until fd is readable (POLLIN) or writable before the deadline. */
static int
wait_fd(struct probe *p, short ev)
{
	struct pollfd pfd;
	int64_t left;
	int r;

	for (;;) {
		left = p->p_deadline - now_ms();
		if (left <= 0) {
			p->p_timed_out = 1;
			errno = ETIMEDOUT;
			return (-1);
		}
		pfd.fd = p->p_fd;
		pfd.events = ev;
		pfd.revents = 0;
		r = poll(&pfd, 1, (int)(left > 60000 ? 60000 : left));
		if (r > 0)
			return (0);
		if (r == -1 && errno != EINTR)
			return (-1);
	}
}

/* wolfSSL's receive: the deadline, and a note of the first bytes. */
static int
probe_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct probe *p = arg;
	ssize_t n;

	(void)ssl;
	for (;;) {
		if (wait_fd(p, POLLIN) == -1)
			return (p->p_timed_out ? WOLFSSL_CBIO_ERR_TIMEOUT :
			    WOLFSSL_CBIO_ERR_GENERAL);
		n = recv(p->p_fd, buf, (size_t)sz, 0);
		if (n > 0) {
			size_t k = sizeof(p->p_first) - p->p_nfirst;
			if ((size_t)n < k)
				k = (size_t)n;
			memcpy(p->p_first + p->p_nfirst, buf, k);
			p->p_nfirst += k;
			return ((int)n);
		}
		if (n == 0) {
			p->p_eof = 1;
			return (WOLFSSL_CBIO_ERR_CONN_CLOSE);
		}
		if (errno == EINTR || errno == EAGAIN)
			continue;
		return (errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST :
		    WOLFSSL_CBIO_ERR_GENERAL);
	}
}

/* Read exactly n bytes before the deadline.  0, or -1. */
static int
recv_exact(struct probe *p, uint8_t *buf, size_t n)
{
	size_t off = 0;
	ssize_t r;

	while (off < n) {
		if (wait_fd(p, POLLIN) == -1)
			return (-1);
		r = recv(p->p_fd, buf + off, n - off, 0);
		if (r == 0) {
			p->p_eof = 1;
			return (-1);
		}
		if (r == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r == -1)
			return (-1);
		off += (size_t)r;
	}
	return (0);
}

/* Connect to p_a before the deadline; the fd is left blocking.  0 or -1. */
static int
probe_connect(struct probe *p, char *err, size_t errlen)
{
	socklen_t sl = sizeof(int);
	int e = 0, fl;

	p->p_deadline = now_ms() + p->p_rc.connect_timeout_ms;
	if ((p->p_fd = addr_connect(&p->p_a)) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		return (-1);
	}
	if (wait_fd(p, POLLOUT) == -1) {
		if (p->p_timed_out)
			snprintf(err, errlen, "no answer within %ldms "
			    "(--connect-timeout)", p->p_rc.connect_timeout_ms);
		else
			snprintf(err, errlen, "%s", strerror(errno));
		return (-1);
	}
	if (getsockopt(p->p_fd, SOL_SOCKET, SO_ERROR, &e, &sl) == -1 || e) {
		snprintf(err, errlen, "%s", strerror(e ? e : errno));
		return (-1);
	}
	if ((fl = fcntl(p->p_fd, F_GETFL)) != -1)
		(void)fcntl(p->p_fd, F_SETFL, fl & ~O_NONBLOCK);
	return (0);
}

/* ---- the MySQL in-band upgrade ----------------------------------------- */

/*
 * Read the server's greeting and send an SSLRequest, as a mysql route
 * does; no login is ever sent.  0, or -1 after printing why.
 */
static int
probe_mysql(struct probe *p)
{
	uint8_t hdr[4], pay[MY_MAXPKT], req[36], extra;
	struct my_greeting g;
	size_t n;
	uint32_t caps;

	p->p_deadline = now_ms() + p->p_rc.handshake_timeout_ms;
	if (recv_exact(p, hdr, 4) == -1) {
		say("mysql: FAIL %s", p->p_timed_out ? "no greeting within the "
		    "handshake timeout (is this a MySQL server? a TLS server "
		    "waits for the client: leave out --mysql)" : p->p_eof ?
		    "the server closed the connection before its greeting" :
		    "cannot read the greeting");
		return (-1);
	}
	n = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16;
	if (n == 0 || n > sizeof(pay) || hdr[3] != 0) {
		say("mysql: FAIL the first bytes are not a MySQL greeting "
		    "(packet length %zu, sequence %d)", n, hdr[3]);
		return (-1);
	}
	if (recv_exact(p, pay, n) == -1) {
		say("mysql: FAIL the greeting is cut short");
		return (-1);
	}
	if (pay[0] == 0xff && n >= 3) {
		char msg[512];
		size_t m = n - 3 > sizeof(msg) - 1 ? sizeof(msg) - 1 : n - 3;

		memcpy(msg, pay + 3, m);
		msg[m] = '\0';
		say("mysql: FAIL the server refused the connection: ERROR %d "
		    "%s", pay[1] | pay[2] << 8, E(msg));
		return (-1);
	}
	if (my_parse_greeting(pay, n, &g) == -1) {
		say("mysql: FAIL the greeting is not a MySQL protocol 10 "
		    "handshake");
		return (-1);
	}
	if (!(g.g_caps & MY_SSL)) {
		say("mysql: FAIL server %s (%s) does not support TLS: its "
		    "greeting lacks CLIENT_SSL; enable TLS on the server",
		    E(g.g_version), E(p->p_addr));
		return (-1);
	}
	/* Bytes behind the greeting could come from anyone on the path. */
	if (recv(p->p_fd, &extra, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
		say("mysql: FAIL the server sent bytes after its greeting, "
		    "before TLS; refused as injected on the path");
		return (-1);
	}
	caps = MY_LONG_PASSWORD | MY_PROTOCOL_41 | MY_SSL | MY_SECURE_CONN |
	    MY_PLUGIN_AUTH;
	memset(req, 0, sizeof(req));
	req[0] = 32;
	req[3] = 1;				/* sequence id */
	req[4] = (uint8_t)caps;
	req[5] = (uint8_t)(caps >> 8);
	req[6] = (uint8_t)(caps >> 16);
	req[7] = (uint8_t)(caps >> 24);
	req[10] = 0;				/* max packet 16 MiB */
	req[11] = 1;
	req[12] = 45;				/* utf8mb4_general_ci */
	if (send(p->p_fd, req, sizeof(req), MSG_NOSIGNAL) !=
	    (ssize_t)sizeof(req)) {
		say("mysql: FAIL cannot send the SSLRequest: %s",
		    strerror(errno));
		return (-1);
	}
	say("mysql: greeting from %s (plugin %s) offers TLS; sent an "
	    "SSLRequest, no login", E(g.g_version), g.g_plugin[0] ?
	    E(g.g_plugin) : "none");
	return (0);
}

/* ---- TLS --------------------------------------------------------------- */

static const char *
alert_name(int code)
{
	static const struct { int c; const char *n; } t[] = {
		{ 0, "close_notify" }, { 10, "unexpected_message" },
		{ 20, "bad_record_mac" }, { 40, "handshake_failure" },
		{ 42, "bad_certificate" }, { 43, "unsupported_certificate" },
		{ 44, "certificate_revoked" }, { 45, "certificate_expired" },
		{ 46, "certificate_unknown" }, { 47, "illegal_parameter" },
		{ 48, "unknown_ca" }, { 49, "access_denied" },
		{ 50, "decode_error" }, { 51, "decrypt_error" },
		{ 70, "protocol_version" }, { 71, "insufficient_security" },
		{ 80, "internal_error" }, { 90, "user_canceled" },
		{ 109, "missing_extension" }, { 110, "unsupported_extension" },
		{ 112, "unrecognized_name" }, { 116, "certificate_required" },
		{ 120, "no_application_protocol" },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].c == code)
			return (t[i].n);
	return ("unknown alert");
}

/* Alerts a server sends about the client's certificate. */
static int
cert_alert(int code)
{
	return (code == 42 || code == 43 || code == 44 || code == 45 ||
	    code == 46 || code == 48 || code == 49 || code == 116);
}

/* The fatal alert the server sent, or -1. */
static int
rx_alert(WOLFSSL *ssl)
{
	WOLFSSL_ALERT_HISTORY h;

	memset(&h, 0, sizeof(h));
	wolfSSL_get_alert_history(ssl, &h);
	return (h.last_rx.code > 0 && h.last_rx.level == alert_fatal ?
	    h.last_rx.code : -1);
}

/* Describe the first bytes the server sent when they are not TLS. */
static void
not_tls_hint(struct probe *p)
{
	char txt[sizeof(p->p_first) + 1], hex[3 * sizeof(p->p_first) + 1];
	ssize_t n;
	size_t i;

	if (p->p_nfirst == 0 || (p->p_first[0] >= 20 && p->p_first[0] <= 23 &&
	    p->p_nfirst >= 2 && p->p_first[1] == 3))
		return;
	/* wolfSSL read a record header; show a little more of what came. */
	n = recv(p->p_fd, p->p_first + p->p_nfirst, sizeof(p->p_first) -
	    p->p_nfirst, MSG_DONTWAIT);
	if (n > 0)
		p->p_nfirst += (size_t)n;
	for (i = 0; i < p->p_nfirst; i++) {
		txt[i] = (char)p->p_first[i];
		snprintf(hex + 3 * i, 4, "%02x ", p->p_first[i]);
	}
	txt[i] = '\0';
	hex[3 * i - 1] = '\0';
	say("hint: the server does not speak TLS here: it sent \"%s\" (%s)",
	    E(txt), hex);
	if (p->p_nfirst >= 5 && p->p_first[3] == 0 && p->p_first[4] == 0x0a)
		say("hint: that is a MySQL greeting; probe it with --mysql");
}

/*
 * Set up the session as tlsio.c does for a client route (the socket comes
 * later).  NULL with the step that failed in *step.
 */
static WOLFSSL *
session_new(struct probe *p, WOLFSSL_CTX *ctx, const char **step)
{
	WOLFSSL *ssl;
	char alpn[512];

	*step = "create a session";
	if ((ssl = wolfSSL_new(ctx)) == NULL)
		return (NULL);
	wolfSSL_SSLSetIORecv(ssl, probe_recv);
	wolfSSL_SetCertCbCtx(ssl, p);
	*step = "offer ALPN";
	if (p->p_rc.alpn.sl_n > 0) {
		strlist_join(&p->p_rc.alpn, ",", alpn, sizeof(alpn));
		if (wolfSSL_UseALPN(ssl, alpn, (unsigned)strlen(alpn),
		    WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS)
			goto fail;
	}
	*step = "set the key shares";
	if (certset_key_shares(ssl) == -1)
		goto fail;
	*step = "set SNI";
	if (p->p_sni[0] != '\0' && wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME,
	    p->p_sni, (unsigned short)strlen(p->p_sni)) != WOLFSSL_SUCCESS)
		goto fail;
	/* server-name is judged on the leaf's SANs (judge_name), as a
	 * route does (policy/hostname.c). */
	return (ssl);
fail:
	wolfSSL_free(ssl);
	return (NULL);
}

/* The handshake failed: say why.  Sets *client_alert when the server
 * refused the client's certificate during the handshake. */
static void
handshake_failed(struct probe *p, WOLFSSL *ssl, int r, int *client_alert)
{
	char es[128];
	int err = wolfSSL_get_error(ssl, r), a = rx_alert(ssl);

	wolfSSL_ERR_error_string_n((unsigned long)err, es, sizeof(es));
	if (a >= 0 && cert_alert(a) && p->p_leaf_seen) {
		*client_alert = a;
		say("handshake: FAIL the server sent alert %d %s after seeing "
		    "our certificate", a, alert_name(a));
	} else if (a >= 0)
		say("handshake: FAIL the server sent alert %d %s (%s)", a,
		    alert_name(a), es);
	else if (p->p_timed_out)
		say("handshake: FAIL no answer within %ldms "
		    "(--handshake-timeout)", p->p_rc.handshake_timeout_ms);
	else if (p->p_eof || err == SOCKET_PEER_CLOSED_E)
		say("handshake: FAIL the server closed the connection during "
		    "the handshake");
	else
		say("handshake: FAIL %s", es);
	not_tls_hint(p);
	failed(p, "handshake");
}

/*
 * After a complete handshake, wait up to --wait for the server's verdict
 * on our certificate (TLS 1.3 servers send it after the client's
 * Finished).  Prints the client-cert line; returns 0 or -1 (refused).
 */
static int
server_verdict(struct probe *p, WOLFSSL *ssl)
{
	const char *ours = p->p_rc.sec.ssl_cert != NULL ? "our certificate" :
	    "a client without a certificate";
	uint8_t b;
	char es[128];
	int r, err, a;

	p->p_deadline = now_ms() + p->p_wait_ms;
	p->p_timed_out = 0;
	r = wolfSSL_read(ssl, &b, 1);
	if (r > 0) {
		say("client-cert: PASS the server accepted %s (it sent "
		    "application data, not read)", ours);
		return (0);
	}
	err = wolfSSL_get_error(ssl, r);
	if ((a = rx_alert(ssl)) >= 0) {
		say("client-cert: FAIL the server refused %s: alert %d %s", ours,
		    a, alert_name(a));
		return (-1);
	}
	if (p->p_timed_out) {
		say("client-cert: PASS the server accepted %s (no alert within "
		    "%ldms)", ours, p->p_wait_ms);
		return (0);
	}
	if (err == WOLFSSL_ERROR_ZERO_RETURN || p->p_eof) {
		say("client-cert: PASS the server accepted %s, then closed "
		    "the connection without an alert (behind a sidecar, its "
		    "target may be down)", ours);
		return (0);
	}
	wolfSSL_ERR_error_string_n((unsigned long)err, es, sizeof(es));
	say("client-cert: FAIL the connection failed after the handshake: "
	    "%s", es);
	return (-1);
}

/* ---- the verdict ------------------------------------------------------- */

static void
judge_chain(struct probe *p, const time_t *na)
{
	const char *ca = p->p_rc.sec.ssl_ca;
	int d = p->p_chain_depth;

	if (ca == NULL) {
		say("ssl-ca: SKIP no --ssl-ca, so the chain was not verified "
		    "(a client route always verifies it)");
		return;
	}
	if (!p->p_leaf_seen) {
		say("ssl-ca: SKIP the server sent no certificate");
		return;
	}
	if (p->p_chain_err == 0) {
		say("ssl-ca: PASS the chain leads to a CA in %s", E(ca));
		return;
	}
	failed(p, "ssl-ca");
	if (p->p_chain_err == ASN_AFTER_DATE_E && d < p->p_nchain &&
	    na[d] != 0) {
		char when[32];
		struct tm tm;

		gmtime_r(&na[d], &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		say("ssl-ca: FAIL certificate %d of the chain expired on %s",
		    d, when);
	} else if (p->p_chain_err == ASN_AFTER_DATE_E)
		say("ssl-ca: FAIL certificate %d of the chain has expired", d);
	else if (p->p_chain_err == ASN_BEFORE_DATE_E)
		say("ssl-ca: FAIL certificate %d of the chain is not valid "
		    "yet (check the clocks)", d);
	else if (p->p_chain_err == ASN_NO_SIGNER_E)
		say("ssl-ca: FAIL the chain does not lead to a CA in %s (no "
		    "signer for certificate %d; its issuer is printed above)",
		    E(ca), d);
	else if (p->p_chain_err == ASN_SIG_CONFIRM_E)
		say("ssl-ca: FAIL a signature in the chain does not verify "
		    "(certificate %d)", d);
	else
		say("ssl-ca: FAIL certificate %d: %s", d,
		    wolfSSL_ERR_reason_error_string(
		    (unsigned long)p->p_chain_err));
}

static void
judge_name(struct probe *p)
{
	const char *n = p->p_rc.sec.server_name;
	char sans[1024];

	if (n == NULL) {
		say("server-name: SKIP no --server-name, so the host name is "
		    "not checked (as on a client route without server-name)");
		return;
	}
	if (!p->p_leaf_seen) {
		say("server-name: SKIP the server sent no certificate");
		return;
	}
	if (p->p_id_ok && hostname_matches(&p->p_id, n)) {
		say("server-name: PASS the leaf is valid for %s", E(n));
		return;
	}
	peer_id_sans(&p->p_id, sans, sizeof(sans));
	say("server-name: FAIL the leaf is not valid for %s (its names: %s)",
	    E(n), sans[0] ? E(sans) : "none");
	failed(p, "server-name");
}

static void
judge_policy(struct probe *p)
{
	const struct security_conf *sec = &p->p_rc.sec;
	const char *rule = sec->allowed_dns.sl_n == 0 &&
	    sec->allowed_uri.sl_n == 0 && sec->allowed_ou.sl_n == 0 ?
	    "cert-allowed-cn" : "allow-list";
	struct policy_rules pr;
	char rules[512], why[512], cn[256];

	route_rules_of(sec, &pr);
	if (policy_empty(&pr)) {
		say("cert-allowed-cn: SKIP no --cert-allowed-cn, so any "
		    "certificate from ssl-ca passes (a route warns about that)");
		return;
	}
	policy_describe(&pr, rules, sizeof(rules));
	if (!p->p_leaf_seen || !p->p_id_ok) {
		say("%s: SKIP %s", rule, p->p_leaf_seen ? "the leaf does not "
		    "parse" : "the server sent no certificate");
		return;
	}
	if (policy_allows(&pr, &p->p_id)) {
		peer_id_cn(&p->p_id, cn, sizeof(cn));
		say("%s: PASS CN %s is allowed (rules: %s)", rule, E(cn), E(rules));
		return;
	}
	policy_denial(&pr, &p->p_id, why, sizeof(why));
	say("%s: FAIL %s (rules: %s)", rule, E(why), E(rules));
	failed(p, rule);
}

/* ---- the command ------------------------------------------------------- */

enum {
	O_ALLOWED = CONFIG_O_ALLOWED,	/* + enum policy_kind */
	O_CA = 256, O_CERT, O_KEY, O_SERVER_NAME, O_ALPN, O_MYSQL, O_CONNECT_TO,
	O_HANDSHAKE_TO, O_WAIT, O_HELP
};

static const struct option opts[] = {
	{ "ssl-ca",		required_argument, NULL, O_CA },
	{ "ssl-cert",		required_argument, NULL, O_CERT },
	{ "ssl-key",		required_argument, NULL, O_KEY },
	{ "server-name",	required_argument, NULL, O_SERVER_NAME },
	{ "cert-allowed-cn",	required_argument, NULL, O_ALLOWED + POLICY_CN },
	{ "cert-allowed-dns",	required_argument, NULL, O_ALLOWED + POLICY_DNS },
	{ "cert-allowed-uri",	required_argument, NULL, O_ALLOWED + POLICY_URI },
	{ "cert-allowed-ou",	required_argument, NULL, O_ALLOWED + POLICY_OU },
	{ "alpn",		required_argument, NULL, O_ALPN },
	{ "mysql",		no_argument,	   NULL, O_MYSQL },
	{ "connect-timeout",	required_argument, NULL, O_CONNECT_TO },
	{ "handshake-timeout",	required_argument, NULL, O_HANDSHAKE_TO },
	{ "wait",		required_argument, NULL, O_WAIT },
	{ "help",		no_argument,	   NULL, O_HELP },
	{ NULL, 0, NULL, 0 }
};

static int
set_ms(const char *flag, const char *v, long *ms)
{
	long n;

	if (parse_duration(v, &n) == -1 || n == 0)
		return (usage_error("--%s %s: give a duration greater than "
		    "zero, like 10s or 500ms", flag, v));
	*ms = n;
	return (0);
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
}

static int
parse(int argc, char **argv, struct probe *p)
{
	struct security_conf *sec = &p->p_rc.sec;
	char err[256];
	int ch, rv = 0, alpn_set = 0;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long_only(argc, argv, ":", opts, NULL)) != -1) {
		if (ch >= O_ALLOWED && ch <= O_ALLOWED + POLICY_OU) {
			if (config_add_rules((enum policy_kind)(ch - O_ALLOWED),
			    optarg, sec, err, sizeof(err)) == -1)
				return (usage_error("%s", err));
			continue;
		}
		switch (ch) {
		case O_CA:	set_str(&sec->ssl_ca, optarg); break;
		case O_CERT:	set_str(&sec->ssl_cert, optarg); break;
		case O_KEY:	set_str(&sec->ssl_key, optarg); break;
		case O_SERVER_NAME:
				set_str(&sec->server_name, optarg); break;
		case O_ALPN:
			if (!alpn_set)
				strlist_free(&p->p_rc.alpn);
			alpn_set = 1;
			strlist_add_csv(&p->p_rc.alpn, optarg);
			break;
		case O_MYSQL:	p->p_mysql = 1; break;
		case O_CONNECT_TO:
			rv = set_ms("connect-timeout", optarg,
			    &p->p_rc.connect_timeout_ms);
			break;
		case O_HANDSHAKE_TO:
			rv = set_ms("handshake-timeout", optarg,
			    &p->p_rc.handshake_timeout_ms);
			break;
		case O_WAIT:
			rv = set_ms("wait", optarg, &p->p_wait_ms);
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case ':':
			return (usage_error("%s needs a value",
			    argv[optind - 1]));
		default:
			return (usage_error("unknown option %s; see dmtls probe "
			    "--help", argv[optind - 1]));
		}
		if (rv != 0)
			return (rv);
	}
	if (optind >= argc)
		return (usage_error("give the address to probe: dmtls probe "
		    "HOST:PORT [OPTIONS]"));
	if (optind + 1 < argc)
		return (usage_error("unexpected argument %s", argv[optind + 1]));
	p->p_addr = argv[optind];
	if ((sec->ssl_cert == NULL) != (sec->ssl_key == NULL))
		return (usage_error("--ssl-cert and --ssl-key go together"));
	if (p->p_mysql && alpn_set)
		return (usage_error("--alpn is not used with --mysql (mysql "
		    "routes offer no ALPN)"));
	if (p->p_mysql) {
		p->p_rc.kind = ROUTE_MYSQL;
		strlist_free(&p->p_rc.alpn);
	}
	return (0);
}

/* The TLS context: a client route's (certset) or, without --ssl-ca, the
 * same protocol settings with nothing trusted.  NULL after a message. */
static WOLFSSL_CTX *
build_ctx(struct probe *p, struct certsrc **src, struct certset **cs)
{
	struct certsrc_params prm;
	const struct security_conf *sec = &p->p_rc.sec;
	WOLFSSL_CTX *ctx;
	char err[1024];

	if (sec->ssl_ca != NULL) {
		route_certsrc_params(&p->p_rc, &prm);
		prm.reread = 0;
		prm.verify_cb = probe_verify_cb;
		if ((*src = certsrc_new(&prm, err, sizeof(err))) == NULL) {
			usage_error("--%s", err);
			return (NULL);
		}
		*cs = certsrc_current(*src);
		return (certset_ctx(*cs));
	}
	if ((ctx = wolfSSL_CTX_new(wolfSSLv23_client_method())) == NULL ||
	    certset_ctx_tune(ctx, 0, err, sizeof(err)) == -1) {
		usage_error("cannot set up TLS%s%s", ctx ? ": " : "",
		    ctx ? err : "");
		goto fail;
	}
	if (sec->ssl_cert != NULL && (wolfSSL_CTX_use_certificate_chain_file(
	    ctx, sec->ssl_cert) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_file(ctx, sec->ssl_key,
	    WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS)) {
		usage_error("--ssl-cert %s / --ssl-key %s: not a readable PEM "
		    "certificate and its matching key", sec->ssl_cert,
		    sec->ssl_key);
		goto fail;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, probe_verify_cb);
	return (ctx);
fail:
	if (ctx != NULL)
		wolfSSL_CTX_free(ctx);
	return (NULL);
}

/* Connect, upgrade, handshake, and print everything; the exit status. */
static int
probe_run(struct probe *p, WOLFSSL_CTX *ctx)
{
	WOLFSSL *ssl = NULL;
	const char *step;
	char err[512], *proto = NULL;
	unsigned short plen = 0;
	time_t na[CHAIN_MAX];
	int r, i, done = 0, client_alert = -1;

	memset(na, 0, sizeof(na));
	say("dmtls probe %s: %s, as a %s route would", E(p->p_addr), p->p_mysql ?
	    "MySQL greeting, SSLRequest, then TLS" : "TLS from the first "
	    "byte", p->p_mysql ? "mysql" : "client");
	if ((ssl = session_new(p, ctx, &step)) == NULL) {
		say("tls: FAIL wolfSSL cannot %s", step);
		failed(p, "tls");
		goto verdict;
	}
	if (probe_connect(p, err, sizeof(err)) == -1) {
		say("connect: FAIL %s: %s", E(p->p_addr), err);
		failed(p, "connect");
		goto verdict;
	}
	say("connect: ok");
	if (p->p_mysql && probe_mysql(p) == -1) {
		failed(p, "mysql");
		goto verdict;
	}
	if (wolfSSL_set_fd(ssl, p->p_fd) != WOLFSSL_SUCCESS) {
		say("handshake: FAIL wolfSSL cannot use the socket");
		failed(p, "handshake");
		goto verdict;
	}
	wolfSSL_SetIOReadCtx(ssl, p);	/* set_fd pointed it at the fd */
	p->p_deadline = now_ms() + p->p_rc.handshake_timeout_ms;
	r = wolfSSL_connect(ssl);
	if (r != WOLFSSL_SUCCESS)
		handshake_failed(p, ssl, r, &client_alert);
	else {
		done = 1;
		say("handshake: ok");
	}
	if (wolfSSL_get_version(ssl) != NULL && p->p_leaf_seen) {
		if (wolfSSL_ALPN_GetProtocol(ssl, &proto, &plen) !=
		    WOLFSSL_SUCCESS || proto == NULL)
			plen = 0;
		printf("tls: %s cipher=%s alpn=", wolfSSL_get_version(ssl),
		    wolfSSL_get_cipher_name(ssl) ? wolfSSL_get_cipher_name(ssl) :
		    "?");
		if (plen > 0) {
			char a[256];
			snprintf(a, sizeof(a), "%.*s", (int)plen, proto);
			printf("%s\n", E(a));
		} else
			printf("none\n");
	}
	if (p->p_nchain > 0) {
		say("chain: %d certificate%s sent by the server", p->p_sent,
		    p->p_sent == 1 ? "" : "s");
		for (i = 0; i < p->p_nchain; i++)
			print_cert(i, p->p_chain[i], p->p_chain_len[i], &na[i]);
	}
	if (p->p_id_ok) {
		char cn[256], sans[1024];

		peer_id_cn(&p->p_id, cn, sizeof(cn));
		peer_id_sans(&p->p_id, sans, sizeof(sans));
		say("leaf: cn=%s sans=%s", cn[0] ? E(cn) : "(none)",
		    sans[0] ? E(sans) : "(none)");
	}
	judge_chain(p, na);
	judge_name(p);
	judge_policy(p);
	if (client_alert >= 0) {
		say("client-cert: FAIL the server refused %s: alert %d %s",
		    p->p_rc.sec.ssl_cert ? "our certificate" : "to go on "
		    "without a client certificate", client_alert,
		    alert_name(client_alert));
		failed(p, "client-cert");
	} else if (done && server_verdict(p, ssl) == -1)
		failed(p, "client-cert");
verdict:
	if (ssl != NULL) {
		if (done) {
			p->p_deadline = now_ms() + 1000;
			(void)wolfSSL_shutdown(ssl);	/* close_notify */
		}
		wolfSSL_free(ssl);
	}
	if (p->p_failed[0] == '\0') {
		say("result: PASS");
		return (0);
	}
	say("result: FAIL (%s)", p->p_failed);
	return (EXIT_RUNTIME);
}

int
probe_main(int argc, char **argv)
{
	struct probe *p;
	struct certsrc *src = NULL;
	struct certset *cs = NULL;
	WOLFSSL_CTX *ctx = NULL;
	char err[512];
	int rv, i;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return (EXIT_RUNTIME);
	p->p_fd = -1;
	p->p_wait_ms = DEF_WAIT_MS;
	route_conf_init(&p->p_rc, ROUTE_CLIENT);
	p->p_rc.name = strdup("probe");
	strlist_add(&p->p_rc.alpn, "h2");
	strlist_add(&p->p_rc.alpn, "http/1.1");
	if ((rv = parse(argc, argv, p)) != 0)
		goto out;
	if (addr_parse(p->p_addr, &p->p_a, err, sizeof(err)) == -1 ||
	    p->p_a.a_systemd) {
		rv = usage_error("%s: %s", p->p_addr, p->p_a.a_systemd ?
		    "systemd: names a listener, not a server" : err);
		goto out;
	}
	/* SNI as a route sends it: server-name, else a target host name. */
	snprintf(p->p_sni, sizeof(p->p_sni), "%s", p->p_rc.sec.server_name ?
	    p->p_rc.sec.server_name : p->p_a.a_is_ip || p->p_a.a_unix ? "" :
	    p->p_a.a_host);
	if ((ctx = build_ctx(p, &src, &cs)) == NULL) {
		rv = EXIT_USAGE;
		goto out;
	}
	rv = probe_run(p, ctx);
out:
	fflush(stdout);
	if (p->p_fd != -1)
		close(p->p_fd);
	if (cs != NULL)
		certset_release(cs);
	else if (ctx != NULL)
		wolfSSL_CTX_free(ctx);
	if (src != NULL)
		certsrc_free(src);
	for (i = 0; i < p->p_nchain; i++)
		free(p->p_chain[i]);
	route_conf_free(&p->p_rc);
	free(p);
	return (rv);
}
