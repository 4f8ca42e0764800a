/*
 * probe.h: `dmtls probe ADDR` (DESIGN section 5): connect as a client
 * route would, print what the server showed and the verdict of each rule.
 */
#ifndef DMTLS_PROBE_H
#define DMTLS_PROBE_H

/*
 * probe_main(argc, argv): argv[0] is "probe".  Prints the report on stdout
 * and returns the exit status: 0 when the handshake and every given rule
 * pass, 1 when something fails (the report names the rule), 2 on a usage
 * error.  It sends no application data.
 */
int probe_main(int, char **);

#endif
