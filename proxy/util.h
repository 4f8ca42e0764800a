/*
 * util.h: small parsers, clocks and the error line of a command.
 */
#ifndef DMTLS_UTIL_H
#define DMTLS_UTIL_H

#include <stdint.h>

/* Exit statuses of every command (DESIGN 5); 0 is success. */
#define EXIT_RUNTIME	1
#define EXIT_USAGE	2

/* The longest duration parse_duration() takes: 365 days. */
#define DURATION_MAX_MS		(365LL * 86400 * 1000)

/*
 * parse_duration(s, ms): parse "10s", "500ms", "1.5m", "1h" or a bare number
 * of seconds (decimal digits, an optional fraction, no sign, exponent or
 * blank) into milliseconds, rounded to the nearest.  Returns 0, or -1 when s
 * is not a duration, exceeds DURATION_MAX_MS, or is not zero but rounds to
 * 0 ms; *ms is set only on success.
 */
int parse_duration(const char *, long *);

/* parse_long(s, min, max, v): a decimal integer within [min, max]; 0 or -1. */
int parse_long(const char *, long, long, long *);

/*
 * cmd_error(cmd, status, fmt, ...): print "CMD: message" and a newline to
 * stderr, the one-line error of a command ("dmtls probe: ..."); returns
 * status, for `return (cmd_error(...));`.
 */
int cmd_error(const char *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* now_ms(): CLOCK_MONOTONIC in milliseconds. */
int64_t now_ms(void);

#endif
