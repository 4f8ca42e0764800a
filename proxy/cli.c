/*
 * cli.c: command-line routes.  Long options also work with one dash
 * (`-ssl-ca`), as DM's Go flags do.
 */
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../policy/certset.h"
#include "../policy/crl.h"
#include "../policy/policy.h"
#include "addr.h"
#include "cli.h"
#include "conf.h"
#include "conffile.h"
#include "daemon.h"
#include "log.h"
#include "route.h"
#include "util.h"

enum {
	O_ALLOWED = CONFIG_O_ALLOWED,	/* + enum policy_kind */
	O_LISTEN = 256, O_TARGET, O_CA, O_CERT, O_KEY,
	O_SERVER_NAME, O_ALPN, O_STATUS, O_WORKERS, O_MAX_CONNS,
	O_CONNECT_TO, O_HANDSHAKE_TO, O_IDLE_TO, O_CLOSE_TO, O_SHUTDOWN_TO,
	O_LOG_LEVEL, O_LOG_FORMAT, O_NAME, O_NO_REREAD, O_USER, O_GROUP,
	O_NO_SANDBOX, O_HELP, O_CRL
};

static const struct option opts[] = {
	{ "listen",		required_argument, NULL, O_LISTEN },
	{ "target",		required_argument, NULL, O_TARGET },
	{ "ssl-ca",		required_argument, NULL, O_CA },
	{ "ssl-cert",		required_argument, NULL, O_CERT },
	{ "ssl-key",		required_argument, NULL, O_KEY },
	{ "cert-allowed-cn",	required_argument, NULL, O_ALLOWED + POLICY_CN },
	{ "cert-allowed-dns",	required_argument, NULL, O_ALLOWED + POLICY_DNS },
	{ "cert-allowed-uri",	required_argument, NULL, O_ALLOWED + POLICY_URI },
	{ "cert-allowed-ou",	required_argument, NULL, O_ALLOWED + POLICY_OU },
	{ "server-name",	required_argument, NULL, O_SERVER_NAME },
	{ "alpn",		required_argument, NULL, O_ALPN },
	{ "status",		required_argument, NULL, O_STATUS },
	{ "workers",		required_argument, NULL, O_WORKERS },
	{ "max-conns",		required_argument, NULL, O_MAX_CONNS },
	{ "connect-timeout",	required_argument, NULL, O_CONNECT_TO },
	{ "handshake-timeout",	required_argument, NULL, O_HANDSHAKE_TO },
	{ "idle-timeout",	required_argument, NULL, O_IDLE_TO },
	{ "close-timeout",	required_argument, NULL, O_CLOSE_TO },
	{ "shutdown-timeout",	required_argument, NULL, O_SHUTDOWN_TO },
	{ "log-level",		required_argument, NULL, O_LOG_LEVEL },
	{ "log-format",		required_argument, NULL, O_LOG_FORMAT },
	{ "name",		required_argument, NULL, O_NAME },
	{ "no-cert-reread",	no_argument,	   NULL, O_NO_REREAD },
	{ "user",		required_argument, NULL, O_USER },
	{ "group",		required_argument, NULL, O_GROUP },
	{ "no-sandbox",		no_argument,	   NULL, O_NO_SANDBOX },
	{ "help",		no_argument,	   NULL, O_HELP },
	{ "ssl-crl",		required_argument, NULL, O_CRL },
	{ NULL, 0, NULL, 0 }
};

static const char *cmd;		/* "dmtls server", for messages */

#define PARSE_HELP	(-1)	/* parse(): --help printed, exit 0 */

/* "dmtls server: message" on stderr; returns EXIT_USAGE. */
#define usage_error(...)	cmd_error(cmd, EXIT_USAGE, __VA_ARGS__)

