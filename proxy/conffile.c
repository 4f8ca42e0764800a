/*
 * conffile.c: load the config file and conf.d with libconfig.  Every error is
 * reported as FILE:LINE: message, with a "did you mean" for near-miss keys.
 */
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "../policy/policy.h"
#include "addr.h"
#include "conffile.h"
#include "util.h"

struct loadctx {
	struct config	*lc_cf;
	char		*lc_err;
	size_t		 lc_errlen;
	const struct security_conf *lc_defsec;	/* top-level security */
};

static const char *top_keys[] = {
	"log-level", "log-format", "workers", "status", "shutdown-timeout",
	"security", "routes", "user", "group", "sandbox", NULL
};
static const char *route_keys[] = {
	"name", "kind", "listen", "target", "alpn", "max-conns",
	"connect-timeout", "handshake-timeout", "idle-timeout",
	"close-timeout", "security", NULL
};
static const char *security_keys[] = {
	"ssl-ca", "ssl-cert", "ssl-key", "cert-allowed-cn", "cert-allowed-dns",
	"cert-allowed-uri", "cert-allowed-ou", "server-name", "verify-client",
	"ssl-crl", NULL
};

static int
errat(struct loadctx *lc, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
errat(struct loadctx *lc, const config_setting_t *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(lc->lc_err, lc->lc_errlen, "%s:%u: ",
	    config_setting_source_file(s) ? config_setting_source_file(s) :
	    "?", config_setting_source_line(s));
	if (n < 0 || (size_t)n >= lc->lc_errlen)
		return (-1);
	va_start(ap, fmt);
	vsnprintf(lc->lc_err + n, lc->lc_errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return (-1);
}

static int
valid_log_level(const char *s)
{
	return (strcmp(s, "debug") == 0 || strcmp(s, "info") == 0 ||
	    strcmp(s, "warn") == 0 || strcmp(s, "error") == 0);
}

/* Levenshtein distance, for "did you mean". */
static size_t
distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j, prev, cur, tmp;
	size_t row[64];

	if (la >= 64 || lb >= 64)
		return (99);
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			cur = row[j];
			tmp = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < tmp)
				tmp = row[j] + 1;
			if (row[j - 1] + 1 < tmp)
				tmp = row[j - 1] + 1;
			row[j] = tmp;
			prev = cur;
		}
	}
	return (row[lb]);
}

/* Refuse keys of group g that are not in known. */
static int
check_keys(struct loadctx *lc, const config_setting_t *g, const char **known,
    const char *where)
{
	const config_setting_t *s;
	const char *name, *best;
	size_t d, bestd;
	int i, k;

	for (i = 0; (s = config_setting_get_elem(g, (unsigned)i)) != NULL;
	    i++) {
		name = config_setting_name(s);
		if (name == NULL)
			continue;
		for (k = 0; known[k] != NULL; k++)
			if (strcmp(known[k], name) == 0)
				break;
		if (known[k] != NULL)
			continue;
		best = NULL;
		bestd = 99;
		for (k = 0; known[k] != NULL; k++) {
			d = distance(name, known[k]);
			if (d < bestd) {
				bestd = d;
				best = known[k];
			}
		}
		if (best != NULL && bestd <= 3)
			return (errat(lc, s, "unknown key '%s' in %s (did you "
			    "mean '%s'?)", name, where, best));
		return (errat(lc, s, "unknown key '%s' in %s", name, where));
	}
	return (0);
}

static int
get_string(struct loadctx *lc, const config_setting_t *g, const char *key,
    char **out)
{
	const config_setting_t *s = config_setting_get_member(g, key);

	if (s == NULL)
		return (0);
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return (errat(lc, s, "%s must be a string, like %s = \"...\";",
		    key, key));
	free(*out);
	*out = strdup(config_setting_get_string(s));
	return (0);
}

#define NOT_RULES	(-1)	/* get_strlist() of a list that holds no rules */

/* The key of each kind of identity rule, by enum policy_kind. */
static const char *rule_keys[] = {
	"cert-allowed-cn", "cert-allowed-dns", "cert-allowed-uri",
	"cert-allowed-ou"
};

/* An identity rule (kind not NOT_RULES) must be one policy_rule_error()
 * takes. */
