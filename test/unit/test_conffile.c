/*
 * test_conffile: the config file loader (proxy/conffile.c, DESIGN 6): what
 * config_load() fills in, defaults, inheritance key by key, conf.d, and
 * every error naming FILE:LINE.  The files are written to a temporary
 * folder; certificate files are never read by the loader.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../proxy/conffile.h"
#include "unitfiles.h"

/* Load uf_dir/name (written from text first unless text is NULL). */
static int
load(const char *name, const char *text, struct config *cf, char *err,
    size_t errlen)
{
	const char *path = text != NULL ? uf_write(name, text) : uf_path(name);

	err[0] = '\0';
	return (config_load(path, cf, err, errlen));
}

/* The error of loading text as name must start with "PATH:LINE: " and
 * hold `want`. */
static void
fails_at(const char *name, const char *text, int line, const char *want)
{
	struct config cf;
	char err[1024], at[600];

	assert_int_equal(load(name, text, &cf, err, sizeof(err)), -1);
	snprintf(at, sizeof(at), "%s:%d: ", uf_path(name), line);
	if (strncmp(err, at, strlen(at)) != 0 || strstr(err, want) == NULL)
		fail_msg("wanted %s...%s, got %s", at, want, err);
	/* A failed load leaves nothing behind. */
	assert_int_equal(cf.cf_nroutes, 0);
	assert_null(cf.cf_routes);
	assert_null(cf.cf_g.log_level);
}

#define SEC \
	"security = {\n" \
	"  ssl-ca = \"/ca.pem\";\n" \
	"  ssl-cert = \"/dm.pem\";\n" \
	"  ssl-key = \"/dm-key.pem\";\n" \
	"  cert-allowed-cn = [\"dm\"];\n" \
	"};\n"			/* lines 1-6 */

static void
test_every_setting_is_read(void **state)
{
	struct config cf;
	struct route_conf *r;
	char err[1024];

	(void)state;
	assert_int_equal(load("full.conf",
	    "log-level = \"debug\";\n"
	    "log-format = \"json\";\n"
	    "workers = 3;\n"
	    "status = \"127.0.0.1:9261\";\n"
	    "shutdown-timeout = \"1.5s\";\n"
	    "security = { ssl-ca = \"/ca.pem\"; ssl-cert = \"/dm.pem\";\n"
	    "  ssl-key = \"/dm-key.pem\"; cert-allowed-cn = [\"dm\", \"dm2\"];\n"
	    "  cert-allowed-dns = [\"w1.dm\"]; cert-allowed-uri = [\"spiffe://x\"];\n"
	    "  cert-allowed-ou = [\"ops\"]; };\n"
	    "routes = (\n"
	    "  { name = \"api\"; kind = \"server\"; listen = \"0.0.0.0:8261\";\n"
	    "    target = \"127.0.0.1:18261\"; alpn = [\"h2\"]; max-conns = 7;\n"
	    "    connect-timeout = \"2s\"; handshake-timeout = \"500ms\";\n"
	    "    idle-timeout = 0; close-timeout = \"1m\";\n"
	    "    security = { cert-allowed-cn = [\"admin\"];\n"
	    "                 verify-client = false; }; },\n"
	    "  { name = \"out\"; kind = \"client\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"m1:8261\"; security = { server-name = \"m1\";\n"
	    "    ssl-ca = \"/other-ca.pem\"; }; },\n"
	    "  { name = \"db\"; kind = \"mysql\"; listen = \"127.0.0.1:3\";\n"
	    "    target = \"db1:3306\"; }\n"
	    ");\n", &cf, err, sizeof(err)), 0);
	assert_string_equal(cf.cf_g.log_level, "debug");
	assert_string_equal(cf.cf_g.log_format, "json");
	assert_int_equal(cf.cf_g.workers, 3);
	assert_string_equal(cf.cf_g.status, "127.0.0.1:9261");
	assert_int_equal(cf.cf_g.shutdown_timeout_ms, 1500);
	assert_int_equal(cf.cf_nroutes, 3);

	r = &cf.cf_routes[0];
	assert_string_equal(r->name, "api");
	assert_int_equal(r->kind, ROUTE_SERVER);
	assert_string_equal(r->listen, "0.0.0.0:8261");
	assert_string_equal(r->target, "127.0.0.1:18261");
	assert_int_equal(r->alpn.sl_n, 1);
	assert_string_equal(r->alpn.sl_v[0], "h2");
	assert_int_equal(r->max_conns, 7);
	assert_int_equal(r->connect_timeout_ms, 2000);
	assert_int_equal(r->handshake_timeout_ms, 500);
	assert_int_equal(r->idle_timeout_ms, 0);
	assert_int_equal(r->close_timeout_ms, 60000);
	assert_string_equal(r->src_file, uf_path("full.conf"));
	assert_int_equal(r->src_line, 11);
	/* Key by key: the route's list replaces the top level's, the
	 * files and the other lists are inherited. */
	assert_int_equal(r->sec.allowed_cn.sl_n, 1);
	assert_string_equal(r->sec.allowed_cn.sl_v[0], "admin");
	assert_string_equal(r->sec.allowed_dns.sl_v[0], "w1.dm");
	assert_string_equal(r->sec.allowed_uri.sl_v[0], "spiffe://x");
	assert_string_equal(r->sec.allowed_ou.sl_v[0], "ops");
	assert_string_equal(r->sec.ssl_ca, "/ca.pem");
	assert_string_equal(r->sec.ssl_cert, "/dm.pem");
	assert_int_equal(r->sec.verify_client, 0);

	r = &cf.cf_routes[1];
	assert_int_equal(r->kind, ROUTE_CLIENT);
	assert_string_equal(r->sec.server_name, "m1");
	assert_string_equal(r->sec.ssl_ca, "/other-ca.pem");
	assert_string_equal(r->sec.ssl_key, "/dm-key.pem");
	assert_int_equal(r->sec.allowed_cn.sl_n, 2);
	assert_int_equal(r->sec.verify_client, 1);
	assert_int_equal(r->alpn.sl_n, 2);	/* the default h2,http/1.1 */
	assert_string_equal(r->alpn.sl_v[1], "http/1.1");

	r = &cf.cf_routes[2];
	assert_int_equal(r->kind, ROUTE_MYSQL);
	assert_int_equal(r->alpn.sl_n, 0);	/* mysql routes have none */
	assert_string_equal(r->sec.ssl_cert, "/dm.pem");	/* inherited */
	config_free(&cf);
	assert_int_equal(cf.cf_nroutes, 0);
}