static void
usage(FILE *f, const char *kind)
{
	fprintf(f, "usage: dmtls %s --listen ADDR --target ADDR --ssl-ca FILE "
	    "%s[--cert-allowed-cn CN]... [--cert-allowed-dns NAME]... "
	    "[--cert-allowed-uri URI]... [--cert-allowed-ou OU]...%s "
	    "[OPTIONS]\n", kind,
	    strcmp(kind, "mysql") == 0 ? "[--ssl-cert FILE --ssl-key FILE] " :
	    "--ssl-cert FILE --ssl-key FILE ",
	    strcmp(kind, "server") == 0 ? "" : " [--server-name NAME]");
	fprintf(f, "a peer is accepted when any rule matches its leaf: the CN, "
	    "a DNS or URI SAN, or any OU, compared whole and exactly; each "
	    "rule flag repeats or takes a comma list\n");
	fprintf(f, "options: %s--status ADDR --workers N --max-conns N ",
	    strcmp(kind, "mysql") == 0 ? "" : "--alpn LIST ");
	fprintf(f, "--connect-timeout D --handshake-timeout D --idle-timeout D "
	    "--close-timeout D --shutdown-timeout D --log-level L "
	    "--log-format text|json --name NAME --no-cert-reread --user USER "
	    "--group GROUP --no-sandbox --ssl-crl FILE...\n");
}

/* positive: 0 is refused (a timeout that expires at once). */
static int
set_duration(const char *flag, const char *v, int positive, long *ms)
{
	long n;

	if (parse_duration(v, &n) == -1)
		return (usage_error("--%s %s: not a duration; write a number "
		    "and a unit ms, s, m or h, like 10s, 500ms or 1.5m, at "
		    "most 365 days", flag, v));
	if (positive && n == 0)
		return (usage_error("--%s %s: must be greater than zero (0 "
		    "would expire at once); write it like 10s", flag, v));
	*ms = n;
	return (0);
}

/* The string a flag sets (a later one replaces it), or NULL. */
static char **
str_flag(int ch, struct route_conf *rc, struct global_conf *g)
{
	switch (ch) {
	case O_LISTEN:		return (&rc->listen);
	case O_TARGET:		return (&rc->target);
	case O_CA:		return (&rc->sec.ssl_ca);
	case O_CERT:		return (&rc->sec.ssl_cert);
	case O_KEY:		return (&rc->sec.ssl_key);
	case O_SERVER_NAME:	return (&rc->sec.server_name);
	case O_STATUS:		return (&g->status);
	case O_NAME:		return (&rc->name);
	case O_USER:		return (&g->user);
	case O_GROUP:		return (&g->group);
	default:		return (NULL);
	}
}

/* Set the duration a flag sets.  1 done, 0 not a duration flag, or the
 * exit status of a bad value (> 1). */
static int
duration_flag(int ch, const char *v, struct route_conf *rc,
    struct global_conf *g)
{
	int rv;

	switch (ch) {
	case O_CONNECT_TO:
		rv = set_duration("connect-timeout", v, 1,
		    &rc->connect_timeout_ms);
		break;
	case O_HANDSHAKE_TO:
		rv = set_duration("handshake-timeout", v, 1,
		    &rc->handshake_timeout_ms);
		break;
	case O_IDLE_TO:
		rv = set_duration("idle-timeout", v, 0, &rc->idle_timeout_ms);
		break;
	case O_CLOSE_TO:
		rv = set_duration("close-timeout", v, 1, &rc->close_timeout_ms);
		break;
	case O_SHUTDOWN_TO:
		rv = set_duration("shutdown-timeout", v, 0,
		    &g->shutdown_timeout_ms);
		break;
	default:
		return (0);
	}
	return (rv == 0 ? 1 : rv);
}

/*
 * Parse argv into rc and g.  Each flag sets one field (strings and
 * durations through str_flag and duration_flag), checking its value;
 * whether the flags fit together is validate()'s job.  0, an exit
 * status, or PARSE_HELP after printing --help (the caller frees and exits 0).
 */
