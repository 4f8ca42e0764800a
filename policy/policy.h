/*
 * policy.h: the identity policy of DESIGN section 4, evaluated on the peer's
 * leaf certificate after its chain has been verified.
 */
#ifndef DMTLS_POLICY_H
#define DMTLS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "../proxy/conf.h"

#define PEER_MAX_NAMES	16

/* What a leaf certificate says about its holder. */
struct peer_id {
	char	pi_cn[256];
	char	pi_ou[PEER_MAX_NAMES][128];
	size_t	pi_nou;
	char	pi_dns[PEER_MAX_NAMES][256];
	size_t	pi_ndns;
	char	pi_uri[PEER_MAX_NAMES][256];
	size_t	pi_nuri;
	char	pi_ip[PEER_MAX_NAMES][48];
	size_t	pi_nip;
};

/*
 * peer_id_from_der(der, len, id): fill id from a DER certificate.
 * Returns 0, or -1 when the certificate does not parse.
 */
int peer_id_from_der(const uint8_t *, size_t, struct peer_id *);

/* policy_empty(sec): 1 when no identity rule is configured. */
int policy_empty(const struct security_conf *);

/*
 * policy_allows(sec, id): 1 when any configured rule matches id (CN, DNS SAN,
 * URI SAN or OU, each an exact, case-sensitive match), or when no rule is
 * configured; 0 otherwise.
 */
int policy_allows(const struct security_conf *, const struct peer_id *);

/* policy_describe(sec, buf, len): "cn=dm|dm2 dns=..." for log lines. */
void policy_describe(const struct security_conf *, char *, size_t);

/* peer_id_sans(id, buf, len): "DNS:localhost,IP:127.0.0.1,URI:..." */
void peer_id_sans(const struct peer_id *, char *, size_t);

#endif