static int
add_item(struct loadctx *lc, const config_setting_t *e, const char *key,
    int kind, struct strlist *out)
{
	const char *v = config_setting_get_string(e), *why;

	if (kind != NOT_RULES &&
	    (why = policy_rule_error((enum policy_kind)kind, v)) != NULL)
		return (errat(lc, e, "%s: %s", key, why));
	if (strlist_add(out, v) == -1)
		return (errat(lc, e, "out of memory"));
	return (0);
}

static int
get_strlist(struct loadctx *lc, const config_setting_t *g, const char *key,
    int kind, struct strlist *out, int *present)
{
	const config_setting_t *s = config_setting_get_member(g, key), *e;
	int i;

	if (present != NULL)
		*present = s != NULL;
	if (s == NULL)
		return (0);
	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		strlist_free(out);
		return (add_item(lc, s, key, kind, out));
	}
	if (config_setting_type(s) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(s) != CONFIG_TYPE_LIST)
		return (errat(lc, s, "%s must be a list of strings, like %s "
		    "= [\"dm\"];", key, key));
	strlist_free(out);
	for (i = 0; (e = config_setting_get_elem(s, (unsigned)i)) != NULL;
	    i++) {
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return (errat(lc, e, "%s must be a list of strings",
			    key));
		if (add_item(lc, e, key, kind, out) == -1)
			return (-1);
	}
	return (0);
}

static int
get_long(struct loadctx *lc, const config_setting_t *g, const char *key,
    long min, long max, long *out)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	long long v;

	if (s == NULL)
		return (0);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return (errat(lc, s, "%s must be a whole number", key));
	v = config_setting_get_int64(s);
	if (v < min || v > max)
		return (errat(lc, s, "%s = %lld is out of range %ld..%ld", key,
		    v, min, max));
	*out = (long)v;
	return (0);
}

static int
get_bool(struct loadctx *lc, const config_setting_t *g, const char *key,
    int *out)
{
	const config_setting_t *s = config_setting_get_member(g, key);

	if (s == NULL)
		return (0);
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return (errat(lc, s, "%s must be true or false", key));
	*out = config_setting_get_bool(s);
	return (0);
}

/*
 * A duration: "10s", "500ms", "2m", or a whole number of seconds, at most
 * 365 days.  positive: 0 is refused (a timeout that expires at once).
 */
static int
get_duration(struct loadctx *lc, const config_setting_t *g, const char *key,
    int positive, long *ms)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	long v;

	if (s == NULL)
		return (0);
	if (config_setting_type(s) == CONFIG_TYPE_INT ||
	    config_setting_type(s) == CONFIG_TYPE_INT64) {
		long long n = config_setting_get_int64(s);
		if (n < 0 || n > DURATION_MAX_MS / 1000)
			return (errat(lc, s, "%s = %lld seconds is out of "
			    "range 0..%lld (365 days)", key, n,
			    DURATION_MAX_MS / 1000));
		v = (long)n * 1000;
	} else if (config_setting_type(s) != CONFIG_TYPE_STRING ||
	    parse_duration(config_setting_get_string(s), &v) == -1)
		return (errat(lc, s, "%s must be a duration: a number and a "
		    "unit ms, s, m or h, like \"10s\", \"500ms\" or \"1.5m\", "
		    "at most 365 days", key));
	if (positive && v == 0)
		return (errat(lc, s, "%s must be greater than zero (0 would "
		    "expire at once); write it like \"10s\"", key));
	*ms = v;
	return (0);
}

static void
strlist_copy(struct strlist *dst, const struct strlist *src)
{
	size_t i;

	strlist_free(dst);
	for (i = 0; i < src->sl_n; i++)
		strlist_add(dst, src->sl_v[i]);
}

static char *
xstrdup_or_null(const char *s)
{
	return (s ? strdup(s) : NULL);
}

