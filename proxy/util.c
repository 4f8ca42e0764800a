/*
 * util.c: small parsers, clocks and the error line of a command.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static int
is_digit(char c)
{
	return (c >= '0' && c <= '9');
}

/*
 * The grammar is DIGITS [ "." DIGITS ] [ "ms" | "s" | "m" | "h" ], checked
 * byte by byte and computed in integers: strtod() would also take "nan",
 * "inf", hex, exponents, signs and leading blanks, and a NaN passes every
 * range check.  Every intermediate value stays below 2^40.
 */
int
parse_duration(const char *s, long *ms)
{
	const char *p = s;
	int64_t ip = 0, frac = 0, den = 1, mult, v;
	int nonzero = 0;

	if (s == NULL || !is_digit(*p))
		return (-1);
	for (; is_digit(*p); p++) {
		if (ip > DURATION_MAX_MS)
			return (-1);
		ip = ip * 10 + (*p - '0');
	}
	if (*p == '.') {
		if (!is_digit(*++p))
			return (-1);
		/* Digits past the ninth cannot change the milliseconds. */
		for (; is_digit(*p); p++) {
			nonzero |= *p != '0';
			if (den < 1000000000) {
				frac = frac * 10 + (*p - '0');
				den *= 10;
			}
		}
	}
	if (*p == '\0' || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else
		return (-1);
	if (ip > DURATION_MAX_MS / mult)
		return (-1);
	v = ip * mult + (frac * mult + den / 2) / den;
	if (v > DURATION_MAX_MS)
		return (-1);
	/* Not zero, yet below the millisecond timers count in. */
	if (v == 0 && (ip != 0 || nonzero))
		return (-1);
	*ms = (long)v;
	return (0);
}

int
parse_long(const char *s, long min, long max, long *v)
{
	char *end;
	long n;

	if (s == NULL || *s == '\0')
		return (-1);
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || n < min || n > max)
		return (-1);
	*v = n;
	return (0);
}

int
cmd_error(const char *cmd, int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return (status);
}

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