static int
parse(int argc, char **argv, struct route_conf *rc, struct global_conf *g)
{
	char **sp, err[256];
	long v;
	int ch, rv, alpn_set = 0;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long_only(argc, argv, ":", opts, NULL)) != -1) {
		if ((sp = str_flag(ch, rc, g)) != NULL) {
			free(*sp);
			*sp = strdup(optarg);
			continue;
		}
		if ((rv = duration_flag(ch, optarg, rc, g)) == 1)
			continue;
		if (rv != 0)
			return (rv);
		if (ch >= O_ALLOWED && ch <= O_ALLOWED + POLICY_OU) {
			if (config_add_rules((enum policy_kind)(ch - O_ALLOWED),
			    optarg, &rc->sec, err, sizeof(err)) == -1)
				return (usage_error("%s", err));
			continue;
		}
		switch (ch) {
		case O_CRL:	/* repeatable: one file each */
			if (optarg[0] == '\0')
				return (usage_error("--ssl-crl: give a file"));
			if (strlist_add(&rc->sec.ssl_crl, optarg) == -1)
				return (usage_error("out of memory"));
			break;
		case O_ALPN:
			if (!alpn_set)
				strlist_free(&rc->alpn);
			alpn_set = 1;
			strlist_add_csv(&rc->alpn, optarg);
			break;
		case O_WORKERS:
			if (parse_long(optarg, 0, 256, &v) == -1)
				return (usage_error("--workers %s: give a "
				    "number from 0 (one per CPU) to 256",
				    optarg));
			g->workers = (int)v;
			break;
		case O_MAX_CONNS:
			if (parse_long(optarg, 0, 1000000, &v) == -1)
				return (usage_error("--max-conns %s: give a "
				    "number from 0 (no limit) to 1000000",
				    optarg));
			rc->max_conns = v;
			break;
		case O_LOG_LEVEL:
			if (log_setup(optarg, NULL) == -1)
				return (usage_error("--log-level %s: use "
				    "debug, info, warn or error", optarg));
			break;
		case O_LOG_FORMAT:
			if (log_setup(NULL, optarg) == -1)
				return (usage_error("--log-format %s: use "
				    "text or json", optarg));
			break;
		case O_NO_REREAD:
			rc->reread = 0;
			break;
		case O_NO_SANDBOX:
			g->sandbox = 0;
			break;
		case O_HELP:
			usage(stdout, route_kind_name(rc->kind));
			return (PARSE_HELP);
		case ':':
			return (usage_error("%s needs a value",
			    argv[optind - 1]));
		default:
			return (usage_error("unknown option %s; see "
			    "dmtls %s --help", argv[optind - 1],
			    route_kind_name(rc->kind)));
		}
	}
	if (optind < argc)
		return (usage_error("unexpected argument %s", argv[optind]));
	if (g->group != NULL && g->user == NULL)
		return (usage_error("--group needs --user: dmtls drops to that "
		    "user (and group) after binding"));
	return (0);
}

/* Check that the flags a kind needs are there.  0 or an exit status. */
static int
validate(struct route_conf *rc)
{
	if (rc->listen == NULL)
		return (usage_error("--listen is required (for example "
		    "--listen 0.0.0.0:8261)"));
	if (rc->target == NULL)
		return (usage_error("--target is required (for example "
		    "--target 127.0.0.1:18261)"));
	if (rc->sec.ssl_ca == NULL)
		return (usage_error("--ssl-ca is required: the CA file that "
		    "signs the peer's certificate"));
	if (rc->kind != ROUTE_MYSQL && (rc->sec.ssl_cert == NULL ||
	    rc->sec.ssl_key == NULL))
		return (usage_error("--ssl-cert and --ssl-key are required: "
		    "the certificate and key this side presents"));
	if ((rc->sec.ssl_cert == NULL) != (rc->sec.ssl_key == NULL))
		return (usage_error("--ssl-cert and --ssl-key go together"));
	if (rc->kind == ROUTE_MYSQL && rc->alpn.sl_n > 0)
		return (usage_error("--alpn is not used on mysql routes"));
	if (rc->kind == ROUTE_SERVER && rc->sec.server_name != NULL)
		return (usage_error("--server-name is for client and mysql "
		    "routes; a server route checks the client with "
		    "--cert-allowed-cn"));
	if (rc->name == NULL)
		rc->name = strdup(route_kind_name(rc->kind));
	return (0);
}

