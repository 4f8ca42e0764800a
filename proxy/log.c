/*
 * log.c: logfmt or JSON lines on stderr.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static enum log_level min_level = LOG_INFO;
static int json;

static const char *level_names[] = { "debug", "info", "warn", "error" };

int
log_setup(const char *level, const char *format)
{
	int i;

	if (level != NULL) {
		for (i = 0; i < 4; i++)
			if (strcmp(level, level_names[i]) == 0)
				break;
		if (i == 4)
			return (-1);
		min_level = (enum log_level)i;
	}
	if (format != NULL) {
		if (strcmp(format, "json") == 0)
			json = 1;
		else if (strcmp(format, "text") == 0 ||
		    strcmp(format, "logfmt") == 0)
			json = 0;
		else
			return (-1);
	}
	return (0);
}

int
log_enabled(enum log_level lv)
{
	return (lv >= min_level);
}

/*
 * Length of the well-formed UTF-8 character at s[0..n) (2 to 4 bytes), or
 * 0 when s does not start one (RFC 3629: no overlong forms, no surrogates,
 * nothing past U+10FFFF).  *cp gets the code point.
 */
static size_t
utf8_char(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c, min;
	size_t len, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		c = s[0] & 0x1f;
		min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		c = s[0] & 0x0f;
		min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		c = s[0] & 0x07;
		min = 0x10000;
	} else
		return (0);
	if (n < len)
		return (0);
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return (0);
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return (0);
	*cp = c;
	return (len);
}

size_t
log_escape(enum log_format fmt, const char *src, size_t n, char *dst,
    size_t size, size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)src;
	size_t i = 0, o = 0, len, k;
	char esc[8];
	uint32_t cp;

	while (i < n) {
		const char *out = esc;

		len = 1;
		cp = s[i];
		if (s[i] >= 0x80 && (len = utf8_char(s + i, n - i, &cp)) == 0) {
			len = 1;	/* one byte that is not UTF-8 */
			if (fmt == LOG_FORMAT_PROM)
				out = "\xef\xbf\xbd";	/* U+FFFD */
			else if (fmt == LOG_FORMAT_JSON)
				out = "\\ufffd";
			else {
				esc[0] = '\\';
				esc[1] = 'x';
				esc[2] = hex[s[i] >> 4];
				esc[3] = hex[s[i] & 0xf];
				esc[4] = '\0';
			}
		} else if (cp == '"' || cp == '\\') {
			esc[0] = '\\';
			esc[1] = (char)cp;
			esc[2] = '\0';
		} else if (cp == '\n')
			out = "\\n";
		else if (fmt == LOG_FORMAT_PROM && (cp < 0x20 ||
		    (cp >= 0x7f && cp <= 0x9f)))
			out = "\xef\xbf\xbd";	/* no escape for these */
		else if (cp == '\r')
			out = "\\r";
		else if (cp == '\t')
			out = "\\t";
		else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[cp >> 4];
			esc[5] = hex[cp & 0xf];
			esc[6] = '\0';
		} else
			out = NULL;	/* copied as it is */
		k = out != NULL ? strlen(out) : len;
		if (k > size - o)
			break;
		memcpy(dst + o, out != NULL ? out : (const char *)s + i, k);
		o += k;
		i += len;
	}
	*used = o;
	return (i);
}

/* Room left for fields: the closing "}\n" (or "\n") is always kept free. */
static size_t
room(const struct logline *l)
{
	return (sizeof(l->ll_buf) - 2 - l->ll_len);
}

/* Append s[0..n) when it fits; 0, or -1 (nothing appended). */
static int
put(struct logline *l, const char *s, size_t n)
{
	if (n > room(l))
		return (-1);
	memcpy(l->ll_buf + l->ll_len, s, n);
	l->ll_len += n;
	return (0);
}

/* Start a pair: separator and key; -1 (nothing appended) without room for
 * the key and `need` more bytes. */
static int
put_key(struct logline *l, const char *key, size_t need)
{
	size_t klen = strlen(key);

	if (klen + 4 + need > room(l))
		return (-1);
	if (json) {
		if (l->ll_fields > 0)
			put(l, ",", 1);
		put(l, "\"", 1);
		put(l, key, klen);
		put(l, "\":", 2);
	} else {
		if (l->ll_fields > 0)
			put(l, " ", 1);
		put(l, key, klen);
		put(l, "=", 1);
	}
	l->ll_fields++;
	return (0);
}

/* 1 when val[0..n) can stand unquoted as a logfmt value. */
static int
logfmt_bare(const char *val, size_t n)
{
	size_t i;

	if (n == 0)
		return (0);
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)val[i];
		if (ch <= ' ' || ch >= 0x7f || ch == '"' || ch == '=' ||
		    ch == '\\')
			return (0);
	}
	return (1);
}

void
log_begin(struct logline *l, enum log_level lv, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char ts[64];

	l->ll_len = 0;
	l->ll_fields = 0;
	l->ll_on = log_enabled(lv);
	if (!l->ll_on)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
	if (json)
		put(l, "{", 1);
	log_str(l, "ts", ts);
	log_str(l, "level", level_names[lv]);
	log_str(l, "event", event);
}

/*
 * The value is cut before it is escaped: at LOG_FIELD_MAX bytes, backed
 * off to the start of a UTF-8 character, and again wherever the line runs
 * out of room (log_escape never splits an escape).  A cut value is quoted
 * and ends in "...", so the line stays one record whatever val holds.
 */
void
log_str(struct logline *l, const char *key, const char *val)
{
	const char *mark = "...";
	size_t n, budget, used, k, mlen = strlen(mark);
	int cut;

	if (!l->ll_on || val == NULL)
		return;
	n = strnlen(val, LOG_FIELD_MAX + 1);
	if ((cut = n > LOG_FIELD_MAX)) {
		n = LOG_FIELD_MAX;
		for (k = 0; k < 3 && n > 0 &&
		    ((unsigned char)val[n] & 0xc0) == 0x80; k++)
			n--;
	}
	if (!json && !cut && logfmt_bare(val, n) && n <= room(l) &&
	    put_key(l, key, n) == 0) {
		put(l, val, n);
		return;
	}
	/* Room for the quotes and the mark, even if nothing of val fits. */
	if (put_key(l, key, 2 + mlen) == -1)
		return;
	put(l, "\"", 1);
	budget = room(l) - 1 - mlen;
	k = log_escape(json ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT, val, n,
	    l->ll_buf + l->ll_len, budget, &used);
	l->ll_len += used;
	if (cut || k < n)
		put(l, mark, mlen);
	put(l, "\"", 1);
}

void
log_int(struct logline *l, const char *key, int64_t val)
{
	char num[32];
	int n;

	if (!l->ll_on)
		return;
	n = snprintf(num, sizeof(num), "%lld", (long long)val);
	if (put_key(l, key, (size_t)n) == 0)
		put(l, num, (size_t)n);
}

void
log_end(struct logline *l)
{
	ssize_t w;

	if (!l->ll_on)
		return;
	/* room() kept these two bytes free. */
	if (json)
		l->ll_buf[l->ll_len++] = '}';
	l->ll_buf[l->ll_len++] = '\n';
	w = write(STDERR_FILENO, l->ll_buf, l->ll_len);
	(void)w;
}

void
log_msg(enum log_level lv, const char *event, const char *fmt, ...)
{
	struct logline l;
	char msg[LOG_FIELD_MAX + 2];	/* longer than a field: log_str cuts */
	va_list ap;

	if (!log_enabled(lv))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_begin(&l, lv, event);
	log_str(&l, "msg", msg);
	log_end(&l);
}
