/*
 * policy.h: the identity policy of DESIGN section 4, evaluated on the peer's
 * leaf certificate after its chain has been verified.
 */
#ifndef DMTLS_POLICY_H
#define DMTLS_POLICY_H

#include <stddef.h>
#include <stdint.h>


#define PEER_NAME_MAX	255	/* longest CN, OU or DNS name compared */
#define PEER_URI_MAX	2048	/* longest URI compared: a SPIFFE ID's bound */
#define PEER_MAX_NAMES	16	/* names of one kind kept and compared */

/* One kind of identity rule: n names (cert-allowed-cn, -dns, -uri, -ou). */
struct policy_list {
	char *const	*pl_v;
	size_t		 pl_n;
};

/*
 * A route's identity rules.  The names are the caller's (its config), and
 * must outlive every use of the rules.
 */
struct policy_rules {
	struct policy_list	pr_cn;
	struct policy_list	pr_dns;
	struct policy_list	pr_uri;
	struct policy_list	pr_ou;
};

/* The kinds of rule, for policy_rule_error(). */
enum policy_kind {
	POLICY_CN = 0,
	POLICY_DNS,
	POLICY_URI,
	POLICY_OU
};

/* How many of n names of one kind a peer_id holds. */
#define PEER_KEPT(n)	((n) < PEER_MAX_NAMES ? (n) : PEER_MAX_NAMES)

/* One name out of a certificate. */
struct peer_name {
	char	pn_s[PEER_NAME_MAX + 1];	/* the name, NUL-terminated */
	size_t	pn_len;		/* its length in the certificate */
	/*
	 * NULL when pn_s is the whole name: 1 to PEER_NAME_MAX bytes, no NUL,
	 * a byte string (UTF8String, PrintableString, IA5String...).  Only
	 * such a name is ever compared.  Otherwise why not ("empty", "holds a
	 * NUL byte"...), and pn_s is for logs (cut to fit, a NUL shown as \0).
	 */
	const char *pn_bad;
};

/* A URI SAN: a peer_name with room for PEER_URI_MAX bytes. */
struct peer_uri {
	char	pn_s[PEER_URI_MAX + 1];
	size_t	pn_len;
	const char *pn_bad;	/* as for a peer_name, bound PEER_URI_MAX */
};

/*
 * What a leaf certificate says about its holder.  The counts are of the
 * names in the certificate; the first PEER_KEPT(count) are held.
 */
struct peer_id {
	struct peer_name pi_cn[PEER_MAX_NAMES];	/* every CN attribute */
	size_t		 pi_ncn;
	struct peer_name pi_ou[PEER_MAX_NAMES];	/* every OU attribute */
	size_t		 pi_nou;
	struct peer_name pi_dns[PEER_MAX_NAMES];
	size_t		 pi_ndns;
	struct peer_uri	 pi_uri[PEER_MAX_NAMES];
	size_t		 pi_nuri;
	char		 pi_ip[PEER_MAX_NAMES][48];
	size_t		 pi_nip;
};

/*
 * peer_id_from_der(der, len, id): fill id from a DER certificate: every CN
 * and OU of its subject (read by subject.c) and its DNS, URI and IP SANs.
 * Returns 0, or -1 (id emptied) when the certificate does not parse.
 */
int peer_id_from_der(const uint8_t *, size_t, struct peer_id *);

/* policy_empty(rules): 1 when no identity rule is configured. */
int policy_empty(const struct policy_rules *);

/*
 * policy_rule_error(kind, rule): NULL when rule can be a rule of that kind
 * (cert-allowed-cn, -dns, -uri, -ou), else why not, for a message that
 * names the key: "" is not a rule, and one longer than the names of its
 * kind that are compared (PEER_NAME_MAX, PEER_URI_MAX for URIs) could
 * never match.
 */
const char *policy_rule_error(enum policy_kind, const char *);

/*
 * policy_allows(rules, id): 1 when any configured rule matches id, or when no
 * rule is configured; 0 otherwise.  A rule matches a name whose pn_bad is
 * NULL and that equals it byte for byte.  CN rules look at the CN only when
 * the subject holds exactly one; DNS, URI and OU rules look at every name of
 * their kind that id holds.
 */
int policy_allows(const struct policy_rules *, const struct peer_id *);

/*
 * policy_denial(rules, id, buf, len): why policy_allows(rules, id) said 0, for
 * the log line: "certificate identity not allowed (CN other)", or naming
 * what kept a name from being compared (several CNs, too long, a NUL...).
 */
void policy_denial(const struct policy_rules *, const struct peer_id *,
    char *, size_t);

/* peer_id_cn(id, buf, len): the subject's CNs for logs ("" when none). */
void peer_id_cn(const struct peer_id *, char *, size_t);

/* policy_describe(rules, buf, len): "cn=dm|dm2 dns=..." for log lines. */
void policy_describe(const struct policy_rules *, char *, size_t);

/* peer_id_sans(id, buf, len): "DNS:localhost,IP:127.0.0.1,URI:..." */
void peer_id_sans(const struct peer_id *, char *, size_t);

#endif
