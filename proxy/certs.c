/*
 * certs.c: `dmtls certs init DIR` and `dmtls certs issue DIR`: a test PKI
 * for trying dmtls and DM on one machine, made with wolfSSL's certificate
 * generation (no openssl needed).
 *
 *   init   ca.pem ca-key.pem (a self-signed CA) and the leaf dm.pem
 *          dm-key.pem (CN dm or --cn; SANs DNS:localhost, IP:127.0.0.1,
 *          IP:::1 plus --dns/--ip/--uri)
 *   issue  NAME.pem NAME-key.pem signed by DIR's CA (the SANs given, or
 *          init's defaults when none is)
 *
 * Leaves carry EKU serverAuth+clientAuth, so one certificate serves both
 * ends of a route.  Keys are ECDSA P-256 (--rsa: RSA-2048), written as SEC1
 * / PKCS#1 PEM, mode 0600 (--group G: 0640 and group G).  Nothing is ever
 * overwritten: every file is created with O_EXCL, and a run that fails
 * removes what it created.
 */
#include <sys/stat.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/memory.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include "certs.h"
#include "conf.h"
#include "util.h"

#define CA_CN		"dmtls test CA"
#define CA_ORG		"dmtls test PKI"
#define DEF_DAYS	365		/* leaves */
#define CA_MIN_DAYS	3650		/* the CA outlives its leaves */
#define MAX_DAYS	36500
#define MAX_NAMES	64		/* SANs of one kind */
#define DER_MAX		(CTC_MAX_ALT_SIZE + 4096)
#define PEM_MAX		(DER_MAX * 2)
#define FILE_MAX	(1024 * 1024)

/* A key pair being made or loaded. */
struct key {
	int	k_type;		/* ECC_TYPE or RSA_TYPE; 0 when none */
	ecc_key	k_ecc;
	RsaKey	k_rsa;
};

/* What the command line asks for. */
struct req {
	const char	*r_cmd;		/* "init" or "issue" */
	const char	*r_dir;
	const char	*r_name;	/* file stem of the leaf */
	const char	*r_cn;
	struct strlist	 r_dns;
	struct strlist	 r_ip;
	struct strlist	 r_uri;
	long		 r_days;
	int		 r_rsa;
	const char	*r_group;
	gid_t		 r_gid;
};

/* A file to write. */
struct out {
	char	 o_path[PATH_MAX];
	uint8_t	 o_pem[PEM_MAX];
	int	 o_len;
	mode_t	 o_mode;
	int	 o_key;		/* a private key: group and wiping apply */
	int	 o_made;	/* created by this run */
};

static char cmd[32] = "dmtls certs";

/* "dmtls certs init: message" on stderr; returns status. */
#define fail(status, ...)	cmd_error(cmd, (status), __VA_ARGS__)

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: dmtls certs init DIR [--cn CN] [--dns NAME]... "
	    "[--ip ADDR]... [--uri URI]... [--days N] [--rsa] [--group GROUP]\n"
	    "       dmtls certs issue DIR --name NAME --cn CN [--dns NAME]... "
	    "[--ip ADDR]... [--uri URI]... [--days N] [--rsa] "
	    "[--group GROUP]\n"
	    "A test PKI, for testing only: the CA key stays unencrypted in "
	    "DIR.\n");
}

static void *
key_ptr(struct key *k)
{
	return (k->k_type == ECC_TYPE ? (void *)&k->k_ecc : (void *)&k->k_rsa);
}

static const char *
key_desc(const struct key *k)
{
	return (k->k_type == ECC_TYPE ? "ECDSA P-256" : "RSA-2048");
}

static void
key_free(struct key *k)
{
	if (k->k_type == ECC_TYPE)
		wc_ecc_free(&k->k_ecc);
	else if (k->k_type == RSA_TYPE)
		wc_FreeRsaKey(&k->k_rsa);
	k->k_type = 0;
}

/* Make a new key pair: P-256, or RSA-2048.  0 or -1. */
static int
key_make(struct key *k, int rsa, WC_RNG *rng)
{
	if (rsa) {
		if (wc_InitRsaKey(&k->k_rsa, NULL) != 0)
			return (-1);
		k->k_type = RSA_TYPE;
		return (wc_MakeRsaKey(&k->k_rsa, 2048, WC_RSA_EXPONENT, rng) ==
		    0 ? 0 : -1);
	}
	if (wc_ecc_init(&k->k_ecc) != 0)
		return (-1);
	k->k_type = ECC_TYPE;
	return (wc_ecc_make_key_ex(rng, 32, &k->k_ecc, ECC_SECP256R1) == 0 ?
	    0 : -1);
}

