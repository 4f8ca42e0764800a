/*
 * main.c: dmtls, a TLS sidecar for TiDB Data Migration.
 */
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <event2/thread.h>

#include "certs.h"
#include "cli.h"
#include "probe.h"
#include "healthcheck.h"
#include "version.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: dmtls server --listen ADDR --target ADDR --ssl-ca F "
	    "--ssl-cert F --ssl-key F RULES [OPTIONS]\n"
	    "       dmtls client --listen ADDR --target ADDR --ssl-ca F "
	    "--ssl-cert F --ssl-key F RULES [--server-name NAME] "
	    "[OPTIONS]\n"
	    "       dmtls mysql --listen ADDR --target ADDR --ssl-ca F "
	    "[--ssl-cert F --ssl-key F] RULES [--server-name NAME] "
	    "[OPTIONS]\n"
	    "       dmtls run [-c FILE]\n"
	    "       dmtls check [-c FILE]\n"
	    "       dmtls check server|client|mysql ROUTE-FLAGS\n"
	    "       dmtls version\n"
	    "       dmtls certs init|issue DIR ...  (a test PKI; see dmtls "
	    "certs --help)\n"
	    "       dmtls probe ADDR [--ssl-ca F] [--ssl-cert F --ssl-key F] "
	    "[--server-name NAME] RULES [--alpn LIST] [--mysql]\n"
	    "       dmtls healthcheck [-c FILE | ADDR]\n"
	    "RULES: [--cert-allowed-cn CN]... [--cert-allowed-dns NAME]... "
	    "[--cert-allowed-uri URI]... [--cert-allowed-ou OU]...\n");
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return (EXIT_USAGE);
	}
	if (strcmp(argv[1], "version") == 0 ||
	    strcmp(argv[1], "--version") == 0) {
		version_print(stdout);
		return (0);
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return (0);
	}
	if (strcmp(argv[1], "healthcheck") == 0)
		return (healthcheck_main(argc - 1, argv + 1));
	evthread_use_pthreads();
	wolfSSL_Init();
	if (strcmp(argv[1], "check") == 0) {
		if (argc < 3 || argv[2][0] == '-')
			return (cli_config(argc - 1, argv + 1, 1));
		return (cli_route(argc - 2, argv + 2, 1));
	}
	if (strcmp(argv[1], "certs") == 0)
		return (certs_main(argc - 1, argv + 1));
	if (strcmp(argv[1], "probe") == 0)
		return (probe_main(argc - 1, argv + 1));
	if (strcmp(argv[1], "run") == 0)
		return (cli_config(argc - 1, argv + 1, 0));
	if (strcmp(argv[1], "server") == 0 || strcmp(argv[1], "client") == 0 ||
	    strcmp(argv[1], "mysql") == 0)
		return (cli_route(argc - 1, argv + 1, 0));
	fprintf(stderr, "dmtls: unknown command %s\n", argv[1]);
	usage(stderr);
	return (EXIT_USAGE);
}
