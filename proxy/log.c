/*
 * log.c: logfmt or JSON lines on stderr.
 */
#include <stdarg.h>
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

static void
put(struct logline *l, const char *s, size_t n)
{
	if (l->ll_len + n >= sizeof(l->ll_buf) - 2)
		n = sizeof(l->ll_buf) - 2 - l->ll_len;
	memcpy(l->ll_buf + l->ll_len, s, n);
	l->ll_len += n;
}

/* Append val quoted for the output format when it needs quoting. */
static void
put_value(struct logline *l, const char *val)
{
	const char *p;
	char esc[16];
	int quote = json || *val == '\0';

	for (p = val; !quote && *p; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' ||
		    (unsigned char)*p < 0x20)
			quote = 1;
	if (!quote) {
		put(l, val, strlen(val));
		return;
	}
	put(l, "\"", 1);
	for (p = val; *p; p++) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = *p;
			put(l, esc, 2);
		} else if ((unsigned char)*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)*p);
			put(l, esc, strlen(esc));
		} else
			put(l, p, 1);
	}
	put(l, "\"", 1);
}

static void
put_key(struct logline *l, const char *key)
{
	if (json) {
		put(l, l->ll_len > 1 ? ",\"" : "\"", l->ll_len > 1 ? 2 : 1);
		put(l, key, strlen(key));
		put(l, "\":", 2);
	} else {
		if (l->ll_len > 0)
			put(l, " ", 1);
		put(l, key, strlen(key));
		put(l, "=", 1);
	}
}

void
log_begin(struct logline *l, enum log_level lv, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char ts[64];

	l->ll_len = 0;
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

void
log_str(struct logline *l, const char *key, const char *val)
{
	if (!l->ll_on || val == NULL)
		return;
	put_key(l, key);
	put_value(l, val);
}

void
log_int(struct logline *l, const char *key, int64_t val)
{
	char num[32];

	if (!l->ll_on)
		return;
	snprintf(num, sizeof(num), "%lld", (long long)val);
	put_key(l, key);
	put(l, num, strlen(num));
}

void
log_end(struct logline *l)
{
	ssize_t w;

	if (!l->ll_on)
		return;
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
	char msg[1024];
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
