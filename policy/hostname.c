/*
 * hostname.c: server-name checked against the leaf's SANs (RFC 6125).
 *
 * wolfSSL's own check (wolfSSL_check_domain_name) refuses single-label
 * names and IP addresses in 5.9, and DM names its components master-1,
 * worker-1: the check lives here instead, on the names policy/ already
 * reads from the leaf.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <string.h>
#include <strings.h>

#include "hostname.h"

/* A name as compared: without one trailing dot; 0 when none is left. */
static size_t
name_len(const char *s)
{
	size_t n = strlen(s);

	if (n > 0 && s[n - 1] == '.')
		n--;
	return (n);
}

/* One DNS SAN against the name (both n bytes long at most). */
static int
dns_matches(const struct peer_name *san, const char *name, size_t n)
{
	const char *dot;
	size_t sl, rest;

	if (san->pn_bad != NULL || (sl = name_len(san->pn_s)) == 0)
		return (0);
	if (sl == n && strncasecmp(san->pn_s, name, n) == 0)
		return (1);
	/* "*.rest": the whole left-most label, standing for one label. */
	if (sl < 3 || san->pn_s[0] != '*' || san->pn_s[1] != '.')
		return (0);
	rest = sl - 1;				/* ".rest" */
	if ((dot = memchr(name, '.', n)) == NULL || dot == name)
		return (0);
	return ((size_t)(name + n - dot) == rest &&
	    strncasecmp(dot, san->pn_s + 1, rest) == 0);
}

int
hostname_matches(const struct peer_id *id, const char *name)
{
	unsigned char want[16], have[16];
	int fam = 0;
	size_t i, n;

	if (inet_pton(AF_INET, name, want) == 1)
		fam = AF_INET;
	else if (inet_pton(AF_INET6, name, want) == 1)
		fam = AF_INET6;
	if (fam != 0) {
		for (i = 0; i < PEER_KEPT(id->pi_nip); i++)
			if (inet_pton(fam, id->pi_ip[i], have) == 1 &&
			    memcmp(want, have, fam == AF_INET ? 4 : 16) == 0)
				return (1);
		return (0);
	}
	if ((n = name_len(name)) == 0 || memchr(name, '*', n) != NULL)
		return (0);
	for (i = 0; i < PEER_KEPT(id->pi_ndns); i++)
		if (dns_matches(&id->pi_dns[i], name, n))
			return (1);
	return (0);
}