/* Read a security group into sec (which holds the defaults already). */
static int
load_security(struct loadctx *lc, const config_setting_t *g,
    struct security_conf *sec)
{
	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return (errat(lc, g, "security must be a group: security = "
		    "{ ssl-ca = \"...\"; };"));
	if (check_keys(lc, g, security_keys, "security") == -1 ||
	    get_string(lc, g, "ssl-ca", &sec->ssl_ca) == -1 ||
	    get_string(lc, g, "ssl-cert", &sec->ssl_cert) == -1 ||
	    get_string(lc, g, "ssl-key", &sec->ssl_key) == -1 ||
	    get_string(lc, g, "server-name", &sec->server_name) == -1 ||
	    get_strlist(lc, g, rule_keys[POLICY_CN], POLICY_CN,
	    &sec->allowed_cn, NULL) == -1 ||
	    get_strlist(lc, g, rule_keys[POLICY_DNS], POLICY_DNS,
	    &sec->allowed_dns, NULL) == -1 ||
	    get_strlist(lc, g, rule_keys[POLICY_URI], POLICY_URI,
	    &sec->allowed_uri, NULL) == -1 ||
	    get_strlist(lc, g, rule_keys[POLICY_OU], POLICY_OU,
	    &sec->allowed_ou, NULL) == -1 ||
	    get_strlist(lc, g, "ssl-crl", NOT_RULES, &sec->ssl_crl, NULL) == -1 ||
	    get_bool(lc, g, "verify-client", &sec->verify_client) == -1)
		return (-1);
	for (size_t i = 0; i < sec->ssl_crl.sl_n; i++)
		if (sec->ssl_crl.sl_v[i][0] == '\0')
			return (errat(lc, config_setting_get_member(g,
			    "ssl-crl"), "ssl-crl: \"\" names no file; write "
			    "ssl-crl = []; for none"));
	/* An empty string clears an inherited file (a mysql route that
	 * presents no client certificate under a top level that has one). */
	if (sec->ssl_cert != NULL && sec->ssl_cert[0] == '\0') {
		free(sec->ssl_cert);
		sec->ssl_cert = NULL;
	}
	if (sec->ssl_key != NULL && sec->ssl_key[0] == '\0') {
		free(sec->ssl_key);
		sec->ssl_key = NULL;
	}
	return (0);
}

/* Read the route's kind and initialise rc for it.  0 or -1. */
static int
route_kind(struct loadctx *lc, const config_setting_t *g,
    struct route_conf *rc)
{
	char *kind = NULL;

	if (get_string(lc, g, "kind", &kind) == -1)
		return (-1);
	if (kind == NULL)
		return (errat(lc, g, "route without kind: add kind = "
		    "\"server\"; (or \"client\", \"mysql\")"));
	if (strcmp(kind, "server") == 0)
		route_conf_init(rc, ROUTE_SERVER);
	else if (strcmp(kind, "client") == 0)
		route_conf_init(rc, ROUTE_CLIENT);
	else if (strcmp(kind, "mysql") == 0)
		route_conf_init(rc, ROUTE_MYSQL);
	else {
		free(kind);
		return (errat(lc, config_setting_get_member(g, "kind"),
		    "kind must be \"server\", \"client\" or \"mysql\""));
	}
	free(kind);
	return (0);
}

/* A route's security starts from the top-level defaults, key by key. */
static void
inherit_security(const struct security_conf *def, struct security_conf *sec)
{
	sec->ssl_ca = xstrdup_or_null(def->ssl_ca);
	sec->ssl_cert = xstrdup_or_null(def->ssl_cert);
	sec->ssl_key = xstrdup_or_null(def->ssl_key);
	sec->server_name = xstrdup_or_null(def->server_name);
	sec->verify_client = def->verify_client;
	strlist_copy(&sec->allowed_cn, &def->allowed_cn);
	strlist_copy(&sec->allowed_dns, &def->allowed_dns);
	strlist_copy(&sec->allowed_uri, &def->allowed_uri);
	strlist_copy(&sec->allowed_ou, &def->allowed_ou);
	strlist_copy(&sec->ssl_crl, &def->ssl_crl);
}

/* What every route needs, and what its kind refuses.  0 or -1. */
static int
route_complete(struct loadctx *lc, const config_setting_t *g,
    const struct route_conf *rc, int alpn_present)
{
	const config_setting_t *s;

	if (rc->name == NULL)
		return (errat(lc, g, "route without name: add name = "
		    "\"...\"; (it names the route in logs and metrics)"));
	if (rc->listen == NULL)
		return (errat(lc, g, "route %s has no listen address: add "
		    "listen = \"0.0.0.0:8261\";", rc->name));
	if (rc->target == NULL)
		return (errat(lc, g, "route %s has no target: add target = "
		    "\"127.0.0.1:18261\";", rc->name));
	if (rc->sec.ssl_ca == NULL)
		return (errat(lc, g, "route %s has no ssl-ca: set it in the "
		    "route's or the top-level security group", rc->name));
	if (rc->kind != ROUTE_MYSQL && (rc->sec.ssl_cert == NULL ||
	    rc->sec.ssl_key == NULL))
		return (errat(lc, g, "route %s needs ssl-cert and ssl-key",
		    rc->name));
	if ((rc->sec.ssl_cert == NULL) != (rc->sec.ssl_key == NULL))
		return (errat(lc, g, "route %s: ssl-cert and ssl-key go "
		    "together", rc->name));
	if (rc->kind == ROUTE_MYSQL && alpn_present && rc->alpn.sl_n > 0)
		return (errat(lc, config_setting_get_member(g, "alpn"),
		    "alpn is not used on mysql routes; remove it"));
	if (rc->kind == ROUTE_SERVER && rc->sec.server_name != NULL &&
	    (s = config_setting_get_member(g, "security")) != NULL &&
	    config_setting_get_member(s, "server-name") != NULL)
		return (errat(lc, config_setting_get_member(s, "server-name"),
		    "server-name is for client and mysql routes"));
	return (0);
}

