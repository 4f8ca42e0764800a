/*
 * log.h: one line per event on stderr, logfmt (default) or JSON.
 *
 * A line is built from key/value pairs:
 *	struct logline l;
 *	log_begin(&l, LOG_INFO, "close");
 *	log_str(&l, "route", name); log_int(&l, "bytes_in", n);
 *	log_end(&l);
 * log_end() writes the line with a single write(2), so lines from worker
 * threads never interleave.
 */
#ifndef DMTLS_LOG_H
#define DMTLS_LOG_H

#include <stdint.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

struct logline {
	char	ll_buf[2048];
	size_t	ll_len;
	int	ll_on;		/* 0 when the level is filtered out */
};

/* log_setup(level, format): "debug|info|warn|error", "text|json"; 0 or -1. */
int log_setup(const char *, const char *);

/* log_enabled(level): 1 when lines of that level are written. */
int log_enabled(enum log_level);

void log_begin(struct logline *, enum log_level, const char *event);
void log_str(struct logline *, const char *key, const char *val);
void log_int(struct logline *, const char *key, int64_t val);
void log_end(struct logline *);

/* log_msg(level, event, fmt, ...): a line with event= and msg=. */
void log_msg(enum log_level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
