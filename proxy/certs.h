/*
 * certs.h: `dmtls certs init` and `dmtls certs issue` (DESIGN section 5):
 * a test PKI made with wolfSSL's certificate generation, no openssl.
 */
#ifndef DMTLS_CERTS_H
#define DMTLS_CERTS_H

/*
 * certs_main(argc, argv): argv[0] is "certs", argv[1] "init" or "issue".
 * Writes the files, prints what it wrote, and returns the exit status:
 * 0 done, 1 a file exists or cannot be written (nothing is left behind),
 * 2 a usage error.
 */
int certs_main(int, char **);

#endif
