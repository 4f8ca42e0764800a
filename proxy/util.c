/*
 * util.c: small parsers and clocks.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

int
parse_duration(const char *s, long *ms)
{
	char *end;
	double v;
	long mult;

	if (s == NULL || *s == '\0' || *s == '-' || *s == '+')
		return (-1);
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s)
		return (-1);
	if (*end == '\0' || strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else
		return (-1);
	if (v < 0 || v * mult > (double)LONG_MAX / 2)
		return (-1);
	*ms = (long)(v * mult + 0.5);
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

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}
