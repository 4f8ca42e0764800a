/*
 * test_policy: the identity rules on a peer's leaf certificate.  Every peer
 * id is read from a real certificate: the DER fixtures of policy_certs.h,
 * made by mkpolicycerts.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../policy/policy.h"
#include "../../policy/subject.h"
#include "../../proxy/conf.h"
#include "policy_certs.h"

/* The rules of sec, as policy/ takes them (a static copy, for one call). */
static const struct policy_rules *
R(const struct security_conf *sec)
{
	static struct policy_rules r;

	r.pr_cn.pl_v = sec->allowed_cn.sl_v;
	r.pr_cn.pl_n = sec->allowed_cn.sl_n;
	r.pr_dns.pl_v = sec->allowed_dns.sl_v;
	r.pr_dns.pl_n = sec->allowed_dns.sl_n;
	r.pr_uri.pl_v = sec->allowed_uri.sl_v;
	r.pr_uri.pl_n = sec->allowed_uri.sl_n;
	r.pr_ou.pl_v = sec->allowed_ou.sl_v;
	r.pr_ou.pl_n = sec->allowed_ou.sl_n;
	return (&r);
}

/* A security_conf whose only rules are one list of kind "cn", "dns"... */
static void
rules(struct security_conf *sec, const char *kind, const char *rule)
{
	struct strlist *l = strcmp(kind, "cn") == 0 ? &sec->allowed_cn :
	    strcmp(kind, "dns") == 0 ? &sec->allowed_dns :
	    strcmp(kind, "uri") == 0 ? &sec->allowed_uri : &sec->allowed_ou;

	assert_int_equal(strlist_add(l, rule), 0);
}

static void
sec_free(struct security_conf *sec)
{
	strlist_free(&sec->allowed_cn);
	strlist_free(&sec->allowed_dns);
	strlist_free(&sec->allowed_uri);
	strlist_free(&sec->allowed_ou);
	memset(sec, 0, sizeof(*sec));
}

/* A peer id from a fixture; one that does not parse has no names. */
static struct peer_id
peer(const unsigned char *der, size_t len)
{
	struct peer_id id;

	if (peer_id_from_der(der, len, &id) == -1)
		memset(&id, 0, sizeof(id));
	return (id);
}
#define PEER(der) peer((der), sizeof(der))

/* 1 when a policy of the single rule kind=rule allows the certificate. */
static int
allows(const unsigned char *der, size_t len, const char *kind,
    const char *rule)
{
	struct security_conf sec;
	struct peer_id id;
	int ok;

	memset(&sec, 0, sizeof(sec));
	id = peer(der, len);
	rules(&sec, kind, rule);
	ok = policy_allows(R(&sec), &id);
	sec_free(&sec);
	return (ok);
}
#define ALLOWS(der, kind, rule) allows((der), sizeof(der), (kind), (rule))

static void
test_empty_policy_allows_any(void **state)
{
	struct security_conf sec;
	struct peer_id id = PEER(cert_cn_worker);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	assert_true(policy_empty(R(&sec)));
	assert_true(policy_allows(R(&sec), &id));
}

static void
test_cn_exact_case_sensitive(void **state)
{
	struct security_conf sec;
	struct peer_id dm = PEER(cert_plain), upper = PEER(cert_cn_upper);
	struct peer_id prefix = PEER(cert_cn_dmx);
	struct peer_id second = PEER(cert_cn_worker);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	strlist_add_csv(&sec.allowed_cn, "dm,worker");
	assert_true(policy_allows(R(&sec), &dm));
	assert_false(policy_allows(R(&sec), &upper));
	assert_false(policy_allows(R(&sec), &prefix));
	/* Every entry counts, not only the first (unlike DM-master). */
	assert_true(policy_allows(R(&sec), &second));
	sec_free(&sec);
}

static void
test_cn_rule_ignores_sans(void **state)
{
	(void)state;
	assert_false(ALLOWS(cert_other_dns_dm, "cn", "dm"));
	assert_false(ALLOWS(cert_no_cn, "cn", "dm"));
}