/*
 * Load a private key from PEM: SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE
 * KEY" or PKCS#8 "PRIVATE KEY" (unencrypted).  0 or -1.
 */
static int
key_load(struct key *k, const uint8_t *pem, size_t len)
{
	static uint8_t der[16384];
	word32 idx = 0, start = 0;
	int n, rv = -1;

	n = wc_KeyPemToDer(pem, (int)len, der, sizeof(der), NULL);
	if (n <= 0)
		return (-1);
	if (wc_GetPkcs8TraditionalOffset(der, &idx, (word32)n) >= 0)
		start = idx;
	idx = start;
	if (wc_ecc_init(&k->k_ecc) == 0) {
		if (wc_EccPrivateKeyDecode(der, &idx, &k->k_ecc, (word32)n) ==
		    0) {
			k->k_type = ECC_TYPE;
			rv = 0;
			goto out;
		}
		wc_ecc_free(&k->k_ecc);
	}
	idx = start;
	if (wc_InitRsaKey(&k->k_rsa, NULL) == 0) {
		if (wc_RsaPrivateKeyDecode(der, &idx, &k->k_rsa, (word32)n) ==
		    0) {
			k->k_type = RSA_TYPE;
			rv = 0;
			goto out;
		}
		wc_FreeRsaKey(&k->k_rsa);
	}
out:
	wc_ForceZero(der, sizeof(der));
	return (rv);
}

/* The private key as PEM into o.  0 or -1. */
static int
key_pem(struct key *k, struct out *o)
{
	uint8_t der[4096];
	int n;

	n = k->k_type == ECC_TYPE ? wc_EccKeyToDer(&k->k_ecc, der,
	    sizeof(der)) : wc_RsaKeyToDer(&k->k_rsa, der, sizeof(der));
	if (n > 0)
		n = wc_DerToPem(der, (word32)n, o->o_pem, sizeof(o->o_pem),
		    k->k_type == ECC_TYPE ? ECC_PRIVATEKEY_TYPE :
		    PRIVATEKEY_TYPE);
	wc_ForceZero(der, sizeof(der));
	if (n <= 0)
		return (-1);
	o->o_len = n;
	return (0);
}

/* Append a DER length to p at *off (bounded by cap).  0 or -1. */
static int
der_len(uint8_t *p, size_t cap, size_t *off, size_t len)
{
	if (len < 0x80) {
		if (*off + 1 > cap)
			return (-1);
		p[(*off)++] = (uint8_t)len;
	} else if (len < 0x100) {
		if (*off + 2 > cap)
			return (-1);
		p[(*off)++] = 0x81;
		p[(*off)++] = (uint8_t)len;
	} else {
		if (len > 0xffff || *off + 3 > cap)
			return (-1);
		p[(*off)++] = 0x82;
		p[(*off)++] = (uint8_t)(len >> 8);
		p[(*off)++] = (uint8_t)len;
	}
	return (0);
}

/* Append one GeneralName (context tag, bytes) at *off.  0 or -1. */
static int
der_name(uint8_t *p, size_t cap, size_t *off, uint8_t tag, const void *v,
    size_t len)
{
	if (*off + 1 > cap)
		return (-1);
	p[(*off)++] = tag;
	if (der_len(p, cap, off, len) == -1 || *off + len > cap)
		return (-1);
	memcpy(p + *off, v, len);
	*off += len;
	return (0);
}

/*
 * The subjectAltName value (GeneralNames) of rq into the Cert: dNSName [2],
 * uniformResourceIdentifier [6] and iPAddress [7].  The names were checked
 * by validate().  0 or -1 when they do not fit.
 */
static int
set_sans(Cert *c, const struct req *rq)
{
	static uint8_t body[CTC_MAX_ALT_SIZE];
	uint8_t ip[16];
	size_t off = 0, i, hdr = 0;

	for (i = 0; i < rq->r_dns.sl_n; i++)
		if (der_name(body, sizeof(body), &off, 0x82, rq->r_dns.sl_v[i],
		    strlen(rq->r_dns.sl_v[i])) == -1)
			return (-1);
	for (i = 0; i < rq->r_ip.sl_n; i++) {
		int v4 = inet_pton(AF_INET, rq->r_ip.sl_v[i], ip) == 1;

		if (!v4 && inet_pton(AF_INET6, rq->r_ip.sl_v[i], ip) != 1)
			return (-1);
		if (der_name(body, sizeof(body), &off, 0x87, ip, v4 ? 4 : 16) ==
		    -1)
			return (-1);
	}
	for (i = 0; i < rq->r_uri.sl_n; i++)
		if (der_name(body, sizeof(body), &off, 0x86, rq->r_uri.sl_v[i],
		    strlen(rq->r_uri.sl_v[i])) == -1)
			return (-1);
	if (off == 0)
		return (0);
	c->altNames[hdr++] = 0x30;
	if (der_len(c->altNames, sizeof(c->altNames), &hdr, off) == -1 ||
	    hdr + off > sizeof(c->altNames))
		return (-1);
	memcpy(c->altNames + hdr, body, off);
	c->altNamesSz = (int)(hdr + off);
	return (0);
}

