/*
 * test_policy: the identity rules on a peer's leaf certificate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../policy/policy.h"

static struct peer_id
peer(const char *cn, const char *dns, const char *uri, const char *ou)
{
	struct peer_id id;

	memset(&id, 0, sizeof(id));
	if (cn)
		strcpy(id.pi_cn, cn);
	if (dns)
		strcpy(id.pi_dns[id.pi_ndns++], dns);
	if (uri)
		strcpy(id.pi_uri[id.pi_nuri++], uri);
	if (ou)
		strcpy(id.pi_ou[id.pi_nou++], ou);
	return (id);
}

static void
test_empty_policy_allows_any(void **state)
{
	struct security_conf sec;
	struct peer_id id = peer("anyone", NULL, NULL, NULL);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	assert_true(policy_empty(&sec));
	assert_true(policy_allows(&sec, &id));
}

static void
test_cn_exact_case_sensitive(void **state)
{
	struct security_conf sec;
	struct peer_id dm = peer("dm", NULL, NULL, NULL);
	struct peer_id upper = peer("DM", NULL, NULL, NULL);
	struct peer_id prefix = peer("dm-x", NULL, NULL, NULL);
	struct peer_id second = peer("worker", NULL, NULL, NULL);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	strlist_add_csv(&sec.allowed_cn, "dm,worker");
	assert_true(policy_allows(&sec, &dm));
	assert_false(policy_allows(&sec, &upper));
	assert_false(policy_allows(&sec, &prefix));
	/* Every entry counts, not only the first (unlike DM-master). */
	assert_true(policy_allows(&sec, &second));
	strlist_free(&sec.allowed_cn);
}

static void
test_cn_rule_ignores_sans(void **state)
{
	struct security_conf sec;
	struct peer_id id = peer("other", "dm", NULL, NULL);
	struct peer_id nocn = peer(NULL, NULL, NULL, NULL);

	(void)state;
	memset(&sec, 0, sizeof(sec));
	strlist_add(&sec.allowed_cn, "dm");
	assert_false(policy_allows(&sec, &id));
	assert_false(policy_allows(&sec, &nocn));
	strlist_free(&sec.allowed_cn);
}

static void
test_san_and_ou_rules_or(void **state)
{
	struct security_conf sec;
	struct peer_id byuri = peer("x", NULL, "spiffe://dm/worker", NULL);
	struct peer_id bydns = peer("x", "w1.dm", NULL, NULL);
	struct peer_id byou = peer("x", NULL, NULL, "dm-cluster");
	struct peer_id none = peer("x", "w2.dm", "spiffe://dm/x", "ops");

	(void)state;
	memset(&sec, 0, sizeof(sec));
	strlist_add(&sec.allowed_cn, "dm");
	strlist_add(&sec.allowed_dns, "w1.dm");
	strlist_add(&sec.allowed_uri, "spiffe://dm/worker");
	strlist_add(&sec.allowed_ou, "dm-cluster");
	assert_true(policy_allows(&sec, &byuri));
	assert_true(policy_allows(&sec, &bydns));
	assert_true(policy_allows(&sec, &byou));
	assert_false(policy_allows(&sec, &none));
	strlist_free(&sec.allowed_cn);
	strlist_free(&sec.allowed_dns);
	strlist_free(&sec.allowed_uri);
	strlist_free(&sec.allowed_ou);
}

static void
test_describe_for_logs(void **state)
{
	struct security_conf sec;
	struct peer_id id = peer("dm", "localhost", "spiffe://a", NULL);
	char buf[256];

	(void)state;
	memset(&sec, 0, sizeof(sec));
	policy_describe(&sec, buf, sizeof(buf));
	assert_string_equal(buf, "any certificate from ssl-ca");
	strlist_add_csv(&sec.allowed_cn, "dm,dm2");
	strlist_add(&sec.allowed_dns, "w1");
	policy_describe(&sec, buf, sizeof(buf));
	assert_string_equal(buf, "cn=dm|dm2 dns=w1");
	peer_id_sans(&id, buf, sizeof(buf));
	assert_string_equal(buf, "DNS:localhost,URI:spiffe://a");
	strlist_free(&sec.allowed_cn);
	strlist_free(&sec.allowed_dns);
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
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
