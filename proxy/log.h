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
 *
 * Values may come from peers (CN, SANs, SNI): every line is one valid
 * logfmt record or one valid JSON object whatever bytes they hold.  Each
 * value is cut to LOG_FIELD_MAX bytes at a character boundary before it
 * is escaped (a cut value ends in "..."); a value that would not fit the
 * line whole is cut the same way, and a key with no room left is dropped:
 * the line itself is never cut.
 */
#ifndef DMTLS_LOG_H
#define DMTLS_LOG_H

#include <stdint.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* How a value is escaped: inside a logfmt or a JSON double-quoted string. */
/* Line formats; LOG_FORMAT_PROM is only for log_escape (label values). */
enum log_format { LOG_FORMAT_LOGFMT = 0, LOG_FORMAT_JSON, LOG_FORMAT_PROM };

#define LOG_LINE_MAX	8192	/* bytes of a line, newline included */
#define LOG_FIELD_MAX	1024	/* bytes of one value, before escaping */

struct logline {
	char	ll_buf[LOG_LINE_MAX];
	size_t	ll_len;
	int	ll_on;		/* 0 when the level is filtered out */
	int	ll_fields;	/* key/value pairs written so far */
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

/*
 * log_escape(fmt, src, n, dst, size, used): escape src[0..n) for the inside
 * of a double-quoted fmt string.  Well-formed UTF-8 is copied; '"' and '\'
 * get a backslash; control characters (C0, DEL and C1) become \n, \r, \t
 * or \u00XX; every byte that is not part of a well-formed UTF-8 character
 * (a stray continuation byte, an overlong form, a surrogate, a cut
 * sequence, a code point past U+10FFFF) becomes \ufffd in JSON and \xXX
 * in logfmt.  NUL is a control character like the others.  For a
 * Prometheus label value (LOG_FORMAT_PROM) only '"', '\' and a newline
 * have escapes; other control characters and bytes that are not UTF-8
 * become U+FFFD.  Writes at most
 * size bytes to dst, no NUL terminator, stopping before the first
 * character whose escape does not fit whole.  Sets *used to the bytes
 * written and returns the bytes of src consumed (n when all of it fit).
 */
size_t log_escape(enum log_format, const char *, size_t, char *, size_t,
    size_t *);

#endif