/*
 * Make a certificate for subj signed by signer into o (PEM) and der/derlen
 * (DER): a CA when ca_der is NULL (self-signed), else a leaf issued by the
 * CA certificate ca_der.  0, or -1 with err set.
 */
static int
make_cert(const struct req *rq, struct key *subj, struct key *signer,
    const uint8_t *ca_der, int ca_len, WC_RNG *rng, struct out *o,
    uint8_t *der, int *derlen, char *err, size_t errlen)
{
	static Cert c;
	const char *step = "set up";
	int n;

	if (wc_InitCert(&c) != 0)
		goto fail;
	c.sigType = signer->k_type == ECC_TYPE ? CTC_SHA256wECDSA :
	    CTC_SHA256wRSA;
	if (ca_der == NULL) {
		snprintf(c.subject.org, CTC_NAME_SIZE, "%s", CA_ORG);
		snprintf(c.subject.commonName, CTC_NAME_SIZE, "%s", CA_CN);
		c.isCA = 1;
		c.basicConstSet = 1;
		c.basicConstCrit = 1;
		c.daysValid = rq->r_days > CA_MIN_DAYS ? (int)rq->r_days :
		    CA_MIN_DAYS;
		step = "set the CA's key usage";
		if (wc_SetKeyUsage(&c, "keyCertSign,cRLSign") != 0)
			goto fail;
	} else {
		snprintf(c.subject.commonName, CTC_NAME_SIZE, "%s", rq->r_cn);
		c.selfSigned = 0;
		c.daysValid = (int)rq->r_days;
		step = "read the CA certificate's subject";
		if (wc_SetIssuerBuffer(&c, ca_der, ca_len) != 0)
			goto fail;
		step = "set the key usage";
		if (wc_SetKeyUsage(&c, subj->k_type == RSA_TYPE ?
		    "digitalSignature,keyEncipherment" : "digitalSignature") !=
		    0)
			goto fail;
		step = "set the extended key usage";
		if (wc_SetExtKeyUsage(&c, "serverAuth,clientAuth") != 0)
			goto fail;
		step = "encode the subject alternative names";
		if (set_sans(&c, rq) == -1)
			goto fail;
	}
	step = "set the key identifiers";
	if (wc_SetSubjectKeyIdFromPublicKey_ex(&c, subj->k_type,
	    key_ptr(subj)) != 0 || wc_SetAuthKeyIdFromPublicKey_ex(&c,
	    signer->k_type, key_ptr(signer)) != 0)
		goto fail;
	step = "make the certificate";
	if ((n = wc_MakeCert_ex(&c, der, DER_MAX, subj->k_type, key_ptr(subj),
	    rng)) <= 0)
		goto fail;
	step = "sign the certificate";
	if ((n = wc_SignCert_ex(c.bodySz, c.sigType, der, DER_MAX,
	    signer->k_type, key_ptr(signer), rng)) <= 0)
		goto fail;
	*derlen = n;
	step = "encode the certificate as PEM";
	if ((o->o_len = wc_DerToPem(der, (word32)n, o->o_pem,
	    sizeof(o->o_pem), CERT_TYPE)) <= 0)
		goto fail;
	return (0);
fail:
	snprintf(err, errlen, "wolfSSL could not %s", step);
	return (-1);
}

/* Read a file of at most FILE_MAX bytes.  Returns the bytes or NULL. */
static uint8_t *
slurp(const char *path, size_t *len, char *err, size_t errlen)
{
	uint8_t *buf;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "%s cannot be read: %s", path,
		    strerror(errno));
		return (NULL);
	}
	if ((buf = malloc(FILE_MAX + 1)) == NULL) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	*len = 0;
	while ((n = read(fd, buf + *len, FILE_MAX + 1 - *len)) > 0)
		*len += (size_t)n;
	close(fd);
	if (n == -1 || *len > FILE_MAX) {
		snprintf(err, errlen, "%s: %s", path, n == -1 ?
		    strerror(errno) : "larger than 1 MiB");
		free(buf);
		return (NULL);
	}
	return (buf);
}

