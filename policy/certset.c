/*
 * certset.c: certificate sets reread for every new connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "certset.h"
#include "crl.h"
#include "policy.h"

/* The files of a set: three, then the ssl-crl files (unset ones NULL). */
enum { F_CA = 0, F_CERT, F_KEY, F_CRL, F_MAX = F_CRL + CRL_FILES_MAX };
static const char *flag_names[F_CRL + 1] = { "ssl-ca", "ssl-cert", "ssl-key",
    "ssl-crl" };
#define FLAG(i)	flag_names[(i) < F_CRL ? (i) : F_CRL]

/* Bytes read from one file. */
struct filebuf {
	uint8_t	*fb_buf;
	size_t	 fb_len;
	size_t	 fb_cap;
};

struct certset {
	atomic_int	 cs_refs;
	WOLFSSL_CTX	*cs_ctx;
	struct filebuf	 cs_files[F_MAX];	/* bytes the set was built from */
	char		 cs_subject[300];
	time_t		 cs_not_after;
	char		 cs_digest[65];
	char		 cs_sans[256];
	int		 cs_chains;	/* ssl-cert chains to ssl-ca */
	struct crl_info	 cs_crl[CRL_MAX];	/* the ssl-crl files' CRLs */
	int		 cs_ncrl;
};

struct certsrc {
	struct certsrc_params	 src_p;
	const char		*src_path[F_MAX];	/* NULL when not set */
	pthread_mutex_t		 src_lock;
	struct certset		*src_cur;		/* under src_lock */
	/* Reads of the files are numbered when they start; src_cur_read is
	 * the number of the read src_cur was built from, so a read that
	 * started before it never puts an older set back.  Under src_lock. */
	uint64_t		 src_reads;
	uint64_t		 src_cur_read;
	uint8_t			 src_bad[WC_SHA256_DIGEST_SIZE];
	int			 src_bad_valid;
	uint64_t		 src_ok;
	uint64_t		 src_err;
	/*
	 * The files' stat when their bytes were last found to be the set in
	 * use.  A new connection whose stat of all three matches skips
	 * reading them.  Recorded only for files whose last change is over a
	 * second old ("racy" files are read every time), so a change made in
	 * the same clock tick as the recorded one cannot hide.
	 */
	struct stat		 src_st[F_MAX];
	int			 src_st_valid;
	time_t			 src_last_time;	/* last build attempt */
	int			 src_last_ok;
	char			 src_last_err[1024];
};

/* Per-thread read buffers: no allocation on the per-connection path. */
static __thread struct filebuf tls_read[F_MAX];

static int
fb_reserve(struct filebuf *fb, size_t cap)
{
	uint8_t *b;

	if (fb->fb_cap >= cap)
		return (0);
	if ((b = realloc(fb->fb_buf, cap)) == NULL)
		return (-1);
	fb->fb_buf = b;
	fb->fb_cap = cap;
	return (0);
}

static void
fb_free(struct filebuf *fb)
{
	free(fb->fb_buf);
	memset(fb, 0, sizeof(*fb));
}

/* Read a whole file of at most CERTFILE_MAX bytes into fb. */
static int
read_file(const char *path, struct filebuf *fb, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot be read: %s", strerror(errno));
		/* Out of descriptors says nothing about the file. */
		return (errno == EMFILE || errno == ENFILE || errno == ENOMEM ?
		    -2 : -1);
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "is not a regular file");
		goto fail;
	}
	if (st.st_size > CERTFILE_MAX) {
		snprintf(err, errlen, "is larger than %d bytes", CERTFILE_MAX);
		goto fail;
	}
	/* One byte of slack shows a file that grew since fstat. */
	if (fb_reserve(fb, (size_t)st.st_size + 4096) == -1) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	fb->fb_len = 0;
	for (;;) {
		n = read(fd, fb->fb_buf + fb->fb_len, fb->fb_cap - fb->fb_len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "read error: %s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		fb->fb_len += (size_t)n;
		if (fb->fb_len == fb->fb_cap) {
			if (fb->fb_cap > CERTFILE_MAX ||
			    fb_reserve(fb, fb->fb_cap * 2) == -1) {
				snprintf(err, errlen, "is larger than %d bytes",
				    CERTFILE_MAX);
				goto fail;
			}
		}
	}
	close(fd);
	return (0);
fail:
	close(fd);
	return (-1);
}

