/*
 * test_cli: the command-line parser (proxy/cli.c, DESIGN 5) through
 * cli_route() and cli_config() in check mode, which parse, validate and
 * load a route without binding anything: flag spellings (--flag VALUE,
 * --flag=VALUE, one dash), what each kind requires, every usage error
 * (exit 2, one line naming the flag) and the summary line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "../../proxy/cli.h"
#include "../../proxy/log.h"
#include "unitfiles.h"

#define MAXARGS 40

/*
 * Run cli_route (config 0) or cli_config (config 1) in check mode, or
 * cli_config to run (config 2: only for a file that must be refused), on
 * the NULL-terminated words (copied: getopt permutes argv); uf_out and
 * uf_err hold what it printed.  Returns the exit status.
 */
static int
cli(int config, const char *first, ...)
{
	char *argv[MAXARGS + 1];
	const char *w;
	va_list ap;
	int argc = 0, rv;

	va_start(ap, first);
	for (w = first; w != NULL && argc < MAXARGS; w = va_arg(ap, const char *))
		argv[argc++] = strdup(w);
	va_end(ap);
	argv[argc] = NULL;
	uf_capture();
	rv = config ? cli_config(argc, argv, config == 1) : cli_route(argc, argv, 1);
	uf_release();
	log_setup("info", "text");
	while (argc > 0)
		free(argv[--argc]);
	return (rv);
}

#define ROUTE(...)	cli(0, __VA_ARGS__, (const char *)NULL)
#define CONFIG(...)	cli(1, __VA_ARGS__, (const char *)NULL)
#define REFUSED_RUN(...)	cli(2, __VA_ARGS__, (const char *)NULL)

static char ca[256], cert[256], key[256];

/* A valid server route's files: --ssl-ca CA --ssl-cert CERT --ssl-key KEY. */
#define FILES	"--ssl-ca", ca, "--ssl-cert", cert, "--ssl-key", key

/* The exit status must be want; else fail showing what was printed. */
static void
exits(int rv, int want)
{
	if (rv != want)
		fail_msg("exit %d, wanted %d; stdout:\n%s\nstderr:\n%s", rv, want,
		    uf_out, uf_err);
}

static void
starts(const char *text, const char *want)
{
	if (strncmp(text, want, strlen(want)) != 0)
		fail_msg("wanted it to start with %s, got %s", want, text);
}

/* A usage error: exit 2 and one stderr line "CMD: ..." holding want. */
static void
usage_error(int rv, const char *cmd, const char *want)
{
	char head[64];

	if (rv != 2)
		fail_msg("exit %d, wanted 2; stderr %s", rv, uf_err);
	snprintf(head, sizeof(head), "%s: ", cmd);
	starts(uf_err, head);
	if (strstr(uf_err, want) == NULL)
		fail_msg("stderr %s lacks %s", uf_err, want);
	assert_non_null(strchr(uf_err, '\n'));
	assert_int_equal(strchr(uf_err, '\n')[1], '\0');	/* one line */
	assert_string_equal(uf_out, "");
}

static void
test_summary_line(void **state)
{
	(void)state;
	exits(ROUTE("server", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", FILES, "--cert-allowed-cn", "dm"), 0);
	starts(uf_out, "server: server listen=127.0.0.1:1 target=127.0.0.1:2 "
	    "identity=\"cn=dm\" cert=\"CN=dm\" not_after=");
	assert_true(strstr(uf_out, " days_left=89\n") != NULL ||
	    strstr(uf_out, " days_left=90\n") != NULL);
	assert_null(strstr(uf_out, "warning:"));
}

static void
test_flag_spellings(void **state)
{
	char first[sizeof(uf_out)], ca_eq[300], key_eq[300];

	(void)state;
	exits(ROUTE("client", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", FILES, "--cert-allowed-cn", "a,b", "--cert-allowed-cn",
	    "c", "--name", "x"), 0);
	snprintf(first, sizeof(first), "%s", uf_out);
	starts(first, "x: client listen=127.0.0.1:1 target=127.0.0.1:2 "
	    "identity=\"cn=a|b|c\" cert=\"CN=dm\"");
	/* --flag=VALUE, -flag VALUE and -flag=VALUE mean the same. */
	snprintf(ca_eq, sizeof(ca_eq), "-ssl-ca=%s", ca);
	snprintf(key_eq, sizeof(key_eq), "--ssl-key=%s", key);
	exits(ROUTE("client", "--listen=127.0.0.1:1", "-target",
	    "127.0.0.1:2", ca_eq, "-ssl-cert", cert, key_eq,
	    "-cert-allowed-cn=a,b", "--cert-allowed-cn=c", "-name=x"), 0);
	assert_string_equal(uf_out, first);
}

static void
test_mysql_needs_no_certificate(void **state)
{
	(void)state;
	exits(ROUTE("mysql", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", "--ssl-ca", ca, "--cert-allowed-cn", "db"), 0);
	starts(uf_out, "mysql: mysql listen=127.0.0.1:1 target=127.0.0.1:2 "
	    "identity=\"cn=db\"\n");
	usage_error(ROUTE("mysql", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", "--ssl-ca", ca, "--alpn", "h2"), "dmtls check mysql",
	    "--alpn is not used on mysql routes");
	usage_error(ROUTE("mysql", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", "--ssl-ca", ca, "--ssl-cert", cert),
	    "dmtls check mysql", "--ssl-cert and --ssl-key go together");
}

static void
test_usage_errors(void **state)
{
	static const char *cmd = "dmtls check server";

	(void)state;
	usage_error(ROUTE("server", "--target", "127.0.0.1:2", FILES), cmd,
	    "--listen is required");
	usage_error(ROUTE("server", "--listen", "127.0.0.1:1", FILES), cmd,
	    "--target is required");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2",
	    "--ssl-cert", cert, "--ssl-key", key), cmd, "--ssl-ca is required");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2",
	    "--ssl-ca", ca), cmd, "--ssl-cert and --ssl-key are required");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--server-name", "m1"), cmd, "--server-name is for client and mysql");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--frob"), cmd, "unknown option --frob");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--workers"), cmd, "--workers needs a value");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "stray"), cmd, "unexpected argument stray");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--workers", "257"), cmd, "--workers 257: give a number from 0");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--max-conns", "-1"), cmd, "--max-conns -1: give a number from 0");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--idle-timeout", "5 s"), cmd, "--idle-timeout 5 s: not a duration");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--close-timeout", "0"), cmd, "--close-timeout 0: must be greater");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--cert-allowed-cn", "a,,b"), cmd, "--cert-allowed-cn \"a,,b\": ");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--log-level", "loud"), cmd, "--log-level loud: use debug, info");
	usage_error(ROUTE("server", "--listen", "a:1", "--target", "b:2", FILES,
	    "--log-format", "xml"), cmd, "--log-format xml: use text or json");
	exits(ROUTE("proxy", "--listen", "a:1"), 2);
	starts(uf_err, "dmtls: unknown route kind proxy; use server, client or "
	    "mysql\n");
}

