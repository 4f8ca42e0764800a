/*
 * policy.c: identity rules on the peer's leaf certificate.
 *
 * Only the leaf is consulted, against the whole list: stricter than DM-master
 * (first list entry only) and DM-worker (any certificate of the chain).
 */
#include <stdio.h>
#include <string.h>

#include "policy.h"

int
policy_empty(const struct policy_rules *r)
{
	return (r->pr_cn.pl_n == 0 && r->pr_dns.pl_n == 0 &&
	    r->pr_uri.pl_n == 0 && r->pr_ou.pl_n == 0);
}

const char *
policy_rule_error(enum policy_kind kind, const char *rule)
{
	if (rule[0] == '\0')
		return ("an empty string is not a rule (no name is empty); "
		    "remove it");
	if (kind == POLICY_URI && strlen(rule) > PEER_URI_MAX)
		return ("longer than 2048 bytes: dmtls compares URIs of up to "
		    "2048 bytes, so this rule could never match");
	if (kind != POLICY_URI && strlen(rule) > PEER_NAME_MAX)
		return ("longer than 255 bytes: dmtls compares names of up to "
		    "255 bytes, so this rule could never match");
	return (NULL);
}

/* 1 when s is, byte for byte, one of the rules of l. */
static int
list_has(const struct policy_list *l, const char *s)
{
	size_t i;

	for (i = 0; i < l->pl_n; i++)
		if (strcmp(l->pl_v[i], s) == 0)
			return (1);
	return (0);
}

/* 1 when a comparable name among the first PEER_KEPT(n) of v is a rule. */
static int
any_in(const struct policy_list *rules, const struct peer_name *v, size_t n)
{
	size_t i;

	for (i = 0; i < PEER_KEPT(n); i++)
		if (v[i].pn_bad == NULL && list_has(rules, v[i].pn_s))
			return (1);
	return (0);
}

/* any_in() for URIs, which have a room of their own. */
static int
any_uri_in(const struct policy_list *rules, const struct peer_uri *v,
    size_t n)
{
	size_t i;

	for (i = 0; i < PEER_KEPT(n); i++)
		if (v[i].pn_bad == NULL && list_has(rules, v[i].pn_s))
			return (1);
	return (0);
}

int
policy_allows(const struct policy_rules *r, const struct peer_id *id)
{
	if (policy_empty(r))
		return (1);
	/* Libraries disagree on which of several CNs is "the" CN. */
	if (id->pi_ncn == 1 && any_in(&r->pr_cn, id->pi_cn, 1))
		return (1);
	return (any_in(&r->pr_dns, id->pi_dns, id->pi_ndns) ||
	    any_uri_in(&r->pr_uri, id->pi_uri, id->pi_nuri) ||
	    any_in(&r->pr_ou, id->pi_ou, id->pi_nou));
}

/* Append sep, key and val to buf at off; returns the new offset. */
static size_t
append(char *buf, size_t len, size_t off, const char *sep, const char *key,
    const char *val)
{
	int n;

	if (off >= len)
		return (off);
	n = snprintf(buf + off, len - off, "%s%s%s", off ? sep : "", key, val);
	return (n < 0 ? off : off + (size_t)n);
}

/* Write the rules of l joined by sep into buf (cut to fit). */
static void
list_join(const struct policy_list *l, const char *sep, char *buf, size_t len)
{
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < l->pl_n; i++)
		off = append(buf, len, off, sep, "", l->pl_v[i]);
}

void
policy_describe(const struct policy_rules *r, char *buf, size_t len)
{
	static const char *keys[] = { "cn", "dns", "uri", "ou" };
	const struct policy_list *lists[] = { &r->pr_cn, &r->pr_dns,
	    &r->pr_uri, &r->pr_ou };
	char items[1024];
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (policy_empty(r)) {
		snprintf(buf, len, "any certificate from ssl-ca");
		return;
	}
	for (i = 0; i < 4; i++) {
		if (lists[i]->pl_n == 0)
			continue;
		list_join(lists[i], "|", items, sizeof(items));
		off = append(buf, len, off, " ", keys[i], "=");
		off = append(buf, len, off, "", "", items);
	}
}

void
policy_denial(const struct policy_rules *r, const struct peer_id *id,
    char *buf, size_t len)
{
	const char *why = NULL;
	char cns[128], ous[96], what[176];
	size_t i, off = 0;

	if (len == 0)
		return;
	peer_id_cn(id, cns, sizeof(cns));
	if (id->pi_ncn > 1 && r->pr_cn.pl_n > 0)
		snprintf(what, sizeof(what), "subject holds %zu CN attributes, "
		    "so no CN rule can match: %s", id->pi_ncn, cns);
	else {
		if (id->pi_ncn == 1 && r->pr_cn.pl_n > 0)
			why = id->pi_cn[0].pn_bad;
		snprintf(what, sizeof(what), "CN %s%s%s", id->pi_ncn ? cns :
		    "absent", why ? ": " : "", why ? why : "");
	}
	/* The OUs only matter to a route with OU rules. */
	ous[0] = '\0';
	for (i = 0; r->pr_ou.pl_n > 0 && i < PEER_KEPT(id->pi_nou); i++)
		off = append(ous, sizeof(ous), off, ",", "", id->pi_ou[i].pn_s);
	snprintf(buf, len, "certificate identity not allowed (%s%s%s%s)", what,
	    r->pr_ou.pl_n == 0 ? "" : off ? "; OU " : "; no OU", ous,
	    r->pr_ou.pl_n > 0 && id->pi_nou > PEER_MAX_NAMES ?
	    ", OUs after the 16th not compared" : "");
}

void
peer_id_cn(const struct peer_id *id, char *buf, size_t len)
{
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < PEER_KEPT(id->pi_ncn); i++)
		off = append(buf, len, off, ",", "", id->pi_cn[i].pn_s);
}

void
peer_id_sans(const struct peer_id *id, char *buf, size_t len)
{
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < PEER_KEPT(id->pi_ndns); i++)
		off = append(buf, len, off, ",", "DNS:", id->pi_dns[i].pn_s);
	for (i = 0; i < id->pi_nip; i++)
		off = append(buf, len, off, ",", "IP:", id->pi_ip[i]);
	for (i = 0; i < PEER_KEPT(id->pi_nuri); i++)
		off = append(buf, len, off, ",", "URI:", id->pi_uri[i].pn_s);
}