static void
test_san_and_ou_rules_or(void **state)
{
	struct security_conf sec;
	struct peer_id byuri = PEER(cert_x_uri), bydns = PEER(cert_x_dns);
	struct peer_id byou = PEER(cert_x_ou), none = PEER(cert_x_none);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	strlist_add(&sec.allowed_cn, "dm");
	strlist_add(&sec.allowed_dns, "w1.dm");
	strlist_add(&sec.allowed_uri, "spiffe://dm/worker");
	strlist_add(&sec.allowed_ou, "dm-cluster");
	assert_true(policy_allows(R(&sec), &byuri));
	assert_true(policy_allows(R(&sec), &bydns));
	assert_true(policy_allows(R(&sec), &byou));
	assert_false(policy_allows(R(&sec), &none));
	sec_free(&sec);
}

static void
test_describe_for_logs(void **state)
{
	struct security_conf sec;
	struct peer_id id = PEER(cert_plain);
	char buf[256];

	(void)state;
	memset(&sec, 0, sizeof(sec));
	policy_describe(R(&sec), buf, sizeof(buf));
	assert_string_equal(buf, "any certificate from ssl-ca");
	strlist_add_csv(&sec.allowed_cn, "dm,dm2");
	strlist_add(&sec.allowed_dns, "w1");
	policy_describe(R(&sec), buf, sizeof(buf));
	assert_string_equal(buf, "cn=dm|dm2 dns=w1");
	peer_id_sans(&id, buf, sizeof(buf));
	/* wolfSSL may list the SANs of one kind in either order. */
	assert_int_equal(strlen(buf), strlen("DNS:w1.dm,DNS:localhost,"
	    "IP:127.0.0.1,URI:spiffe://dm/worker"));
	assert_non_null(strstr(buf, "DNS:w1.dm"));
	assert_non_null(strstr(buf, "DNS:localhost"));
	assert_non_null(strstr(buf, ",IP:127.0.0.1,URI:spiffe://dm/worker"));
	peer_id_cn(&id, buf, sizeof(buf));
	assert_string_equal(buf, "dm");
	sec_free(&sec);
}

static void
test_real_cert_names_match(void **state)
{
	(void)state;
	assert_true(ALLOWS(cert_plain, "cn", "dm"));
	assert_true(ALLOWS(cert_plain, "dns", "w1.dm"));
	assert_true(ALLOWS(cert_plain, "dns", "localhost"));
	assert_true(ALLOWS(cert_plain, "uri", "spiffe://dm/worker"));
	assert_false(ALLOWS(cert_plain, "cn", "d"));
	assert_false(ALLOWS(cert_plain, "dns", "w1.d"));
	assert_false(ALLOWS(cert_plain, "uri", "spiffe://dm/worke"));
	assert_false(ALLOWS(cert_no_cn, "cn", "dm"));
	assert_true(ALLOWS(cert_no_cn, "dns", "w1.dm"));
}

static void
test_repeated_cn_matches_no_cn_rule(void **state)
{
	(void)state;
	/* Neither the first nor the last of two CNs is "the" CN. */
	assert_false(ALLOWS(cert_two_cn, "cn", "dm"));
	assert_false(ALLOWS(cert_two_cn, "cn", "other"));
	/* (wolfSSL 5.9 refuses to parse this one: no names at all.) */
	assert_false(ALLOWS(cert_two_cn_rdn, "cn", "dm"));
	assert_false(ALLOWS(cert_two_cn_rdn, "cn", "other"));
	/* Its SANs still count. */
	assert_true(ALLOWS(cert_two_cn, "dns", "w1.dm"));
}

static void
test_every_ou_considered(void **state)
{
	(void)state;
	assert_true(ALLOWS(cert_plain, "ou", "ops"));
	assert_true(ALLOWS(cert_plain, "ou", "dm-cluster"));
	assert_false(ALLOWS(cert_plain, "ou", "dm"));
	assert_true(ALLOWS(cert_16_ou, "ou", "ou0"));
	assert_true(ALLOWS(cert_16_ou, "ou", "ou15"));
}

static void
test_long_names_never_truncated(void **state)
{
	char rule[301];

	(void)state;
	/* 255 bytes is kept and compared whole. */
	memset(rule, 'd', 255);
	rule[255] = '\0';
	assert_true(ALLOWS(cert_cn_255, "cn", rule));
	/* A 300-byte name does not match its first 255 bytes... */
	assert_false(ALLOWS(cert_cn_300, "cn", rule));
	assert_false(ALLOWS(cert_san_300, "dns", rule));
	/* ...nor itself: it is longer than what dmtls keeps. */
	memset(rule + 255, 'x', 45);
	rule[300] = '\0';
	assert_false(ALLOWS(cert_cn_300, "cn", rule));
	assert_false(ALLOWS(cert_san_300, "dns", rule));
}

