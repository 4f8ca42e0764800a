/*
 * hostname.h: is a certificate valid for the name a client route dials
 * (server-name)?  RFC 6125 rules on the leaf's SANs, for every form of
 * name DM uses: single labels (master-1), dotted names, IP addresses.
 */
#ifndef DMTLS_HOSTNAME_H
#define DMTLS_HOSTNAME_H

#include "policy.h"

/*
 * hostname_matches(id, name): 1 when id's SANs cover name, else 0.  An IP
 * literal (v4 or v6) matches an IP SAN of the same address; any other name
 * matches a DNS SAN equal to it ignoring ASCII case (one trailing dot
 * ignored), or a "*.rest" SAN whose "*" stands for exactly one non-empty
 * left-most label.  The subject CN is never used (as Go and browsers do),
 * nor a SAN that was not kept whole (pn_bad).
 */
int hostname_matches(const struct peer_id *, const char *);

#endif