/*
 * One route group: its kind's defaults, then the top-level security, then
 * the route's own keys (its security group last), then the checks of
 * what the route as a whole needs.  0 or -1 (errat() said why).
 */
static int
load_route(struct loadctx *lc, const config_setting_t *g,
    struct route_conf *rc)
{
	const config_setting_t *s;
	int alpn_present;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP)
		return (errat(lc, g, "each route must be a group: "
		    "{ name = ...; kind = ...; listen = ...; target = ...; }"));
	if (check_keys(lc, g, route_keys, "a route") == -1 ||
	    route_kind(lc, g, rc) == -1)
		return (-1);
	rc->src_file = strdup(config_setting_source_file(g) ?
	    config_setting_source_file(g) : "?");
	rc->src_line = (int)config_setting_source_line(g);
	if (rc->kind != ROUTE_MYSQL) {
		strlist_add(&rc->alpn, "h2");
		strlist_add(&rc->alpn, "http/1.1");
	}
	inherit_security(lc->lc_defsec, &rc->sec);
	if (get_string(lc, g, "name", &rc->name) == -1 ||
	    get_string(lc, g, "listen", &rc->listen) == -1 ||
	    get_string(lc, g, "target", &rc->target) == -1 ||
	    get_strlist(lc, g, "alpn", NOT_RULES, &rc->alpn, &alpn_present) == -1 ||
	    get_long(lc, g, "max-conns", 0, 1000000, &rc->max_conns) == -1 ||
	    get_duration(lc, g, "connect-timeout", 1,
	    &rc->connect_timeout_ms) == -1 ||
	    get_duration(lc, g, "handshake-timeout", 1,
	    &rc->handshake_timeout_ms) == -1 ||
	    get_duration(lc, g, "idle-timeout", 0, &rc->idle_timeout_ms) ==
	    -1 ||
	    get_duration(lc, g, "close-timeout", 1, &rc->close_timeout_ms) ==
	    -1)
		return (-1);
	if ((s = config_setting_get_member(g, "security")) != NULL &&
	    load_security(lc, s, &rc->sec) == -1)
		return (-1);
	return (route_complete(lc, g, rc, alpn_present));
}

static int
load_routes(struct loadctx *lc, const config_setting_t *list)
{
	struct config *cf = lc->lc_cf;
	const config_setting_t *g;
	struct route_conf *v;
	size_t i, j;

	if (config_setting_type(list) != CONFIG_TYPE_LIST)
		return (errat(lc, list, "routes must be a list: routes = "
		    "( { ... }, { ... } );"));
	for (i = 0; (g = config_setting_get_elem(list, (unsigned)i)) != NULL;
	    i++) {
		v = realloc(cf->cf_routes, (cf->cf_nroutes + 1) * sizeof(*v));
		if (v == NULL)
			return (errat(lc, g, "out of memory"));
		cf->cf_routes = v;
		memset(&v[cf->cf_nroutes], 0, sizeof(*v));
		cf->cf_nroutes++;
		if (load_route(lc, g, &v[cf->cf_nroutes - 1]) == -1)
			return (-1);
		for (j = 0; j + 1 < cf->cf_nroutes; j++) {
			struct route_conf *a = &v[j], *b = &v[cf->cf_nroutes - 1];
			if (strcmp(a->name, b->name) == 0)
				return (errat(lc, g, "duplicate route name "
				    "'%s' (also at %s:%d)", b->name,
				    a->src_file, a->src_line));
			if (strcmp(a->listen, b->listen) == 0)
				return (errat(lc, g, "route %s listens on %s, "
				    "as route %s does (at %s:%d)", b->name,
				    b->listen, a->name, a->src_file,
				    a->src_line));
		}
	}
	return (0);
}

