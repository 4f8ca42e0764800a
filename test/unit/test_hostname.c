/*
 * test_hostname: server-name against a leaf's SANs (policy/hostname.c).
 * The integration test test_client_route_server_name runs the same rules
 * on real certificates; these are the edge cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../policy/hostname.h"

static void
add_dns(struct peer_id *id, const char *s, const char *bad)
{
	struct peer_name *n = &id->pi_dns[id->pi_ndns++];

	snprintf(n->pn_s, sizeof(n->pn_s), "%s", s);
	n->pn_len = strlen(s);
	n->pn_bad = bad;
}

static void
test_dns_names(void **state)
{
	struct peer_id id;

	(void)state;
	memset(&id, 0, sizeof(id));
	add_dns(&id, "master-1", NULL);
	add_dns(&id, "*.dm.svc", NULL);
	add_dns(&id, "evil", "holds a NUL byte");
	assert_true(hostname_matches(&id, "master-1"));
	assert_true(hostname_matches(&id, "Master-1"));
	assert_true(hostname_matches(&id, "master-1."));
	assert_false(hostname_matches(&id, "master-10"));
	assert_false(hostname_matches(&id, "master-"));
	assert_false(hostname_matches(&id, ""));
	assert_false(hostname_matches(&id, "."));
	assert_true(hostname_matches(&id, "w1.dm.svc"));
	assert_false(hostname_matches(&id, "dm.svc"));
	assert_false(hostname_matches(&id, ".dm.svc"));
	assert_false(hostname_matches(&id, "a.w1.dm.svc"));
	assert_false(hostname_matches(&id, "*.dm.svc"));
	assert_false(hostname_matches(&id, "evil"));	/* not kept whole */
}

static void
test_ip_names(void **state)
{
	struct peer_id id;

	(void)state;
	memset(&id, 0, sizeof(id));
	snprintf(id.pi_ip[id.pi_nip++], sizeof(id.pi_ip[0]), "127.0.0.1");
	snprintf(id.pi_ip[id.pi_nip++], sizeof(id.pi_ip[0]), "::1");
	add_dns(&id, "127.0.0.2", NULL);	/* an address is no DNS name */
	assert_true(hostname_matches(&id, "127.0.0.1"));
	assert_true(hostname_matches(&id, "::1"));
	assert_true(hostname_matches(&id, "0:0:0:0:0:0:0:1"));
	assert_false(hostname_matches(&id, "127.0.0.2"));
	assert_false(hostname_matches(&id, "::2"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dns_names),
		cmocka_unit_test(test_ip_names),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
