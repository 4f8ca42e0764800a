/*
 * util.h: small parsers and clocks.
 */
#ifndef DMTLS_UTIL_H
#define DMTLS_UTIL_H

#include <stdint.h>

/*
 * parse_duration(s, ms): parse "10s", "500ms", "2m", "1h" or a bare number of
 * seconds into milliseconds.  Returns 0, or -1 when s is not a duration.
 */
int parse_duration(const char *, long *);

/* parse_long(s, min, max, v): a decimal integer within [min, max]; 0 or -1. */
int parse_long(const char *, long, long, long *);

/* now_ms(): CLOCK_MONOTONIC in milliseconds. */
int64_t now_ms(void);

#endif