/* `dmtls check`: a line per CRL, a warning within 7 days of nextUpdate. */
static void
print_crls(const struct route_conf *rc, const struct certset *cs, time_t now)
{
	const struct crl_info *ci;
	char when[32];
	struct tm tm;
	int k, n = certset_crls(cs, &ci);

	for (k = 0; k < n; k++) {
		const char *file = rc->sec.ssl_crl.sl_v[ci[k].ci_file];

		gmtime_r(&ci[k].ci_next_update, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		printf("%s: crl %s issuer=\"%s\" entries=%d next_update=%s%s\n",
		    rc->name, file, ci[k].ci_issuer, ci[k].ci_entries,
		    ci[k].ci_next_update ? when : "none",
		    ci[k].ci_next_update && ci[k].ci_next_update <= now ?
		    " (EXPIRED)" : "");
		if (ci[k].ci_next_update != 0 && ci[k].ci_next_update <= now)
			printf("warning: %s: ssl-crl %s is past its nextUpdate: "
			    "peers of %s are refused until it is renewed\n",
			    rc->name, file, ci[k].ci_issuer);
		else if (ci[k].ci_next_update != 0 &&
		    ci[k].ci_next_update - now < 7 * 86400)
			printf("warning: %s: ssl-crl %s reaches its nextUpdate "
			    "within 7 days (%s): renew it before, or peers of "
			    "%s are refused\n", rc->name, file, when,
			    ci[k].ci_issuer);
	}
}

/* One line per route for `dmtls check`; 0 when it had no warning. */
static void
print_summary(struct route_rt *rt)
{
	struct route_conf *rc = rt->rt_conf;
	struct certset *cs = certsrc_current(rt->rt_certs);
	char rules[512], when[32];
	time_t na = certset_not_after(cs), now = time(NULL);
	struct tm tm;
	long days;

	policy_describe(&rt->rt_rules, rules, sizeof(rules));
	printf("%s: %s listen=%s target=%s identity=\"%s\"", rc->name,
	    route_kind_name(rc->kind), rc->listen, rc->target, rules);
	if (certset_subject(cs)[0] != '\0') {
		gmtime_r(&na, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		days = (long)((na - now) / 86400);
		printf(" cert=\"%s\" not_after=%s days_left=%ld",
		    certset_subject(cs), when, days);
		if (na < now)
			printf(" (EXPIRED)");
	}
	printf("\n");
	if (certset_subject(cs)[0] != '\0' && na - now < 30 * 86400)
		printf("warning: %s: ssl-cert %s expires within 30 days\n",
		    rc->name, rc->sec.ssl_cert);
	if (!certset_chains(cs))
		printf("warning: %s: ssl-cert %s does not chain to ssl-ca %s; "
		    "peers must trust its issuer some other way\n", rc->name,
		    rc->sec.ssl_cert, rc->sec.ssl_ca);
	print_crls(rc, cs, now);
	if (policy_empty(&rt->rt_rules))
		printf("warning: %s: accepts any certificate signed by %s; "
		    "set cert-allowed-cn to limit it\n", rc->name,
		    rc->sec.ssl_ca);
	/* Looked up per connection: one that fails now is no error. */
	if (rt->rt_target.a_name) {
		struct addrinfo *res;
		char why[300];

		if (addr_lookup(rt->rt_target.a_host, rt->rt_target.a_port,
		    &res, why, sizeof(why)) == -1)
			printf("warning: %s: target %s: %s; its connections "
			    "fail until the name resolves\n", rc->name,
			    rc->target, why);
		else
			freeaddrinfo(res);
	}
	certset_release(cs);
}

static int
nworkers(const struct global_conf *g)
{
	int n = g->workers > 0 ? g->workers :
	    (int)sysconf(_SC_NPROCESSORS_ONLN);

	return (n < 1 ? 1 : n);
}

/* Serve the routes in rcs (moved out) until stopped; the exit status. */
static int
serve(struct daemon *d, struct route_conf *rcs, size_t n, const char *who)
{
	char err[1024];
	size_t i;
	int rv;

	d->d_nworkers = nworkers(&d->d_g);
	if (daemon_build(d, rcs, n, NULL, &d->d_routes, err, sizeof(err)) ==
	    -1) {
		fprintf(stderr, "%s: %s\n", who, err);
		return (EXIT_USAGE);
	}
	for (i = 0; i < d->d_routes.rs_n; i++) {
		struct route_conf *rc = d->d_routes.rs_v[i]->rt_conf;
		log_msg(LOG_INFO, "start", "route %s: %s %s -> %s", rc->name,
		    route_kind_name(rc->kind), rc->listen, rc->target);
	}
	if ((d->d_workers = calloc((size_t)d->d_nworkers,
	    sizeof(*d->d_workers))) == NULL)
		return (EXIT_RUNTIME);
	rv = daemon_run(d);
	free(d->d_workers);
	return (rv);
}

int
cli_route(int argc, char **argv, int check)
{
	static char cmdbuf[64];
	struct route_conf *rc;
	struct route_rt *rt;
	struct daemon d;
	char err[1024];
	int rv;
	enum route_kind kind;

	if (strcmp(argv[0], "server") == 0)
		kind = ROUTE_SERVER;
	else if (strcmp(argv[0], "client") == 0)
		kind = ROUTE_CLIENT;
	else if (strcmp(argv[0], "mysql") == 0)
		kind = ROUTE_MYSQL;
	else {
		fprintf(stderr, "dmtls: unknown route kind %s; use server, "
		    "client or mysql\n", argv[0]);
		return (EXIT_USAGE);
	}
	snprintf(cmdbuf, sizeof(cmdbuf), "dmtls %s%s", check ? "check " : "",
	    argv[0]);
	cmd = cmdbuf;
	if ((rc = malloc(sizeof(*rc))) == NULL)
		return (EXIT_RUNTIME);
	route_conf_init(rc, kind);
	if (kind != ROUTE_MYSQL) {
		strlist_add(&rc->alpn, "h2");
		strlist_add(&rc->alpn, "http/1.1");
	}
	memset(&d, 0, sizeof(d));
	d.d_g.shutdown_timeout_ms = DEF_SHUTDOWN_TIMEOUT_MS;
	d.d_g.sandbox = 1;
	if ((rv = parse(argc, argv, rc, &d.d_g)) != 0 ||
	    (rv = validate(rc)) != 0) {
		route_conf_free(rc);
		free(rc);
		if (rv == PARSE_HELP)
			rv = 0;
		goto out;
	}
	if (check) {
		/* Validate without binding anything. */
		if ((rt = route_new(rc, err, sizeof(err))) == NULL) {
			fprintf(stderr, "%s: --%s\n", cmd, err);
			rv = EXIT_RUNTIME;
			goto out;
		}
		print_summary(rt);
		route_free(rt);
		rv = 0;
		goto out;
	}
	rv = serve(&d, rc, 1, cmd);
	free(rc);
out:
	free(d.d_g.status);
	free(d.d_g.user);
	free(d.d_g.group);
	return (rv);
}

/* Parse "-c FILE" (or --config FILE); 0 or an exit status. */
static int
config_arg(int argc, char **argv, const char **path)
{
	int i;

	*path = CONFIG_DEFAULT_PATH;
	for (i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-c") == 0 ||
		    strcmp(argv[i], "--config") == 0 ||
		    strcmp(argv[i], "-config") == 0) && i + 1 < argc)
			*path = argv[++i];
		else
			return (usage_error("unexpected argument %s; use -c "
			    "FILE", argv[i]));
	}
	return (0);
}