static void
test_nul_or_empty_names_never_match(void **state)
{
	(void)state;
	assert_false(ALLOWS(cert_dns_empty, "dns", ""));
	assert_true(ALLOWS(cert_dns_empty, "dns", "w1.dm"));
	/* wolfSSL refuses to parse some of these (5.9 all NUL SANs). */
	assert_false(ALLOWS(cert_uri_empty, "uri", ""));
	assert_false(ALLOWS(cert_uri_nul, "uri", ""));
	assert_false(ALLOWS(cert_uri_nul, "uri", "spiffe://dm/w"));
	assert_false(ALLOWS(cert_san_nul, "dns", ""));
	assert_false(ALLOWS(cert_san_nul, "dns", "w1.dm"));
	assert_false(ALLOWS(cert_cn_nul, "cn", ""));
	assert_false(ALLOWS(cert_cn_nul, "cn", "dm"));
	assert_false(ALLOWS(cert_no_cn, "cn", ""));
	/* A CN that is not a byte string (BMPString) matches nothing. */
	assert_false(ALLOWS(cert_cn_bmp, "cn", "dm"));
	assert_false(ALLOWS(cert_cn_bmp, "cn", ""));
}

/* The denial reason of a policy of one CN rule for a fixture. */
static void
denial(const unsigned char *der, size_t len, const char *cn, char *buf,
    size_t buflen)
{
	struct security_conf sec;
	struct peer_id id = peer(der, len);

	memset(&sec, 0, sizeof(sec));
	rules(&sec, "cn", cn);
	assert_false(policy_allows(R(&sec), &id));
	policy_denial(R(&sec), &id, buf, buflen);
	sec_free(&sec);
}
#define DENIAL(der, cn, buf) denial((der), sizeof(der), (cn), (buf), \
	sizeof(buf))

static void
test_denial_names_what_kept_cn_out(void **state)
{
	struct peer_id id;
	char buf[200];

	(void)state;
	DENIAL(cert_cn_worker, "dm", buf);
	assert_string_equal(buf, "certificate identity not allowed (CN "
	    "worker)");
	DENIAL(cert_two_cn, "dm", buf);
	assert_string_equal(buf, "certificate identity not allowed (subject "
	    "holds 2 CN attributes, so no CN rule can match: other,dm)");
	DENIAL(cert_no_cn, "dm", buf);
	assert_string_equal(buf, "certificate identity not allowed (CN "
	    "absent)");
	DENIAL(cert_cn_nul, "dm", buf);
	assert_string_equal(buf, "certificate identity not allowed (CN "
	    "dm\\0x: holds a NUL byte)");
	DENIAL(cert_cn_300, "dm", buf);
	assert_non_null(strstr(buf, ": longer than 255 bytes)"));
	DENIAL(cert_cn_bmp, "dm", buf);
	assert_non_null(strstr(buf, ": not a byte string)"));
	/* The log's cn= field shows every CN. */
	id = PEER(cert_two_cn);
	peer_id_cn(&id, buf, sizeof(buf));
	assert_string_equal(buf, "other,dm");
	/* A reason always fits its buffer. */
	DENIAL(cert_two_cn, "dm", buf);
	denial(cert_two_cn, sizeof(cert_two_cn), "dm", buf, 10);
	assert_int_equal(strlen(buf), 9);
}

static void
test_ous_past_the_kept_ones_not_compared(void **state)
{
	struct security_conf sec;
	struct peer_id id = PEER(cert_17_ou);
	char buf[200];

	(void)state;
	/* Fails closed, and says so. */
	assert_true(ALLOWS(cert_17_ou, "ou", "ou15"));
	assert_false(ALLOWS(cert_17_ou, "ou", "ou16"));
	memset(&sec, 0, sizeof(sec));
	rules(&sec, "ou", "ou16");
	policy_denial(R(&sec), &id, buf, sizeof(buf));
	assert_non_null(strstr(buf, "(CN x; OU ou0,ou1,"));
	assert_non_null(strstr(buf, ", OUs after the 16th not compared)"));
	sec_free(&sec);
}

