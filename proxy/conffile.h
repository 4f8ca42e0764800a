/*
 * conffile.h: the libconfig file of DESIGN section 6 and its conf.d folder.
 */
#ifndef DMTLS_CONFFILE_H
#define DMTLS_CONFFILE_H

#include <stddef.h>

#include "../policy/policy.h"
#include "conf.h"

#define CONFIG_DEFAULT_PATH	"/etc/dmtls/dmtls.conf"

struct config {
	struct global_conf	 cf_g;
	struct route_conf	*cf_routes;
	size_t			 cf_nroutes;
};

/*
 * config_load(path, cf, err, errlen): read path, then every *.conf in the
 * conf.d folder beside it in name order.  Returns 0, or -1 with
 * "FILE:LINE: message" in err.  Certificate files are not read here.
 */
int config_load(const char *, struct config *, char *, size_t);

/* config_free(cf): free what config_load filled in. */
void config_free(struct config *);

/*
 * config_add_rules(kind, v, sec, err, errlen): append the comma-separated
 * identity rules of v, the value of a --cert-allowed-* flag of that kind,
 * to sec's list of that kind.  Every item must be a rule
 * (policy_rule_error): "a,,b", ",a" and "" are errors, not "a,b" or no
 * rule.  Returns 0, or -1 with a message naming the flag in err.  The
 * command line's twin of the config keys.
 */
int config_add_rules(enum policy_kind, const char *, struct security_conf *,
    char *, size_t);
/* The getopt value of --cert-allowed-KIND: CONFIG_O_ALLOWED + its enum
 * policy_kind, above every command's own option values. */
#define CONFIG_O_ALLOWED	1024

#endif
