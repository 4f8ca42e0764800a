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
policy_empty(const struct security_conf *sec)
{
	return (sec->allowed_cn.sl_n == 0 && sec->allowed_dns.sl_n == 0 &&
	    sec->allowed_uri.sl_n == 0 && sec->allowed_ou.sl_n == 0);
}

static int
any_in(const struct strlist *rules, const char names[][256], size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strlist_has(rules, names[i]))
			return (1);
	return (0);
}

int
policy_allows(const struct security_conf *sec, const struct peer_id *id)
{
	size_t i;

	if (policy_empty(sec))
		return (1);
	if (id->pi_cn[0] != '\0' && strlist_has(&sec->allowed_cn, id->pi_cn))
		return (1);
	if (any_in(&sec->allowed_dns, id->pi_dns, id->pi_ndns))
		return (1);
	if (any_in(&sec->allowed_uri, id->pi_uri, id->pi_nuri))
		return (1);
	for (i = 0; i < id->pi_nou; i++)
		if (strlist_has(&sec->allowed_ou, id->pi_ou[i]))
			return (1);
	return (0);
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

void
policy_describe(const struct security_conf *sec, char *buf, size_t len)
{
	static const char *keys[] = { "cn", "dns", "uri", "ou" };
	const struct strlist *lists[] = { &sec->allowed_cn, &sec->allowed_dns,
	    &sec->allowed_uri, &sec->allowed_ou };
	char items[1024];
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (policy_empty(sec)) {
		snprintf(buf, len, "any certificate from ssl-ca");
		return;
	}
	for (i = 0; i < 4; i++) {
		if (lists[i]->sl_n == 0)
			continue;
		strlist_join(lists[i], "|", items, sizeof(items));
		off = append(buf, len, off, " ", keys[i], "=");
		off = append(buf, len, off, "", "", items);
	}
}

void
peer_id_sans(const struct peer_id *id, char *buf, size_t len)
{
	size_t i, off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < id->pi_ndns; i++)
		off = append(buf, len, off, ",", "DNS:", id->pi_dns[i]);
	for (i = 0; i < id->pi_nip; i++)
		off = append(buf, len, off, ",", "IP:", id->pi_ip[i]);
	for (i = 0; i < id->pi_nuri; i++)
		off = append(buf, len, off, ",", "URI:", id->pi_uri[i]);
}
