/*
 * version.h: what `dmtls version` reports.
 */
#ifndef DMTLS_VERSION_H
#define DMTLS_VERSION_H

#include <stdio.h>

/* version_print(f): the `dmtls version` text. */
void version_print(FILE *);

/* aes_asm_built(): 1 when the linked wolfSSL has AES assembly. */
int aes_asm_built(void);

/* aes_asm_in_use(): 1 when it is built in and this CPU can run it. */
int aes_asm_in_use(void);

#endif