static void
test_defaults(void **state)
{
	struct config cf;
	struct route_conf *r;
	char err[1024];

	(void)state;
	assert_int_equal(load("min.conf", SEC
	    "routes = ( { name = \"x\"; kind = \"server\"; listen = \"127.0.0.1:1\";"
	    " target = \"127.0.0.1:2\"; } );\n", &cf, err, sizeof(err)), 0);
	assert_null(cf.cf_g.log_level);
	assert_null(cf.cf_g.log_format);
	assert_null(cf.cf_g.status);
	assert_int_equal(cf.cf_g.workers, 0);
	assert_int_equal(cf.cf_g.shutdown_timeout_ms, DEF_SHUTDOWN_TIMEOUT_MS);
	r = &cf.cf_routes[0];
	assert_int_equal(r->connect_timeout_ms, DEF_CONNECT_TIMEOUT_MS);
	assert_int_equal(r->handshake_timeout_ms, DEF_HANDSHAKE_TIMEOUT_MS);
	assert_int_equal(r->close_timeout_ms, DEF_CLOSE_TIMEOUT_MS);
	assert_int_equal(r->idle_timeout_ms, 0);
	assert_int_equal(r->max_conns, 0);
	assert_int_equal(r->reread, 1);
	assert_int_equal(r->sec.verify_client, 1);
	assert_null(r->sec.server_name);
	config_free(&cf);
}

static void
test_empty_values_clear_what_is_inherited(void **state)
{
	struct config cf;
	char err[1024];

	(void)state;
	/* An empty list clears the inherited one; "" drops an inherited
	 * client certificate on a mysql route. */
	assert_int_equal(load("clear.conf", SEC
	    "routes = (\n"
	    "  { name = \"open\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"127.0.0.1:2\"; security = { cert-allowed-cn = []; }; },\n"
	    "  { name = \"db\"; kind = \"mysql\"; listen = \"127.0.0.1:3\";\n"
	    "    target = \"127.0.0.1:4\";\n"
	    "    security = { ssl-cert = \"\"; ssl-key = \"\"; }; }\n"
	    ");\n", &cf, err, sizeof(err)), 0);
	assert_int_equal(cf.cf_routes[0].sec.allowed_cn.sl_n, 0);
	assert_null(cf.cf_routes[1].sec.ssl_cert);
	assert_null(cf.cf_routes[1].sec.ssl_key);
	assert_string_equal(cf.cf_routes[1].sec.ssl_ca, "/ca.pem");
	config_free(&cf);
	/* A server route cannot do without one. */
	fails_at("nocert.conf", SEC
	    "routes = (\n"
	    "  { name = \"s\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"127.0.0.1:2\";\n"
	    "    security = { ssl-cert = \"\"; ssl-key = \"\"; }; }\n"
	    ");\n", 8, "route s needs ssl-cert and ssl-key");
}

