/*
 * healthcheck.h: `dmtls healthcheck [-c FILE | ADDR]` (DESIGN section 5),
 * a container HEALTHCHECK that asks the status listener's /healthz.
 */
#ifndef DMTLS_HEALTHCHECK_H
#define DMTLS_HEALTHCHECK_H

/*
 * healthcheck_main(argc, argv): argv[0] is "healthcheck".  GETs /healthz
 * from ADDR, or from the `status` address of the config FILE (default
 * /etc/dmtls/dmtls.conf).  Returns the exit status: 0 on a 200 answer, 1
 * otherwise (the reasons printed on stderr), 2 on usage errors.
 */
int healthcheck_main(int, char **);

#endif
