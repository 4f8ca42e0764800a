/*
 * cli.h: the route commands of DESIGN section 5 (`dmtls server|client|mysql`
 * and `dmtls check server|client|mysql`).
 */
#ifndef DMTLS_CLI_H
#define DMTLS_CLI_H

#include "util.h"	/* EXIT_RUNTIME, EXIT_USAGE */

/*
 * cli_route(argc, argv, check): argv[0] is the kind.  Runs the route until
 * it is stopped, or with check set validates it and prints a summary.
 * Returns the process exit status.
 */
int cli_route(int, char **, int);

/*
 * cli_config(argc, argv, check): `dmtls run [-c FILE]` and
 * `dmtls check [-c FILE]`; argv[0] is "run" or "check".
 */
int cli_config(int, char **, int);

#endif