#define ROUTE(extra) \
	"routes = (\n" \
	"  { name = \"x\"; kind = \"server\";\n" \
	"    listen = \"127.0.0.1:1\";\n" \
	"    target = \"127.0.0.1:2\";\n" \
	extra \
	"  }\n" \
	");\n"			/* the group at line 8 after SEC, extra at 11 */

static void
test_errors_name_the_line(void **state)
{
	(void)state;
	fails_at("syntax.conf", "workers = ;\n", 1, "syntax error");
	fails_at("top.conf", "log-levl = \"info\";\n" SEC ROUTE(""), 1,
	    "unknown key 'log-levl' in the top level (did you mean "
	    "'log-level'?)");
	fails_at("route-key.conf", SEC ROUTE("    lisen = \"x\";\n"), 11,
	    "unknown key 'lisen' in a route (did you mean 'listen'?)");
	fails_at("sec-key.conf", SEC ROUTE("    security = { ssl_ca = \"/x\"; };\n"),
	    11, "unknown key 'ssl_ca' in security (did you mean 'ssl-ca'?)");
	fails_at("workers.conf", "workers = 257;\n" SEC ROUTE(""), 1,
	    "workers = 257 is out of range 0..256");
	fails_at("type.conf", "workers = \"two\";\n" SEC ROUTE(""), 1,
	    "workers must be a whole number");
	fails_at("level.conf", "log-level = \"loud\";\n" SEC ROUTE(""), 1,
	    "log-level must be \"debug\", \"info\", \"warn\" or \"error\"");
	fails_at("format.conf", "log-format = \"xml\";\n" SEC ROUTE(""), 1,
	    "log-format must be \"text\" or \"json\"");
	fails_at("status.conf", "status = \"nowhere\";\n" SEC ROUTE(""), 1,
	    "status \"nowhere\": ");
	fails_at("duration.conf", SEC ROUTE("    idle-timeout = \"10x\";\n"), 11,
	    "idle-timeout");
	fails_at("zero.conf", SEC ROUTE("    connect-timeout = 0;\n"), 11,
	    "greater than zero");
	fails_at("kind.conf", SEC
	    "routes = ( { name = \"x\"; kind = \"proxy\"; listen = \"a:1\";\n"
	    "  target = \"b:2\"; } );\n", 7,
	    "kind must be \"server\", \"client\" or \"mysql\"");
	fails_at("nokind.conf", SEC
	    "routes = ( { name = \"x\"; listen = \"a:1\"; target = \"b:2\"; } );\n",
	    7, "route without kind");
	fails_at("nolisten.conf", SEC
	    "routes = ( { name = \"x\"; kind = \"server\"; target = \"b:2\"; } );\n",
	    7, "route x has no listen address");
	fails_at("noca.conf",
	    "routes = ( { name = \"x\"; kind = \"mysql\"; listen = \"a:1\";\n"
	    "  target = \"b:2\"; } );\n", 1, "route x has no ssl-ca");
}