/* Find the next "-----BEGIN ...-----" ... "-----END ...-----" block. */
static const uint8_t *
pem_next(const uint8_t *p, const uint8_t *end, size_t *blen, int *complete)
{
	const uint8_t *b, *e;

	b = memmem(p, (size_t)(end - p), "-----BEGIN ", 11);
	if (b == NULL)
		return (NULL);
	e = memmem(b + 11, (size_t)(end - b - 11), "-----END ", 9);
	*complete = 0;
	if (e != NULL) {
		const uint8_t *again = memmem(b + 11, (size_t)(e - b - 11),
		    "-----BEGIN ", 11);
		const uint8_t *close_ = memmem(e + 9, (size_t)(end - e - 9),
		    "-----", 5);
		if (again == NULL && close_ != NULL) {
			*complete = 1;
			*blen = (size_t)(close_ + 5 - b);
			return (b);
		}
	}
	*blen = (size_t)(end - b);
	return (b);
}

/*
 * Check that every PEM block of a file is whole (a half-written file is cut
 * short) and, for certificate files, that each block parses.  Returns the
 * number of blocks, or -1 with err set.
 */
static int
pem_check(const struct filebuf *fb, int certs, char *err, size_t errlen)
{
	const uint8_t *p = fb->fb_buf, *end = fb->fb_buf + fb->fb_len, *b;
	static __thread uint8_t der[64 * 1024];
	size_t blen;
	int n = 0, complete;

	if (fb->fb_len == 0) {
		snprintf(err, errlen, "is empty");
		return (-1);
	}
	while ((b = pem_next(p, end, &blen, &complete)) != NULL) {
		n++;
		if (!complete) {
			snprintf(err, errlen, "PEM block %d is cut short "
			    "(truncated or half-written file)", n);
			return (-1);
		}
		if (certs && wolfSSL_CertPemToDer(b, (int)blen, der,
		    sizeof(der), CERT_TYPE) <= 0) {
			snprintf(err, errlen, "PEM block %d is not a valid "
			    "certificate", n);
			return (-1);
		}
		p = b + blen;
	}
	if (n == 0) {
		snprintf(err, errlen, "holds no PEM %s", certs ? "certificate" :
		    "private key");
		return (-1);
	}
	return (n);
}

/* Turn an ASN.1 UTCTime/GeneralizedTime into a time_t (UTC). */
static time_t
asn_time(const uint8_t *d, int len)
{
	struct tm tm;
	int i, yl;
	char s[20];

	if (d == NULL || len < 13)
		return (0);
	/* DecodedCert may or may not include the tag and length. */
	if ((d[0] == 0x17 || d[0] == 0x18) && d[1] == len - 2) {
		d += 2;
		len -= 2;
	}
	yl = len >= 15 ? 4 : 2;
	if (len > (int)sizeof(s) - 1)
		return (0);
	for (i = 0; i < 10 + yl; i++)
		if (d[i] < '0' || d[i] > '9')
			return (0);
	memcpy(s, d, (size_t)len);
	s[len] = '\0';
	memset(&tm, 0, sizeof(tm));
#define D2(o) ((s[(o)] - '0') * 10 + (s[(o) + 1] - '0'))
	if (yl == 4)
		tm.tm_year = D2(0) * 100 + D2(2) - 1900;
	else
		tm.tm_year = D2(0) < 50 ? D2(0) + 100 : D2(0);
	tm.tm_mon = D2(yl) - 1;
	tm.tm_mday = D2(yl + 2);
	tm.tm_hour = D2(yl + 4);
	tm.tm_min = D2(yl + 6);
	tm.tm_sec = D2(yl + 8);
#undef D2
	return (timegm(&tm));
}