static void
test_check_failures_exit_1(void **state)
{
	char missing[300];

	(void)state;
	snprintf(missing, sizeof(missing), "%s/none.pem", uf_dir);
	exits(ROUTE("server", "--listen", "127.0.0.1:1", "--target",
	    "127.0.0.1:2", "--ssl-ca", missing, "--ssl-cert", cert, "--ssl-key",
	    key, "--cert-allowed-cn", "dm"), 1);
	starts(uf_err, "dmtls check server: --ssl-ca ");
	assert_non_null(strstr(uf_err, missing));
	exits(ROUTE("server", "--listen", "127.0.0.1:99999",
	    "--target", "127.0.0.1:2", FILES), 1);
	assert_non_null(strstr(uf_err, "127.0.0.1:99999"));
}

static void
test_config_commands(void **state)
{
	char conf[4096];
	const char *path;

	(void)state;
	snprintf(conf, sizeof(conf),
	    "security = { ssl-ca = \"%s\"; ssl-cert = \"%s\"; ssl-key = \"%s\";\n"
	    "  cert-allowed-cn = [\"dm\"]; };\n"
	    "routes = ( { name = \"a\"; kind = \"server\"; listen = \"127.0.0.1:1\";\n"
	    "  target = \"127.0.0.1:2\"; },\n"
	    "  { name = \"b\"; kind = \"client\"; listen = \"127.0.0.1:3\";\n"
	    "  target = \"127.0.0.1:4\"; } );\n", ca, cert, key);
	path = uf_write("cli/dmtls.conf", conf);
	exits(CONFIG("check", "-c", path), 0);
	starts(uf_out, "a: server listen=127.0.0.1:1 ");
	assert_non_null(strstr(uf_out, "\nb: client listen=127.0.0.1:3 "));
	exits(CONFIG("check", "--config", path), 0);
	exits(CONFIG("check", "-config", path), 0);
	usage_error(CONFIG("check", "-c", path, "extra"), "dmtls check",
	    "unexpected argument extra; use -c FILE");

	path = uf_write("cli/broken.conf", "workers = 300;\n");
	exits(CONFIG("check", "-c", path), 1);
	starts(uf_err, "dmtls check: ");
	assert_non_null(strstr(uf_err, "broken.conf:1: workers = 300 is out of "
	    "range"));
	/* run refuses the same file with 2, before serving anything */
	usage_error(REFUSED_RUN("run", "-c", path), "dmtls run", "broken.conf:1: ");
}

static int
setup(void **state)
{
	(void)state;
	wolfSSL_Init();
	if (uf_setup() == -1)
		return (-1);
	uf_leaf("dm", "dm", 90);
	snprintf(ca, sizeof(ca), "%.200s/ca.pem", uf_dir);
	snprintf(cert, sizeof(cert), "%.200s/dm.pem", uf_dir);
	snprintf(key, sizeof(key), "%.200s/dm-key.pem", uf_dir);
	return (0);
}

static int
teardown(void **state)
{
	(void)state;
	uf_teardown();
	wolfSSL_Cleanup();
	return (0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_summary_line),
		cmocka_unit_test(test_flag_spellings),
		cmocka_unit_test(test_mysql_needs_no_certificate),
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_check_failures_exit_1),
		cmocka_unit_test(test_config_commands),
	};

	return (cmocka_run_group_tests(tests, setup, teardown));
}
