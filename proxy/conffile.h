/*
 * conffile.h: the libconfig file of DESIGN section 6 and its conf.d folder.
 */
#ifndef DMTLS_CONFFILE_H
#define DMTLS_CONFFILE_H

#include <stddef.h>

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

#endif