/* Fill the set's subject and not-after from the leaf of ssl-cert. */
static void
describe_leaf(struct certset *cs)
{
	static __thread uint8_t der[64 * 1024];
	const struct filebuf *fb = &cs->cs_files[F_CERT];
	DecodedCert dc;
	int len;

	if (fb->fb_len == 0)
		return;
	len = wolfSSL_CertPemToDer(fb->fb_buf, (int)fb->fb_len, der,
	    sizeof(der), CERT_TYPE);
	if (len <= 0)
		return;
	InitDecodedCert(&dc, der, (word32)len, NULL);
	if (ParseCert(&dc, CERT_TYPE, NO_VERIFY, NULL) == 0) {
		snprintf(cs->cs_subject, sizeof(cs->cs_subject), "CN=%.*s",
		    dc.subjectCNLen > 0 ? dc.subjectCNLen : 0,
		    dc.subjectCN ? dc.subjectCN : "");
		cs->cs_not_after = asn_time(dc.afterDate, dc.afterDateLen);
	}
	FreeDecodedCert(&dc);
	{
		struct peer_id id;
		if (peer_id_from_der(der, (size_t)len, &id) == 0)
			peer_id_sans(&id, cs->cs_sans, sizeof(cs->cs_sans));
	}
}

/*
 * 1 when ssl-cert's leaf chains to ssl-ca (with the intermediates that
 * follow it in ssl-cert).  Not chaining is no error, since the peers may
 * trust another CA, but worth a warning.
 */