static int
read_file(config_t *c, const char *path, char *err, size_t errlen)
{
	config_init(c);
	if (config_read_file(c, path) == CONFIG_TRUE)
		return (0);
	if (config_error_type(c) == CONFIG_ERR_FILE_IO)
		snprintf(err, errlen, "%s: cannot read the config file",
		    path);
	else
		snprintf(err, errlen, "%s:%d: %s", config_error_file(c) ?
		    config_error_file(c) : path, config_error_line(c),
		    config_error_text(c));
	config_destroy(c);
	return (-1);
}

static int
name_cmp(const void *a, const void *b)
{
	return (strcmp(*(char * const *)a, *(char * const *)b));
}

/* Load the *.conf files of conf.d beside the main file, in name order. */
static int
load_confd(struct loadctx *lc, const char *path)
{
	char dirbuf[PATH_MAX], confd[PATH_MAX + 16], file[PATH_MAX * 2];
	char **names = NULL;
	size_t n = 0, i, len;
	struct dirent *de;
	config_t c;
	DIR *d;
	int rc = 0;

	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	snprintf(confd, sizeof(confd), "%s/conf.d", dirname(dirbuf));
	if ((d = opendir(confd)) == NULL)
		return (0);
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (len > 5 && de->d_name[0] != '.' &&
		    strcmp(de->d_name + len - 5, ".conf") == 0) {
			names = realloc(names, (n + 1) * sizeof(*names));
			names[n++] = strdup(de->d_name);
		}
	}
	closedir(d);
	/* qsort() must not be given the NULL of an empty folder. */
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n && rc == 0; i++) {
		const config_setting_t *root, *s;
		int k;

		snprintf(file, sizeof(file), "%s/%s", confd, names[i]);
		if (read_file(&c, file, lc->lc_err, lc->lc_errlen) == -1) {
			rc = -1;
			break;
		}
		root = config_root_setting(&c);
		for (k = 0; (s = config_setting_get_elem(root, (unsigned)k)) !=
		    NULL; k++)
			if (strcmp(config_setting_name(s), "routes") != 0) {
				rc = errat(lc, s, "a conf.d file may only "
				    "add routes; move '%s' to %s",
				    config_setting_name(s), path);
				break;
			}
		if (rc == 0 && (s = config_lookup(&c, "routes")) != NULL)
			rc = load_routes(lc, s);
		config_destroy(&c);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return (rc);
}