/* mkdir -p dir (mode 0755 for what it creates).  0 or -1 (errno). */
static int
mkdir_p(const char *dir)
{
	char p[PATH_MAX], *s;
	struct stat st;

	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		return (-1);
	}
	for (s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) == -1 && errno != EEXIST)
			return (-1);
		*s = '/';
	}
	if (mkdir(p, 0755) == -1 && errno != EEXIST)
		return (-1);
	if (stat(p, &st) == -1)
		return (-1);
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return (-1);
	}
	return (0);
}

/* Create o->o_path (never replacing a file) and write it.  0 or -1. */
static int
write_out(struct out *o, const struct req *rq, char *err, size_t errlen)
{
	mode_t mode = o->o_mode;
	ssize_t n;
	int fd, off = 0;

	if (o->o_key && rq->r_group != NULL)
		mode = 0640;
	fd = open(o->o_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd == -1) {
		snprintf(err, errlen, errno == EEXIST ? "%s already exists; "
		    "not overwriting it (remove it, or use another folder)" :
		    "cannot create %s: %s", o->o_path, strerror(errno));
		return (-1);
	}
	o->o_made = 1;
	if (o->o_key && rq->r_group != NULL &&
	    fchown(fd, (uid_t)-1, rq->r_gid) == -1) {
		snprintf(err, errlen, "cannot give %s to group %s: %s (run as "
		    "root or as a member of %s)", o->o_path, rq->r_group,
		    strerror(errno), rq->r_group);
		goto fail;
	}
	/* The umask does not decide: 0644 certificates, 0600/0640 keys. */
	if (fchmod(fd, mode) == -1) {
		snprintf(err, errlen, "cannot set the mode of %s: %s",
		    o->o_path, strerror(errno));
		goto fail;
	}
	while (off < o->o_len) {
		n = write(fd, o->o_pem + off, (size_t)(o->o_len - off));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "cannot write %s: %s", o->o_path,
			    strerror(errno));
			goto fail;
		}
		off += (int)n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		snprintf(err, errlen, "cannot write %s: %s", o->o_path,
		    strerror(errno));
		return (-1);
	}
	return (0);
fail:
	close(fd);
	return (-1);
}

/*
 * Check that no file of outs exists, then write them all; on any failure
 * remove those this run created.  0, or an exit status (1).
 */
static int
write_all(struct out *outs, size_t n, const struct req *rq)
{
	char err[PATH_MAX + 256];
	struct stat st;
	size_t i;

	for (i = 0; i < n; i++)
		if (lstat(outs[i].o_path, &st) == 0)
			return (fail(EXIT_RUNTIME, "%s already exists; not "
			    "overwriting it (remove it, or use another "
			    "folder)", outs[i].o_path));
	for (i = 0; i < n; i++)
		if (write_out(&outs[i], rq, err, sizeof(err)) == -1)
			goto undo;
	return (0);
undo:
	for (i = 0; i < n; i++)
		if (outs[i].o_made)
			unlink(outs[i].o_path);
	return (fail(EXIT_RUNTIME, "%s", err));
}

/* DIR/NAME.pem or DIR/NAME-key.pem into o; -1 when too long. */
static int
out_path(struct out *o, const char *dir, const char *name, int key)
{
	memset(o, 0, sizeof(*o));
	o->o_key = key;
	o->o_mode = key ? 0600 : 0644;
	return (snprintf(o->o_path, sizeof(o->o_path), "%s/%s%s.pem", dir,
	    name, key ? "-key" : "") >= (int)sizeof(o->o_path) ? -1 : 0);
}

/* A DNS SAN: 1 to 253 bytes of letters, digits, '-', '.', '_', '*'. */
static const char *
dns_error(const char *s)
{
	const char *p;

	if (s[0] == '\0' || strlen(s) > 253)
		return ("give a host name of 1 to 253 characters");
	for (p = s; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
		    *p == '_' || *p == '*'))
			return ("a host name holds only letters, digits, '-', "
			    "'.', '_' and '*'");
	return (NULL);
}

/* A URI SAN: printable ASCII without blanks, with a scheme. */
static const char *
uri_error(const char *s)
{
	const char *p;

	if (strchr(s, ':') == NULL || s[0] == ':' || strlen(s) > 1024)
		return ("give a URI with a scheme, like spiffe://test/dm");
	for (p = s; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f)
			return ("a URI holds printable ASCII without blanks");
	return (NULL);
}