static void
test_rule_error_empty_and_too_long(void **state)
{
	char rule[257];

	(void)state;
	assert_null(policy_rule_error(POLICY_CN, "dm"));
	assert_non_null(strstr(policy_rule_error(POLICY_OU, ""), "empty"));
	assert_non_null(strstr(policy_rule_error(POLICY_URI, ""), "empty"));
	memset(rule, 'd', 256);
	rule[256] = '\0';
	assert_non_null(strstr(policy_rule_error(POLICY_CN, rule), "255"));
	assert_non_null(strstr(policy_rule_error(POLICY_DNS, rule), "255"));
	assert_non_null(strstr(policy_rule_error(POLICY_OU, rule), "255"));
	rule[255] = '\0';
	assert_null(policy_rule_error(POLICY_CN, rule));
}

/* A URI rule may be as long as the URIs compared: 2048 bytes, not 255. */
static void
test_uri_rule_bound_is_2048(void **state)
{
	char rule[PEER_URI_MAX + 2];

	(void)state;
	memset(rule, 'u', PEER_URI_MAX + 1);
	rule[PEER_URI_MAX + 1] = '\0';
	assert_non_null(strstr(policy_rule_error(POLICY_URI, rule), "2048"));
	rule[PEER_URI_MAX] = '\0';
	assert_null(policy_rule_error(POLICY_URI, rule));
	assert_non_null(policy_rule_error(POLICY_DNS, rule));
}

static void
count_attr(void *arg, const uint8_t *oid, size_t oidlen, int tag,
    const uint8_t *val, size_t len)
{
	(void)oid;
	(void)oidlen;
	(void)tag;
	(void)val;
	(void)len;
	(*(size_t *)arg)++;
}

static void
test_subject_walk_bounded(void **state)
{
	unsigned char der[sizeof(cert_plain)];
	struct peer_id id;
	size_t i, n;

	(void)state;
	n = 0;
	assert_int_equal(subject_each(cert_plain, sizeof(cert_plain),
	    count_attr, &n), 0);
	assert_int_equal(n, 3);
	n = 0;
	assert_int_equal(subject_each(cert_two_cn_rdn,
	    sizeof(cert_two_cn_rdn), count_attr, &n), 0);
	assert_int_equal(n, 2);
	/* Every truncation of a real certificate is refused, reading only
	 * the bytes it is given (the ASan build would see more). */
	for (i = 0; i < sizeof(cert_plain); i++) {
		unsigned char *cut = malloc(i ? i : 1);
		assert_non_null(cut);
		memcpy(cut, cert_plain, i);
		assert_int_equal(subject_each(cut, i, count_attr, &n), -1);
		assert_int_equal(peer_id_from_der(cut, i, &id), -1);
		assert_int_equal(id.pi_ncn + id.pi_ndns, 0);
		free(cut);
	}
	/* Bytes flipped anywhere: refused or read, never past the end. */
	for (i = 0; i < sizeof(cert_plain); i++) {
		memcpy(der, cert_plain, sizeof(der));
		der[i] ^= 0x80;
		n = 0;
		(void)subject_each(der, sizeof(der), count_attr, &n);
		assert_true(n <= 3);
		if (peer_id_from_der(der, sizeof(der), &id) == 0)
			assert_true(id.pi_ncn <= 1 && id.pi_nou <= 2);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_policy_allows_any),
		cmocka_unit_test(test_cn_exact_case_sensitive),
		cmocka_unit_test(test_cn_rule_ignores_sans),
		cmocka_unit_test(test_san_and_ou_rules_or),
		cmocka_unit_test(test_describe_for_logs),
		cmocka_unit_test(test_real_cert_names_match),
		cmocka_unit_test(test_repeated_cn_matches_no_cn_rule),
		cmocka_unit_test(test_every_ou_considered),
		cmocka_unit_test(test_long_names_never_truncated),
		cmocka_unit_test(test_nul_or_empty_names_never_match),
		cmocka_unit_test(test_denial_names_what_kept_cn_out),
		cmocka_unit_test(test_ous_past_the_kept_ones_not_compared),
		cmocka_unit_test(test_rule_error_empty_and_too_long),
		cmocka_unit_test(test_uri_rule_bound_is_2048),
		cmocka_unit_test(test_subject_walk_bounded),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