static int
chains_to_ca(const struct filebuf *files)
{
	static __thread uint8_t der[64 * 1024];
	const struct filebuf *cert = &files[F_CERT];
	const uint8_t *p, *end, *b;
	WOLFSSL_CERT_MANAGER *cm;
	size_t blen;
	int complete, first = 1, ok = 0, len = 0;

	if ((cm = wolfSSL_CertManagerNew()) == NULL)
		return (0);
	if (wolfSSL_CertManagerLoadCABuffer(cm, files[F_CA].fb_buf,
	    (long)files[F_CA].fb_len, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
		goto out;
	p = cert->fb_buf;
	end = cert->fb_buf + cert->fb_len;
	while ((b = pem_next(p, end, &blen, &complete)) != NULL && complete) {
		if (first) {
			len = wolfSSL_CertPemToDer(b, (int)blen, der,
			    sizeof(der), CERT_TYPE);
			first = 0;
		} else
			(void)wolfSSL_CertManagerLoadCABuffer(cm, b, (long)blen,
			    WOLFSSL_FILETYPE_PEM);
		p = b + blen;
	}
	ok = len > 0 && wolfSSL_CertManagerVerifyBuffer(cm, der, len,
	    WOLFSSL_FILETYPE_ASN1) == WOLFSSL_SUCCESS;
out:
	wolfSSL_CertManagerFree(cm);
	return (ok);
}

static void
digest_files(const struct filebuf *files, uint8_t out[WC_SHA256_DIGEST_SIZE])
{
	wc_Sha256 sha;
	int i;
	uint8_t sep = 0;

	wc_InitSha256(&sha);
	for (i = 0; i < F_MAX; i++) {
		if (i >= F_CRL && files[i].fb_len == 0)
			continue;	/* no such ssl-crl file */
		if (files[i].fb_len > 0)
			wc_Sha256Update(&sha, files[i].fb_buf,
			    (word32)files[i].fb_len);
		wc_Sha256Update(&sha, &sep, 1);
	}
	wc_Sha256Final(&sha, out);
	wc_Sha256Free(&sha);
}

static void
certset_free(struct certset *cs)
{
	int i;

	if (cs == NULL)
		return;
	if (cs->cs_ctx != NULL)
		wolfSSL_CTX_free(cs->cs_ctx);
	for (i = 0; i < F_MAX; i++)
		fb_free(&cs->cs_files[i]);
	free(cs);
}

#define AEAD_CIPHERS \
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:" \
	"TLS13-CHACHA20-POLY1305-SHA256:" \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/*
 * Key exchange groups, in preference order.  A server picks among the key
 * shares the client sent, by this order, and asks for another share
 * (HelloRetryRequest) only when none of them is usable: a client without
 * ML-KEM (OpenSSL 3.0, Go 1.19) gets its own X25519 or P-256 share at once,
 * one that sends the hybrid X25519MLKEM768 (another dmtls, Go 1.24+,
 * OpenSSL 3.5+) gets the hybrid.  A client lists P-256 first and sends two
 * shares, P-256 (the one wolfSSL 5.5.4 sent) then X25519MLKEM768 (see
 * certset_key_shares): a server without ML-KEM takes P-256 at once, one
 * with it the hybrid, which keeps recorded traffic safe from a later
 * quantum computer.  --disable-hybrid-kex leaves the hybrids out.
 */
static int
set_groups(WOLFSSL_CTX *ctx, int server)
{
	int g[8], n = 0;

	if (server) {
#ifdef DMTLS_KEX_HYBRID
		g[n++] = WOLFSSL_X25519MLKEM768;
		g[n++] = WOLFSSL_SECP256R1MLKEM768;
#endif
#ifdef HAVE_CURVE25519
		g[n++] = WOLFSSL_ECC_X25519;
#endif
		g[n++] = WOLFSSL_ECC_SECP256R1;
	} else {
		g[n++] = WOLFSSL_ECC_SECP256R1;
#ifdef DMTLS_KEX_HYBRID
		g[n++] = WOLFSSL_X25519MLKEM768;
#endif
#ifdef HAVE_CURVE25519
		g[n++] = WOLFSSL_ECC_X25519;
#endif
	}
#if defined(HAVE_ECC384) || defined(HAVE_ALL_CURVES)
	g[n++] = WOLFSSL_ECC_SECP384R1;
#endif
#if defined(HAVE_ECC521) || defined(HAVE_ALL_CURVES)
	g[n++] = WOLFSSL_ECC_SECP521R1;
#endif
	return (wolfSSL_CTX_set_groups(ctx, g, n) == WOLFSSL_SUCCESS ? 0 : -1);
}

int
certset_key_shares(WOLFSSL *ssl)
{
	if (wolfSSL_UseKeyShare(ssl, WOLFSSL_ECC_SECP256R1) != WOLFSSL_SUCCESS)
		return (-1);
#ifdef DMTLS_KEX_HYBRID
	if (wolfSSL_UseKeyShare(ssl, WOLFSSL_X25519MLKEM768) != WOLFSSL_SUCCESS)
		return (-1);
#endif
	return (0);
}

static void say(const struct certsrc *, int, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));

/* Tell the source's user one sentence, when it listens. */
static void
say(const struct certsrc *src, int warn, const char *event, const char *fmt,
    ...)
{
	struct certset_note n;
	char msg[2048];
	va_list ap;

	if (src->src_p.log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memset(&n, 0, sizeof(n));
	n.cn_warn = warn;
	n.cn_event = event;
	n.cn_msg = msg;
	src->src_p.log(src->src_p.log_arg, &n);
}

int
certset_ctx_tune(WOLFSSL_CTX *ctx, int server, char *err, size_t errlen)
{
	wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
	/* One send() per handshake flight, not one per message. */
	wolfSSL_CTX_set_group_messages(ctx);
	if (wolfSSL_CTX_set_cipher_list(ctx, AEAD_CIPHERS) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot set the AEAD cipher list");
		return (-1);
	}
	if (set_groups(ctx, server) == -1) {
		snprintf(err, errlen, "cannot set the key exchange groups");
		return (-1);
	}
	return (0);
}

/*
 * The TLS context of a set from the checked bytes in files: TLS 1.2 at
 * least, AEAD ciphers, the key exchange groups, ssl-ca to verify peers,
 * ssl-cert and ssl-key to show them, the verify mode and callback.  NULL
 * with the flag index in *bad and the reason in err.
 */
static WOLFSSL_CTX *
ctx_build(const struct certsrc *src, const struct filebuf *files, int *bad,
    char *err, size_t errlen)
{
	const struct certsrc_params *p = &src->src_p;
	WOLFSSL_CTX *ctx;
	int mode;

	*bad = F_CA;
	ctx = wolfSSL_CTX_new(p->tls_server ? wolfSSLv23_server_method() :
	    wolfSSLv23_client_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return (NULL);
	}
	if (certset_ctx_tune(ctx, p->tls_server, err, errlen) == -1)
		goto fail;
	if (wolfSSL_CTX_load_verify_buffer(ctx, files[F_CA].fb_buf,
	    (long)files[F_CA].fb_len, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "holds no usable CA certificate");
		goto fail;
	}
	if (src->src_path[F_CERT] != NULL) {
		*bad = F_CERT;
		if (wolfSSL_CTX_use_certificate_chain_buffer(ctx,
		    files[F_CERT].fb_buf, (long)files[F_CERT].fb_len) !=
		    WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "is not a usable certificate "
			    "chain");
			goto fail;
		}
		*bad = F_KEY;
		if (wolfSSL_CTX_use_PrivateKey_buffer(ctx, files[F_KEY].fb_buf,
		    (long)files[F_KEY].fb_len, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "holds no usable private key");
			goto fail;
		}
		if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
			snprintf(err, errlen, "does not match ssl-cert %s",
			    src->src_path[F_CERT]);
			goto fail;
		}
	}
	mode = WOLFSSL_VERIFY_PEER;
	if (p->tls_server) {
		mode = p->verify_client ? WOLFSSL_VERIFY_PEER |
		    WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT : WOLFSSL_VERIFY_NONE;
		/* No session tickets or cache: every connection proves its
		 * certificate again, so a rotated CA or policy applies. */
		wolfSSL_CTX_NoTicketTLSv12(ctx);
		wolfSSL_CTX_no_ticket_TLSv13(ctx);
		wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
	}
	wolfSSL_CTX_set_verify(ctx, mode, p->verify_cb);
	return (ctx);
fail:
	wolfSSL_CTX_free(ctx);
	return (NULL);
}