/* Add v to sl unless it is there already; an exit status or 0. */
static int
add_name(struct strlist *sl, const char *flag, const char *v)
{
	const char *why = NULL;
	char canon[INET6_ADDRSTRLEN];
	uint8_t ip[16];

	if (strcmp(flag, "dns") == 0)
		why = dns_error(v);
	else if (strcmp(flag, "uri") == 0)
		why = uri_error(v);
	else {
		/* Compare IPs in canonical form: ::1 and 0::1 are one. */
		if (inet_pton(AF_INET, v, ip) == 1)
			inet_ntop(AF_INET, ip, canon, sizeof(canon));
		else if (inet_pton(AF_INET6, v, ip) == 1)
			inet_ntop(AF_INET6, ip, canon, sizeof(canon));
		else
			return (fail(EXIT_USAGE, "--ip %s: not an IPv4 or IPv6 "
			    "address", v));
		v = canon;
	}
	if (why != NULL)
		return (fail(EXIT_USAGE, "--%s %s: %s", flag, v, why));
	if (strlist_has(sl, v))
		return (0);
	if (sl->sl_n >= MAX_NAMES)
		return (fail(EXIT_USAGE, "--%s: at most %d names", flag,
		    MAX_NAMES));
	if (strlist_add(sl, v) == -1)
		return (fail(EXIT_RUNTIME, "out of memory"));
	return (0);
}

enum { O_CN = 256, O_DNS, O_IP, O_URI, O_DAYS, O_RSA, O_GROUP, O_NAME,
	O_HELP };

static const struct option opts[] = {
	{ "cn",		required_argument, NULL, O_CN },
	{ "dns",	required_argument, NULL, O_DNS },
	{ "ip",		required_argument, NULL, O_IP },
	{ "uri",	required_argument, NULL, O_URI },
	{ "days",	required_argument, NULL, O_DAYS },
	{ "rsa",	no_argument,	   NULL, O_RSA },
	{ "group",	required_argument, NULL, O_GROUP },
	{ "name",	required_argument, NULL, O_NAME },
	{ "help",	no_argument,	   NULL, O_HELP },
	{ NULL, 0, NULL, 0 }
};

/* Parse argv (argv[0] = "init" or "issue") into rq; 0 or exit status. */
static int
parse(int argc, char **argv, struct req *rq)
{
	const struct group *gr;
	int ch, rv;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long_only(argc, argv, ":", opts, NULL)) != -1) {
		switch (ch) {
		case O_CN:	rq->r_cn = optarg; break;
		case O_NAME:	rq->r_name = optarg; break;
		case O_RSA:	rq->r_rsa = 1; break;
		case O_GROUP:	rq->r_group = optarg; break;
		case O_DNS:
		case O_IP:
		case O_URI:
			if ((rv = add_name(ch == O_DNS ? &rq->r_dns : ch == O_IP ?
			    &rq->r_ip : &rq->r_uri, ch == O_DNS ? "dns" :
			    ch == O_IP ? "ip" : "uri", optarg)) != 0)
				return (rv);
			break;
		case O_DAYS:
			if (parse_long(optarg, 1, MAX_DAYS, &rq->r_days) == -1)
				return (fail(EXIT_USAGE, "--days %s: give a "
				    "number of days from 1 to %d", optarg,
				    MAX_DAYS));
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		case ':':
			return (fail(EXIT_USAGE, "%s needs a value",
			    argv[optind - 1]));
		default:
			return (fail(EXIT_USAGE, "unknown option %s; see dmtls "
			    "certs --help", argv[optind - 1]));
		}
	}
	if (optind >= argc)
		return (fail(EXIT_USAGE, "give the folder: dmtls certs %s DIR",
		    rq->r_cmd));
	if (optind + 1 < argc)
		return (fail(EXIT_USAGE, "unexpected argument %s",
		    argv[optind + 1]));
	rq->r_dir = argv[optind];
	if (rq->r_dir[0] == '\0')
		return (fail(EXIT_USAGE, "the folder name is empty"));
	if (rq->r_group != NULL) {
		if ((gr = getgrnam(rq->r_group)) == NULL)
			return (fail(EXIT_USAGE, "--group %s: no such group "
			    "(create it first, e.g. groupadd --system %s)",
			    rq->r_group, rq->r_group));
		rq->r_gid = gr->gr_gid;
	}
	return (0);
}