static void
test_route_rules(void **state)
{
	(void)state;
	fails_at("dupname.conf", SEC
	    "routes = (\n"
	    "  { name = \"x\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"b:2\"; },\n"
	    "  { name = \"x\"; kind = \"server\"; listen = \"127.0.0.1:3\";\n"
	    "    target = \"b:2\"; }\n"
	    ");\n", 10, "duplicate route name 'x' (also at ");
	fails_at("duplisten.conf", SEC
	    "routes = (\n"
	    "  { name = \"x\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"b:2\"; },\n"
	    "  { name = \"y\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "    target = \"b:2\"; }\n"
	    ");\n", 10, "route y listens on 127.0.0.1:1, as route x does");
	fails_at("mysqlalpn.conf", SEC
	    "routes = ( { name = \"db\"; kind = \"mysql\"; listen = \"a:1\";\n"
	    "  target = \"b:2\";\n"
	    "  alpn = [\"h2\"]; } );\n", 9,
	    "alpn is not used on mysql routes; remove it");
	fails_at("sni.conf", SEC ROUTE("    security = {\n"
	    "      server-name = \"m1\"; };\n"), 12,
	    "server-name is for client and mysql routes");
	fails_at("pair.conf",
	    "security = { ssl-ca = \"/ca.pem\"; };\n"
	    "routes = ( { name = \"db\"; kind = \"mysql\"; listen = \"a:1\";\n"
	    "  target = \"b:2\"; security = { ssl-cert = \"/c.pem\"; }; } );\n",
	    2, "route db: ssl-cert and ssl-key go together");
	fails_at("emptyrule.conf", SEC ROUTE(
	    "    security = { cert-allowed-ou = [\"\"]; };\n"), 11,
	    "cert-allowed-ou");
	fails_at("noroutes.conf", SEC, 1, "no routes");
}

static void
test_missing_file(void **state)
{
	struct config cf;
	char err[1024], want[600];

	(void)state;
	assert_int_equal(load("absent.conf", NULL, &cf, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot read the config file",
	    uf_path("absent.conf"));
	assert_string_equal(err, want);
}

static void
test_confd_adds_routes_in_name_order(void **state)
{
	struct config cf;
	char err[1024];
	const char *main_path;

	(void)state;
	uf_sh("mkdir -p %s/d1/conf.d", uf_dir);
	uf_write("d1/conf.d/20-b.conf", "routes = ( { name = \"b\"; "
	    "kind = \"server\"; listen = \"127.0.0.1:3\"; target = \"c:1\"; } );\n");
	uf_write("d1/conf.d/10-a.conf", "routes = ( { name = \"a\"; "
	    "kind = \"client\"; listen = \"127.0.0.1:2\"; target = \"c:1\"; } );\n");
	uf_write("d1/conf.d/.hidden.conf", "this is not read\n");
	uf_write("d1/conf.d/notes.txt", "nor is this\n");
	main_path = uf_write("d1/dmtls.conf", SEC ROUTE(""));
	assert_int_equal(config_load(main_path, &cf, err, sizeof(err)), 0);
	assert_int_equal(cf.cf_nroutes, 3);
	assert_string_equal(cf.cf_routes[0].name, "x");
	assert_string_equal(cf.cf_routes[1].name, "a");
	assert_string_equal(cf.cf_routes[2].name, "b");
	/* A drop-in inherits the main file's security group. */
	assert_string_equal(cf.cf_routes[2].sec.ssl_ca, "/ca.pem");
	assert_string_equal(cf.cf_routes[2].sec.allowed_cn.sl_v[0], "dm");
	assert_string_equal(cf.cf_routes[1].src_file,
	    uf_path("d1/conf.d/10-a.conf"));
	config_free(&cf);
}

/* A drop-in may add routes only, and route names span the files. */
static void
test_confd_only_routes(void **state)
{
	struct config cf;
	char err[1024], at[600];
	const char *main_path;

	(void)state;
	uf_sh("mkdir -p %s/d2/conf.d", uf_dir);
	uf_write("d2/conf.d/10-a.conf", "# more\nworkers = 2;\n");
	main_path = uf_write("d2/dmtls.conf", SEC ROUTE(""));
	assert_int_equal(config_load(main_path, &cf, err, sizeof(err)), -1);
	snprintf(at, sizeof(at), "%s:2: a conf.d file may only add routes; "
	    "move 'workers' to %s", uf_path("d2/conf.d/10-a.conf"), main_path);
	assert_string_equal(err, at);

	uf_write("d2/conf.d/10-a.conf", "routes = ( { name = \"x\"; "
	    "kind = \"server\"; listen = \"127.0.0.1:9\"; target = \"c:1\"; } );\n");
	assert_int_equal(config_load(main_path, &cf, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "duplicate route name 'x' (also at "));
	assert_non_null(strstr(err, main_path));
}

static int
setup(void **state)
{
	(void)state;
	return (uf_setup());
}

static int
teardown(void **state)
{
	(void)state;
	uf_teardown();
	return (0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_setting_is_read),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_values_clear_what_is_inherited),
		cmocka_unit_test(test_errors_name_the_line),
		cmocka_unit_test(test_route_rules),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_confd_adds_routes_in_name_order),
		cmocka_unit_test(test_confd_only_routes),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