/*
 * Build a set from the bytes in files: check every PEM block, build the
 * context, keep a copy of the bytes (to tell a later read that nothing
 * changed) and what describes them.  Returns the set (one reference), or
 * NULL with the flag index in *bad and the reason in err.
 */
static struct certset *
certset_build(const struct certsrc *src, struct filebuf *files, int *bad,
    char *err, size_t errlen)
{
	struct certset *cs;
	uint8_t d[WC_SHA256_DIGEST_SIZE];
	int i;

	*bad = F_CA;
	if ((cs = calloc(1, sizeof(*cs))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	atomic_init(&cs->cs_refs, 1);
	if (pem_check(&files[F_CA], 1, err, errlen) == -1)
		goto fail;
	if (src->src_path[F_CERT] != NULL) {
		*bad = F_CERT;
		if (pem_check(&files[F_CERT], 1, err, errlen) == -1)
			goto fail;
		*bad = F_KEY;
		if (pem_check(&files[F_KEY], 0, err, errlen) == -1)
			goto fail;
	}
	if ((cs->cs_ctx = ctx_build(src, files, bad, err, errlen)) == NULL)
		goto fail;
	for (i = F_CRL; i < F_MAX && src->src_path[i] != NULL; i++) {
		*bad = i;
		if (crl_load(cs->cs_ctx, files[F_CA].fb_buf, files[F_CA].fb_len,
		    files[i].fb_buf, files[i].fb_len, i - F_CRL, time(NULL),
		    cs->cs_crl, &cs->cs_ncrl, CRL_MAX, err, errlen) == -1)
			goto fail;
	}
	for (i = 0; i < cs->cs_ncrl; i++)
		if (cs->cs_crl[i].ci_expired)
			say(src, 1, "crl_expired", "route %s: ssl-crl %s: the "
			    "CRL of %s is past its nextUpdate; the peers of "
			    "that CA are refused until it is renewed",
			    src->src_p.name,
			    src->src_path[F_CRL + cs->cs_crl[i].ci_file],
			    cs->cs_crl[i].ci_issuer);
	for (i = 0; i < F_MAX; i++) {
		if (files[i].fb_len == 0)
			continue;
		if (fb_reserve(&cs->cs_files[i], files[i].fb_len) == -1) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		memcpy(cs->cs_files[i].fb_buf, files[i].fb_buf,
		    files[i].fb_len);
		cs->cs_files[i].fb_len = files[i].fb_len;
	}
	digest_files(files, d);
	for (i = 0; i < WC_SHA256_DIGEST_SIZE; i++)
		snprintf(cs->cs_digest + 2 * i, 3, "%02x", d[i]);
	describe_leaf(cs);
	cs->cs_chains = src->src_path[F_CERT] == NULL || chains_to_ca(files);
	if (!cs->cs_chains)
		say(src, 1, "cert_not_from_ca", "route %s: ssl-cert %s does "
		    "not chain to ssl-ca %s; peers must trust its issuer "
		    "some other way", src->src_p.name, src->src_path[F_CERT],
		    src->src_path[F_CA]);
	return (cs);
fail:
	certset_free(cs);
	return (NULL);
}

/*
 * Read the route's files into the thread's buffers; -1 names the file in
 * *bad, -2 when the process is out of descriptors or memory.
 */
static int
read_all(const struct certsrc *src, struct filebuf *files, int *bad,
    char *err, size_t errlen)
{
	int i, r;

	for (i = 0; i < F_MAX; i++) {
		files[i].fb_len = 0;
		if (src->src_path[i] == NULL)
			continue;
		if ((r = read_file(src->src_path[i], &files[i], err, errlen)) <
		    0) {
			*bad = i;
			return (r);
		}
	}
	return (0);
}

/* Stat the route's files; -1 when one cannot be stat'ed. */
static int
stat_all(const struct certsrc *src, struct stat *st)
{
	int i;

	for (i = 0; i < F_MAX; i++) {
		memset(&st[i], 0, sizeof(st[i]));
		if (src->src_path[i] != NULL && stat(src->src_path[i], &st[i]) ==
		    -1)
			return (-1);
	}
	return (0);
}

static int
same_stat(const struct stat *a, const struct stat *b)
{
	int i;

	for (i = 0; i < F_MAX; i++)
		if (a[i].st_dev != b[i].st_dev || a[i].st_ino != b[i].st_ino ||
		    a[i].st_size != b[i].st_size ||
		    a[i].st_mtim.tv_sec != b[i].st_mtim.tv_sec ||
		    a[i].st_mtim.tv_nsec != b[i].st_mtim.tv_nsec ||
		    a[i].st_ctim.tv_sec != b[i].st_ctim.tv_sec ||
		    a[i].st_ctim.tv_nsec != b[i].st_ctim.tv_nsec)
			return (0);
	return (1);
}

/* 1 when no file changed within the last second before now. */
static int
settled(const struct stat *st)
{
	struct timespec now;
	int i;

	clock_gettime(CLOCK_REALTIME, &now);
	for (i = 0; i < F_MAX; i++)
		if (st[i].st_ctim.tv_sec >= now.tv_sec - 1 ||
		    st[i].st_mtim.tv_sec >= now.tv_sec - 1)
			return (0);
	return (1);
}

static int
same_bytes(const struct certset *cs, const struct filebuf *files)
{
	int i;

	for (i = 0; i < F_MAX; i++)
		if (cs->cs_files[i].fb_len != files[i].fb_len ||
		    (files[i].fb_len > 0 && memcmp(cs->cs_files[i].fb_buf,
		    files[i].fb_buf, files[i].fb_len) != 0))
			return (0);
	return (1);
}

void
certset_thread_done(void)
{
	int i;

	for (i = 0; i < F_MAX; i++)
		fb_free(&tls_read[i]);
}

struct certsrc *
certsrc_new(const struct certsrc_params *p, char *err, size_t errlen)
{
	struct certsrc *src;
	char why[512];
	int bad = F_CA;

	if ((src = calloc(1, sizeof(*src))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	src->src_p = *p;
	src->src_path[F_CA] = p->ssl_ca;
	src->src_path[F_CERT] = p->ssl_cert;
	src->src_path[F_KEY] = p->ssl_key;
	if (p->n_crl > CRL_FILES_MAX) {
		snprintf(err, errlen, "ssl-crl %s: at most %d CRL files per "
		    "route; put several CRLs in one PEM file", p->ssl_crl[0],
		    CRL_FILES_MAX);
		free(src);
		return (NULL);
	}
	for (size_t i = 0; i < p->n_crl; i++)
		src->src_path[F_CRL + i] = p->ssl_crl[i];
	pthread_mutex_init(&src->src_lock, NULL);
	if (read_all(src, tls_read, &bad, why, sizeof(why)) != 0 ||
	    (src->src_cur = certset_build(src, tls_read, &bad, why,
	    sizeof(why))) == NULL) {
		snprintf(err, errlen, "%s %s %s", FLAG(bad),
		    src->src_path[bad], why);
		certsrc_free(src);
		return (NULL);
	}
	src->src_ok = 1;
	src->src_last_ok = 1;
	src->src_last_time = time(NULL);
	return (src);
}

/*
 * Count a broken state, and log it once: the same bytes (digest d) are not
 * logged again.
 */
static void
note_bad(struct certsrc *src, const uint8_t d[WC_SHA256_DIGEST_SIZE], int bad,
    const char *why)
{
	struct certset_note n;

	src->src_err++;
	src->src_last_ok = 0;
	src->src_last_time = time(NULL);
	snprintf(src->src_last_err, sizeof(src->src_last_err), "%s %s %s",
	    FLAG(bad), src->src_path[bad], why);
	if (src->src_bad_valid && memcmp(d, src->src_bad,
	    WC_SHA256_DIGEST_SIZE) == 0)
		return;
	memcpy(src->src_bad, d, WC_SHA256_DIGEST_SIZE);
	src->src_bad_valid = 1;
	if (src->src_p.log == NULL)
		return;
	memset(&n, 0, sizeof(n));
	n.cn_warn = 1;
	n.cn_event = "cert_reload_failed";
	n.cn_route = src->src_p.name;
	n.cn_file = src->src_path[bad];
	n.cn_key = FLAG(bad);
	n.cn_reason = why;
	n.cn_action = "keeping the last good certificate set";
	src->src_p.log(src->src_p.log_arg, &n);
}

struct certset *
certsrc_acquire(struct certsrc *src)
{
	struct certset *cs, *fresh = NULL;
	struct filebuf *files = tls_read;
	struct stat st[F_MAX];
	uint8_t d[WC_SHA256_DIGEST_SIZE];
	char why[512];
	uint64_t myread;
	int bad = F_CA, rdok, statok;

	if (!src->src_p.reread)
		return (certsrc_current(src));
	/* Fast path: the files have not changed since their bytes were
	 * last read and found to be the set in use. */
	statok = stat_all(src, st) == 0;
	pthread_mutex_lock(&src->src_lock);
	if (statok && src->src_st_valid && same_stat(st, src->src_st)) {
		cs = src->src_cur;
		atomic_fetch_add(&cs->cs_refs, 1);
		pthread_mutex_unlock(&src->src_lock);
		return (cs);
	}
	myread = ++src->src_reads;
	pthread_mutex_unlock(&src->src_lock);

	if ((rdok = read_all(src, files, &bad, why, sizeof(why))) == -2)
		/* No descriptor to read with: the set in use it is. */
		return (certsrc_current(src));
	rdok = rdok == 0;
	pthread_mutex_lock(&src->src_lock);
	if (myread < src->src_cur_read) {
		/* Another connection read the files after this one did and
		 * put what it found in use: these bytes are older. */
		cs = src->src_cur;
		atomic_fetch_add(&cs->cs_refs, 1);
		pthread_mutex_unlock(&src->src_lock);
		return (cs);
	}
	if (rdok && same_bytes(src->src_cur, files)) {
		if (!src->src_last_ok) {
			/* Back to the set in use after a broken state. */
			src->src_last_ok = 1;
			src->src_last_time = time(NULL);
			src->src_last_err[0] = '\0';
			src->src_bad_valid = 0;
		}
		/* The stat taken before reading describes these bytes or
		 * older ones: a later change shows as a different stat. */
		if (statok && settled(st)) {
			memcpy(src->src_st, st, sizeof(src->src_st));
			src->src_st_valid = 1;
		}
		cs = src->src_cur;
		atomic_fetch_add(&cs->cs_refs, 1);
		pthread_mutex_unlock(&src->src_lock);
		return (cs);
	}
	src->src_st_valid = 0;
	digest_files(files, d);
	if (rdok && src->src_bad_valid && memcmp(d, src->src_bad,
	    sizeof(d)) == 0) {
		/* The bytes already found broken: no rebuild, just count. */
		src->src_err++;
		src->src_last_time = time(NULL);
		cs = src->src_cur;
		atomic_fetch_add(&cs->cs_refs, 1);
		pthread_mutex_unlock(&src->src_lock);
		return (cs);
	}
	/* Changed or unreadable: build under the lock, so one worker builds
	 * a given state and the others then find it published. */
	if (rdok)
		fresh = certset_build(src, files, &bad, why, sizeof(why));
	if (fresh != NULL) {
		certset_release(src->src_cur);
		src->src_cur = fresh;
		src->src_cur_read = myread;
		src->src_bad_valid = 0;
		src->src_ok++;
		src->src_last_ok = 1;
		src->src_last_time = time(NULL);
		src->src_last_err[0] = '\0';
		say(src, 0, "cert_reloaded", "route %s: new certificate "
		    "set %.16s (%s) in use for new connections",
		    src->src_p.name, fresh->cs_digest, fresh->cs_subject);
	} else
		note_bad(src, d, bad, why);
	cs = src->src_cur;
	atomic_fetch_add(&cs->cs_refs, 1);
	pthread_mutex_unlock(&src->src_lock);
	return (cs);
}

struct certset *
certsrc_current(struct certsrc *src)
{
	struct certset *cs;

	pthread_mutex_lock(&src->src_lock);
	cs = src->src_cur;
	atomic_fetch_add(&cs->cs_refs, 1);
	pthread_mutex_unlock(&src->src_lock);
	return (cs);
}

void
certsrc_stats(struct certsrc *src, uint64_t *ok, uint64_t *err)
{
	pthread_mutex_lock(&src->src_lock);
	*ok = src->src_ok;
	*err = src->src_err;
	pthread_mutex_unlock(&src->src_lock);
}

void
certsrc_last(struct certsrc *src, time_t *when, int *ok, char *err,
    size_t errlen)
{
	pthread_mutex_lock(&src->src_lock);
	*when = src->src_last_time;
	*ok = src->src_last_ok;
	snprintf(err, errlen, "%s", src->src_last_err);
	pthread_mutex_unlock(&src->src_lock);
}

void
certsrc_free(struct certsrc *src)
{
	if (src == NULL)
		return;
	certset_release(src->src_cur);
	pthread_mutex_destroy(&src->src_lock);
	free(src);
}

void
certset_release(struct certset *cs)
{
	if (cs != NULL && atomic_fetch_sub(&cs->cs_refs, 1) == 1)
		certset_free(cs);
}

WOLFSSL_CTX *
certset_ctx(const struct certset *cs)
{
	return (cs->cs_ctx);
}

const char *
certset_subject(const struct certset *cs)
{
	return (cs->cs_subject);
}

time_t
certset_not_after(const struct certset *cs)
{
	return (cs->cs_not_after);
}

int
certset_chains(const struct certset *cs)
{
	return (cs->cs_chains);
}

const char *
certset_sans(const struct certset *cs)
{
	return (cs->cs_sans);
}

const char *
certset_digest(const struct certset *cs)
{
	return (cs->cs_digest);
}

int
certset_crls(const struct certset *cs, const struct crl_info **v)
{
	*v = cs->cs_crl;
	return (cs->cs_ncrl);
}

const struct crl_info *
certset_crl_expired(const struct certset *cs, time_t now)
{
	int i;

	for (i = 0; i < cs->cs_ncrl; i++)
		if (cs->cs_crl[i].ci_next_update != 0 &&
		    cs->cs_crl[i].ci_next_update <= now)
			return (&cs->cs_crl[i]);
	return (NULL);
}