/* Check the leaf's names; fill init's defaults.  0 or an exit status. */
static int
validate(struct req *rq, int is_init)
{
	const char *p;
	int rv;

	if (is_init && rq->r_name != NULL)
		return (fail(EXIT_USAGE, "--name is for dmtls certs issue; "
		    "init always writes dm.pem (set its CN with --cn)"));
	if (!is_init && rq->r_name == NULL)
		return (fail(EXIT_USAGE, "--name is required: the leaf is "
		    "written as DIR/NAME.pem and DIR/NAME-key.pem"));
	if (!is_init && rq->r_cn == NULL)
		return (fail(EXIT_USAGE, "--cn is required: the Subject CN "
		    "that cert-allowed-cn rules compare, e.g. --cn dm"));
	if (is_init) {
		rq->r_name = "dm";
		if (rq->r_cn == NULL)
			rq->r_cn = "dm";
	}
	if (rq->r_name[0] == '\0' || rq->r_name[0] == '.' ||
	    strcmp(rq->r_name, "ca") == 0 || strlen(rq->r_name) > 64)
		return (fail(EXIT_USAGE, "--name %s: give a file name stem of "
		    "up to 64 characters, not starting with '.', other than "
		    "ca", rq->r_name));
	for (p = rq->r_name; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
		    *p == '_'))
			return (fail(EXIT_USAGE, "--name %s: use letters, "
			    "digits, '-', '.' and '_' only", rq->r_name));
	if (rq->r_cn[0] == '\0' || strlen(rq->r_cn) >= CTC_NAME_SIZE)
		return (fail(EXIT_USAGE, "--cn \"%s\": give a CN of 1 to %d "
		    "bytes", rq->r_cn, CTC_NAME_SIZE - 1));
	if (rq->r_days == 0)
		rq->r_days = DEF_DAYS;
	/* init always; issue only when no name was given. */
	if (is_init || (rq->r_dns.sl_n == 0 && rq->r_ip.sl_n == 0 &&
	    rq->r_uri.sl_n == 0)) {
		struct strlist dns = rq->r_dns, ip = rq->r_ip;

		memset(&rq->r_dns, 0, sizeof(rq->r_dns));
		memset(&rq->r_ip, 0, sizeof(rq->r_ip));
		if ((rv = add_name(&rq->r_dns, "dns", "localhost")) != 0 ||
		    (rv = add_name(&rq->r_ip, "ip", "127.0.0.1")) != 0 ||
		    (rv = add_name(&rq->r_ip, "ip", "::1")) != 0)
			return (rv);
		for (size_t i = 0; i < dns.sl_n; i++)
			if ((rv = add_name(&rq->r_dns, "dns", dns.sl_v[i])) != 0)
				return (rv);
		for (size_t i = 0; i < ip.sl_n; i++)
			if ((rv = add_name(&rq->r_ip, "ip", ip.sl_v[i])) != 0)
				return (rv);
		strlist_free(&dns);
		strlist_free(&ip);
	}
	return (0);
}

/* "DNS:a,IP:b,URI:c" of rq. */
static void
sans_str(const struct req *rq, char *buf, size_t len)
{
	const struct strlist *l[3] = { &rq->r_dns, &rq->r_ip, &rq->r_uri };
	static const char *pfx[3] = { "DNS:", "IP:", "URI:" };
	size_t off = 0, i, k;
	int n;

	buf[0] = '\0';
	for (k = 0; k < 3; k++)
		for (i = 0; i < l[k]->sl_n && off < len; i++) {
			n = snprintf(buf + off, len - off, "%s%s%s",
			    off ? "," : "", pfx[k], l[k]->sl_v[i]);
			off += n > 0 ? (size_t)n : 0;
		}
}

/* "2027-06-16" for now + days. */
static const char *
until(long days, char *buf, size_t len)
{
	time_t t = time(NULL) + days * 86400;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d", &tm);
	return (buf);
}

/* 1 when leaf (DER) verifies against the CA in ca_pem. */
static int
leaf_verifies(const uint8_t *ca_pem, size_t ca_len, const uint8_t *der,
    int len)
{
	WOLFSSL_CERT_MANAGER *cm;
	int ok = 0;

	if ((cm = wolfSSL_CertManagerNew()) == NULL)
		return (0);
	if (wolfSSL_CertManagerLoadCABuffer(cm, ca_pem, (long)ca_len,
	    WOLFSSL_FILETYPE_PEM) == WOLFSSL_SUCCESS)
		ok = wolfSSL_CertManagerVerifyBuffer(cm, der, len,
		    WOLFSSL_FILETYPE_ASN1) == WOLFSSL_SUCCESS;
	wolfSSL_CertManagerFree(cm);
	return (ok);
}

static void
print_leaf(const struct out *o, const struct req *rq, const struct key *k)
{
	char sans[2048], day[16];

	sans_str(rq, sans, sizeof(sans));
	printf("  %s  leaf: CN=%s, %s, EKU serverAuth+clientAuth, %s, valid "
	    "for %ld days (until %s)\n", o[0].o_path, rq->r_cn, sans,
	    key_desc(k), rq->r_days, until(rq->r_days, day, sizeof(day)));
	printf("  %s  its private key, mode %s\n", o[1].o_path,
	    rq->r_group ? "0640" : "0600");
}

