/*
 * fuzz_peerid: a peer's DER certificate -> the names the identity policy
 * compares (policy/peerid.c: wolfCrypt's ParseCert for the SANs, then
 * subject.c's own walk of the Subject for every CN and OU), and the policy
 * and log strings made from them.  wolfCrypt is the sanitizer-instrumented
 * build, so its decoder is fuzzed too.
 *
 * Input: one DER certificate, in a block of its size.
 */
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"
#include "../../policy/subject.h"
#include "fuzz.h"

static char *cn[] = { "dm", NULL };
static char *dns[] = { "localhost", "dm.example", NULL };
static char *uri[] = { "spiffe://dm/worker", NULL };
static char *ou[] = { "ops", NULL };

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return (0);
}

struct walk {
	const uint8_t	*w_der;
	size_t		 w_len;
	size_t		 w_attrs;
};

/* Each attribute subject_each() reports lies inside the certificate. */
static void
on_attr(void *arg, const uint8_t *oid, size_t oidlen, int tag,
    const uint8_t *val, size_t vallen)
{
	struct walk *w = arg;
	const uint8_t *end = w->w_der + w->w_len;

	(void)tag;
	fuzz_check(oid >= w->w_der && oidlen <= (size_t)(end - oid),
	    "subject_each: OID outside the certificate");
	fuzz_check(val >= w->w_der && vallen <= (size_t)(end - val),
	    "subject_each: value outside the certificate");
	w->w_attrs++;
}

/* A kept name: NUL-terminated in its room, and whole when compared. */
#define CHECK_NAME(pn, max) do {					\
	fuzz_check(memchr((pn).pn_s, 0, sizeof((pn).pn_s)) != NULL,	\
	    "a name not terminated");					\
	if ((pn).pn_bad == NULL)					\
		fuzz_check(strlen((pn).pn_s) == (pn).pn_len &&		\
		    (pn).pn_len > 0 && (pn).pn_len <= (max),		\
		    "a name to compare that is not whole");		\
} while (0)

static void
check_names(const struct peer_name *v, size_t n)
{
	size_t i;

	for (i = 0; i < PEER_KEPT(n); i++)
		CHECK_NAME(v[i], PEER_NAME_MAX);
}

static void
check_uris(const struct peer_uri *v, size_t n)
{
	size_t i;

	for (i = 0; i < PEER_KEPT(n); i++)
		CHECK_NAME(v[i], PEER_URI_MAX);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_rules rules, none;
	struct peer_id id;
	struct walk w;
	char buf[600], small[24];
	uint8_t *der;

	if ((der = malloc(size > 0 ? size : 1)) == NULL)
		return (0);
	memcpy(der, data, size);
	w.w_der = der;
	w.w_len = size;
	w.w_attrs = 0;
	(void)subject_each(der, size, on_attr, &w);

	if (peer_id_from_der(der, size, &id) == 0) {
		check_names(id.pi_cn, id.pi_ncn);
		check_names(id.pi_ou, id.pi_nou);
		check_names(id.pi_dns, id.pi_ndns);
		check_uris(id.pi_uri, id.pi_nuri);
		memset(&rules, 0, sizeof(rules));
		rules.pr_cn.pl_v = cn;
		rules.pr_cn.pl_n = 1;
		rules.pr_dns.pl_v = dns;
		rules.pr_dns.pl_n = 2;
		rules.pr_uri.pl_v = uri;
		rules.pr_uri.pl_n = 1;
		rules.pr_ou.pl_v = ou;
		rules.pr_ou.pl_n = 1;
		memset(&none, 0, sizeof(none));
		fuzz_check(policy_allows(&none, &id) == 1,
		    "no rules, yet a peer refused");
		if (!policy_allows(&rules, &id)) {
			policy_denial(&rules, &id, buf, sizeof(buf));
			fuzz_check(buf[0] != '\0', "a denial without a reason");
		}
		policy_denial(&rules, &id, small, sizeof(small));
		peer_id_cn(&id, buf, sizeof(buf));
		peer_id_cn(&id, small, sizeof(small));
		peer_id_sans(&id, buf, sizeof(buf));
		peer_id_sans(&id, small, sizeof(small));
		fuzz_check(strlen(small) < sizeof(small), "a log string overran");
	}
	free(der);
	return (0);
}