int
cli_config(int argc, char **argv, int check)
{
	struct config cf;
	struct daemon d;
	const char *path;
	char err[1024];
	size_t i;
	int rv, bad = 0;

	cmd = check ? "dmtls check" : "dmtls run";
	if ((rv = config_arg(argc, argv, &path)) != 0)
		return (rv);
	if (config_load(path, &cf, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s\n", cmd, err);
		return (check ? EXIT_RUNTIME : EXIT_USAGE);
	}
	memset(&d, 0, sizeof(d));
	if (check) {
		for (i = 0; i < cf.cf_nroutes; i++) {
			struct route_conf *rc = malloc(sizeof(*rc));
			struct route_rt *rt;
			char at[512];

			if (rc == NULL)
				return (EXIT_RUNTIME);
			*rc = cf.cf_routes[i];
			memset(&cf.cf_routes[i], 0, sizeof(cf.cf_routes[i]));
			snprintf(at, sizeof(at), "%s:%d: route %s", rc->src_file,
			    rc->src_line, rc->name);
			if ((rt = route_new(rc, err, sizeof(err))) == NULL) {
				printf("%s: %s\n", at, err);
				bad = 1;
				continue;
			}
			print_summary(rt);
			route_free(rt);
		}
		config_free(&cf);
		return (bad ? EXIT_RUNTIME : 0);
	}
	d.d_g = cf.cf_g;
	memset(&cf.cf_g, 0, sizeof(cf.cf_g));
	if ((d.d_config = realpath(path, NULL)) == NULL)
		d.d_config = strdup(path);
	log_setup(d.d_g.log_level, d.d_g.log_format);
	rv = serve(&d, cf.cf_routes, cf.cf_nroutes, cmd);
	config_free(&cf);
	free(d.d_config);
	free(d.d_g.status);
	free(d.d_g.log_level);
	free(d.d_g.log_format);
	free(d.d_g.user);
	free(d.d_g.group);
	return (rv);
}