static const char TESTING[] =
    "This PKI is for testing only: its CA key lies unencrypted in the "
    "folder, so anyone who can read it can mint certificates this CA "
    "vouches for.\nDo not use it in production.\n";

/* `dmtls certs init`. */
static int
certs_init(struct req *rq)
{
	static struct out o[4];
	static uint8_t ca_der[DER_MAX], leaf_der[DER_MAX];
	struct key ca, leaf;
	char err[256], day[16];
	WC_RNG rng;
	int rv = EXIT_RUNTIME, ca_len, leaf_len;

	memset(&ca, 0, sizeof(ca));
	memset(&leaf, 0, sizeof(leaf));
	if (out_path(&o[0], rq->r_dir, "ca", 0) == -1 ||
	    out_path(&o[1], rq->r_dir, "ca", 1) == -1 ||
	    out_path(&o[2], rq->r_dir, "dm", 0) == -1 ||
	    out_path(&o[3], rq->r_dir, "dm", 1) == -1)
		return (fail(EXIT_USAGE, "%s: path too long", rq->r_dir));
	if (mkdir_p(rq->r_dir) == -1)
		return (fail(EXIT_RUNTIME, "cannot create the folder %s: %s",
		    rq->r_dir, strerror(errno)));
	for (int i = 0; i < 4; i++)
		if (access(o[i].o_path, F_OK) == 0)
			return (fail(EXIT_RUNTIME, "%s already exists; not "
			    "overwriting it (remove it, or use another "
			    "folder)", o[i].o_path));
	if (wc_InitRng(&rng) != 0)
		return (fail(EXIT_RUNTIME, "wolfSSL's random generator "
		    "failed"));
	if (key_make(&ca, rq->r_rsa, &rng) == -1 ||
	    key_make(&leaf, rq->r_rsa, &rng) == -1) {
		fail(EXIT_RUNTIME, "wolfSSL could not make a %s key",
		    rq->r_rsa ? "RSA-2048" : "P-256");
		goto out;
	}
	if (make_cert(rq, &ca, &ca, NULL, 0, &rng, &o[0], ca_der, &ca_len, err,
	    sizeof(err)) == -1 || make_cert(rq, &leaf, &ca, ca_der, ca_len,
	    &rng, &o[2], leaf_der, &leaf_len, err, sizeof(err)) == -1) {
		fail(EXIT_RUNTIME, "%s", err);
		goto out;
	}
	if (key_pem(&ca, &o[1]) == -1 || key_pem(&leaf, &o[3]) == -1) {
		fail(EXIT_RUNTIME, "wolfSSL could not encode a private key");
		goto out;
	}
	if ((rv = write_all(o, 4, rq)) != 0)
		goto out;
	printf("dmtls certs init: a test PKI in %s\n", rq->r_dir);
	printf("  %s  CA: O=%s, CN=%s, %s, valid for %ld days (until %s)\n",
	    o[0].o_path, CA_ORG, CA_CN, key_desc(&ca), rq->r_days >
	    CA_MIN_DAYS ? rq->r_days : CA_MIN_DAYS, until(rq->r_days >
	    CA_MIN_DAYS ? rq->r_days : CA_MIN_DAYS, day, sizeof(day)));
	printf("  %s  the CA's private key, mode 0600\n", o[1].o_path);
	print_leaf(&o[2], rq, &leaf);
	printf("%sMore leaves: dmtls certs issue %s --name NAME --cn CN "
	    "[--dns NAME]... [--ip ADDR]...\n", TESTING, rq->r_dir);
	rv = 0;
out:
	for (int i = 0; i < 4; i++)
		if (o[i].o_key)
			wc_ForceZero(o[i].o_pem, sizeof(o[i].o_pem));
	key_free(&ca);
	key_free(&leaf);
	wc_FreeRng(&rng);
	return (rv);
}