int
config_load(const char *path, struct config *cf, char *err, size_t errlen)
{
	struct security_conf defsec;
	struct loadctx lc;
	const config_setting_t *root, *s;
	config_t c;
	long workers = 0;
	int rc = -1;

	memset(cf, 0, sizeof(*cf));
	memset(&defsec, 0, sizeof(defsec));
	defsec.verify_client = 1;
	cf->cf_g.shutdown_timeout_ms = DEF_SHUTDOWN_TIMEOUT_MS;
	cf->cf_g.sandbox = 1;
	lc.lc_cf = cf;
	lc.lc_err = err;
	lc.lc_errlen = errlen;
	lc.lc_defsec = &defsec;
	if (read_file(&c, path, err, errlen) == -1)
		return (-1);
	root = config_root_setting(&c);
	if (check_keys(&lc, root, top_keys, "the top level") == -1 ||
	    get_string(&lc, root, "log-level", &cf->cf_g.log_level) == -1 ||
	    get_string(&lc, root, "log-format", &cf->cf_g.log_format) == -1 ||
	    get_string(&lc, root, "status", &cf->cf_g.status) == -1 ||
	    get_string(&lc, root, "user", &cf->cf_g.user) == -1 ||
	    get_string(&lc, root, "group", &cf->cf_g.group) == -1 ||
	    get_bool(&lc, root, "sandbox", &cf->cf_g.sandbox) == -1 ||
	    get_long(&lc, root, "workers", 0, 256, &workers) == -1 ||
	    get_duration(&lc, root, "shutdown-timeout", 0,
	    &cf->cf_g.shutdown_timeout_ms) == -1)
		goto out;
	cf->cf_g.workers = (int)workers;
	if ((cf->cf_g.user != NULL && cf->cf_g.user[0] == '\0') ||
	    (cf->cf_g.group != NULL && cf->cf_g.group[0] == '\0')) {
		errat(&lc, config_lookup(&c, cf->cf_g.user != NULL &&
		    cf->cf_g.user[0] == '\0' ? "user" : "group"), "user and "
		    "group name an account, like user = \"dmtls\"; remove "
		    "the key to keep the user dmtls starts as");
		goto out;
	}
	if (cf->cf_g.group != NULL && cf->cf_g.user == NULL) {
		errat(&lc, config_lookup(&c, "group"), "group needs user: "
		    "dmtls drops to user (and group) after binding");
		goto out;
	}
	/* Only check it: loading (a reload) must not change the running
	 * level; whoever uses the loaded config applies it. */
	if (cf->cf_g.log_level != NULL &&
	    !valid_log_level(cf->cf_g.log_level)) {
		errat(&lc, config_lookup(&c, "log-level"), "log-level must be "
		    "\"debug\", \"info\", \"warn\" or \"error\"");
		goto out;
	}
	if (cf->cf_g.log_format != NULL && strcmp(cf->cf_g.log_format,
	    "text") != 0 && strcmp(cf->cf_g.log_format, "json") != 0) {
		errat(&lc, config_lookup(&c, "log-format"), "log-format must "
		    "be \"text\" or \"json\"");
		goto out;
	}
	if (cf->cf_g.status != NULL) {
		struct addr a;
		char why[256];
		if (addr_parse(cf->cf_g.status, &a, why, sizeof(why)) == -1) {
			errat(&lc, config_lookup(&c, "status"), "status "
			    "\"%s\": %s", cf->cf_g.status, why);
			goto out;
		}
	}
	if ((s = config_lookup(&c, "security")) != NULL &&
	    load_security(&lc, s, &defsec) == -1)
		goto out;
	if ((s = config_lookup(&c, "routes")) != NULL &&
	    load_routes(&lc, s) == -1)
		goto out;
	if (load_confd(&lc, path) == -1)
		goto out;
	if (cf->cf_nroutes == 0) {
		snprintf(err, errlen, "%s:1: no routes: add routes = "
		    "( { name = ...; kind = ...; listen = ...; target = ...; "
		    "} );", path);
		goto out;
	}
	rc = 0;
out:
	free(defsec.ssl_ca);
	free(defsec.ssl_cert);
	free(defsec.ssl_key);
	free(defsec.server_name);
	strlist_free(&defsec.allowed_cn);
	strlist_free(&defsec.allowed_dns);
	strlist_free(&defsec.allowed_uri);
	strlist_free(&defsec.allowed_ou);
	strlist_free(&defsec.ssl_crl);
	config_destroy(&c);
	if (rc == -1)
		config_free(cf);
	return (rc);
}

void
config_free(struct config *cf)
{
	size_t i;

	for (i = 0; i < cf->cf_nroutes; i++)
		route_conf_free(&cf->cf_routes[i]);
	free(cf->cf_routes);
	free(cf->cf_g.status);
	free(cf->cf_g.log_level);
	free(cf->cf_g.log_format);
	free(cf->cf_g.user);
	free(cf->cf_g.group);
	memset(cf, 0, sizeof(*cf));
}

int
config_add_rules(enum policy_kind kind, const char *v,
    struct security_conf *sec, char *err, size_t errlen)
{
	struct strlist *lists[] = { [POLICY_CN] = &sec->allowed_cn,
	    [POLICY_DNS] = &sec->allowed_dns, [POLICY_URI] = &sec->allowed_uri,
	    [POLICY_OU] = &sec->allowed_ou };
	struct strlist *sl = lists[kind];
	const char *p = v, *comma, *why;
	char *item;
	size_t n;

	for (;;) {
		comma = strchr(p, ',');
		n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if ((item = strndup(p, n)) == NULL)
			goto nomem;
		if ((why = policy_rule_error(kind, item)) != NULL) {
			snprintf(err, errlen, "--%s \"%.64s%s\": %s",
			    rule_keys[kind], v, strlen(v) > 64 ? "..." : "",
			    why);
			free(item);
			return (-1);
		}
		if (strlist_add(sl, item) == -1) {
			free(item);
			goto nomem;
		}
		free(item);
		if (comma == NULL)
			return (0);
		p = comma + 1;
	}
nomem:
	snprintf(err, errlen, "--%s: out of memory", rule_keys[kind]);
	return (-1);
}