/* `dmtls certs issue`. */
static int
certs_issue(struct req *rq)
{
	static struct out o[2];
	static uint8_t ca_der[DER_MAX], leaf_der[DER_MAX];
	struct out ca_o;
	struct key ca, leaf;
	uint8_t *ca_pem = NULL, *key_pem_buf = NULL;
	size_t ca_len = 0, key_len = 0;
	char err[PATH_MAX + 256];
	WC_RNG rng;
	int rv = EXIT_RUNTIME, ca_der_len, leaf_len, rng_ok = 0;

	memset(&ca, 0, sizeof(ca));
	memset(&leaf, 0, sizeof(leaf));
	if (out_path(&o[0], rq->r_dir, rq->r_name, 0) == -1 ||
	    out_path(&o[1], rq->r_dir, rq->r_name, 1) == -1 ||
	    out_path(&ca_o, rq->r_dir, "ca", 0) == -1)
		return (fail(EXIT_USAGE, "%s: path too long", rq->r_dir));
	for (int i = 0; i < 2; i++)
		if (access(o[i].o_path, F_OK) == 0)
			return (fail(EXIT_RUNTIME, "%s already exists; not "
			    "overwriting it (remove it, or choose another "
			    "--name)", o[i].o_path));
	if ((ca_pem = slurp(ca_o.o_path, &ca_len, err, sizeof(err))) == NULL) {
		fail(EXIT_RUNTIME, "%s; make the PKI first with dmtls certs "
		    "init %s", err, rq->r_dir);
		goto out;
	}
	if ((ca_der_len = wc_CertPemToDer(ca_pem, (int)ca_len, ca_der,
	    sizeof(ca_der), CERT_TYPE)) <= 0) {
		fail(EXIT_RUNTIME, "%s holds no PEM certificate", ca_o.o_path);
		goto out;
	}
	out_path(&ca_o, rq->r_dir, "ca", 1);
	if ((key_pem_buf = slurp(ca_o.o_path, &key_len, err, sizeof(err))) ==
	    NULL) {
		fail(EXIT_RUNTIME, "%s", err);
		goto out;
	}
	if (key_load(&ca, key_pem_buf, key_len) == -1) {
		fail(EXIT_RUNTIME, "%s holds no unencrypted EC or RSA private "
		    "key", ca_o.o_path);
		goto out;
	}
	if (wc_InitRng(&rng) != 0) {
		fail(EXIT_RUNTIME, "wolfSSL's random generator failed");
		goto out;
	}
	rng_ok = 1;
	if (key_make(&leaf, rq->r_rsa, &rng) == -1) {
		fail(EXIT_RUNTIME, "wolfSSL could not make a %s key",
		    rq->r_rsa ? "RSA-2048" : "P-256");
		goto out;
	}
	if (make_cert(rq, &leaf, &ca, ca_der, ca_der_len, &rng, &o[0],
	    leaf_der, &leaf_len, err, sizeof(err)) == -1) {
		fail(EXIT_RUNTIME, "%s", err);
		goto out;
	}
	if (!leaf_verifies(ca_pem, ca_len, leaf_der, leaf_len)) {
		fail(EXIT_RUNTIME, "%s does not belong to the CA certificate "
		    "%s/ca.pem (a certificate it signs does not verify)",
		    ca_o.o_path, rq->r_dir);
		goto out;
	}
	if (key_pem(&leaf, &o[1]) == -1) {
		fail(EXIT_RUNTIME, "wolfSSL could not encode a private key");
		goto out;
	}
	if ((rv = write_all(o, 2, rq)) != 0)
		goto out;
	printf("dmtls certs issue: a leaf of the test CA in %s\n", rq->r_dir);
	print_leaf(o, rq, &leaf);
	printf("%s", TESTING);
	rv = 0;
out:
	wc_ForceZero(o[1].o_pem, sizeof(o[1].o_pem));
	if (key_pem_buf != NULL) {
		wc_ForceZero(key_pem_buf, key_len);
		free(key_pem_buf);
	}
	free(ca_pem);
	key_free(&ca);
	key_free(&leaf);
	if (rng_ok)
		wc_FreeRng(&rng);
	return (rv);
}

int
certs_main(int argc, char **argv)
{
	struct req rq;
	int rv, is_init;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return (argc < 2 ? EXIT_USAGE : 0);
	}
	if (strcmp(argv[1], "init") != 0 && strcmp(argv[1], "issue") != 0) {
		fprintf(stderr, "dmtls certs: unknown subcommand %s; use init "
		    "or issue\n", argv[1]);
		usage(stderr);
		return (EXIT_USAGE);
	}
	is_init = strcmp(argv[1], "init") == 0;
	snprintf(cmd, sizeof(cmd), "dmtls certs %s", argv[1]);
	memset(&rq, 0, sizeof(rq));
	rq.r_cmd = argv[1];
	if ((rv = parse(argc - 1, argv + 1, &rq)) == 0 &&
	    (rv = validate(&rq, is_init)) == 0)
		rv = is_init ? certs_init(&rq) : certs_issue(&rq);
	strlist_free(&rq.r_dns);
	strlist_free(&rq.r_ip);
	strlist_free(&rq.r_uri);
	return (rv);
}
