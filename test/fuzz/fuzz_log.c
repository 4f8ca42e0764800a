/*
 * fuzz_log: the log encoder (proxy/log.c) on values a peer chooses (CN,
 * SANs, SNI, MySQL user names): log_escape() alone, and whole lines built
 * with log_begin()/log_str()/log_int(), which must be one valid JSON
 * object or one valid logfmt record whatever the values hold (log.h).
 *
 * Input: a flags byte, then values split at NUL bytes.  Flags: bit 0 JSON
 * (else logfmt); bits 1-7 size log_escape()'s output buffer (x 37 bytes).
 * Lines are checked in their buffer, never written.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../proxy/log.h"
#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return (0);
}

/* Length of the well-formed UTF-8 character at s (RFC 3629), or 0. */
static size_t
utf8_len(const uint8_t *s, size_t n)
{
	uint32_t c, min;
	size_t len, i;

	if (s[0] < 0x80)
		return (1);
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
	/* C1 controls must have been escaped. */
	if (c >= 0x80 && c <= 0x9f)
		return (0);
	return (len);
}

static int
is_hex(uint8_t c)
{
	return ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
}

/*
 * The inside of a quoted string as log_escape() writes it, up to the
 * closing quote (or the end, with end_ok): its length, or -1 malformed.
 */
static long
string_body(const uint8_t *s, size_t n, int json, int end_ok)
{
	size_t i = 0, k;

	while (i < n) {
		if (s[i] == '"')
			return ((long)i);
		if (s[i] < 0x20 || s[i] == 0x7f)
			return (-1);
		if (s[i] == '\\') {
			if (i + 1 >= n)
				return (-1);
			switch (s[i + 1]) {
			case '"': case '\\': case 'n': case 'r': case 't':
				i += 2;
				continue;
			case 'u':
				if (i + 6 > n || !is_hex(s[i + 2]) ||
				    !is_hex(s[i + 3]) || !is_hex(s[i + 4]) ||
				    !is_hex(s[i + 5]))
					return (-1);
				i += 6;
				continue;
			case 'x':
				if (json || i + 4 > n || !is_hex(s[i + 2]) ||
				    !is_hex(s[i + 3]))
					return (-1);
				i += 4;
				continue;
			default:
				return (-1);
			}
		}
		if ((k = utf8_len(s + i, n - i)) == 0)
			return (-1);
		i += k;
	}
	return (end_ok ? (long)n : -1);
}

/* A JSON object of string and integer values: {"k":"v","n":12}. */
static int
valid_json(const uint8_t *s, size_t n)
{
	size_t i = 1;
	long k;

	if (n < 2 || s[0] != '{' || s[n - 1] != '}')
		return (0);
	if (n == 2)
		return (1);
	for (;;) {
		if (i >= n || s[i++] != '"')
			return (0);
		if ((k = string_body(s + i, n - i, 1, 0)) < 0)
			return (0);
		i += (size_t)k + 1;
		if (i >= n || s[i++] != ':')
			return (0);
		if (i < n && s[i] == '"') {
			i++;
			if ((k = string_body(s + i, n - i, 1, 0)) < 0)
				return (0);
			i += (size_t)k + 1;
		} else {
			if (i < n && s[i] == '-')
				i++;
			if (i >= n || s[i] < '0' || s[i] > '9')
				return (0);
			while (i < n && s[i] >= '0' && s[i] <= '9')
				i++;
		}
		if (i == n - 1)
			return (1);
		if (s[i++] != ',')
			return (0);
	}
}

/* logfmt: key=value pairs apart by one space; a value bare or quoted. */
static int
valid_logfmt(const uint8_t *s, size_t n)
{
	size_t i = 0;
	long k;

	while (i < n) {
		if (i > 0 && s[i++] != ' ')
			return (0);
		while (i < n && s[i] != '=') {
			if (s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"')
				return (0);
			i++;
		}
		if (i >= n)
			return (0);
		i++;
		if (i < n && s[i] == '"') {
			i++;
			if ((k = string_body(s + i, n - i, 0, 0)) < 0)
				return (0);
			i += (size_t)k + 1;
		} else {
			if (i >= n || s[i] == ' ')
				return (0);
			while (i < n && s[i] != ' ') {
				if (s[i] < ' ' || s[i] >= 0x7f || s[i] == '"' ||
				    s[i] == '=' || s[i] == '\\')
					return (0);
				i++;
			}
		}
	}
	return (1);
}

static void
escape(enum log_format fmt, const uint8_t *v, size_t n, size_t size)
{
	char *dst;
	size_t used = 0, took;

	if ((dst = malloc(size > 0 ? size : 1)) == NULL)
		return;
	took = log_escape(fmt, (const char *)v, n, dst, size, &used);
	fuzz_check(took <= n && used <= size, "log_escape: past a buffer");
	fuzz_check(took == n || size - used < 6,
	    "log_escape: stopped with room for any escape");
	fuzz_check(string_body((const uint8_t *)dst, used,
	    fmt == LOG_FORMAT_JSON, 1) == (long)used,
	    "log_escape: output is not a string's inside");
	free(dst);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *keys[] = { "cn", "sans", "user", "sni", "msg" };
	struct logline l;
	const uint8_t *v, *nul, *end = data + size;
	char *val;
	size_t n, k = 0, len;
	int json;

	if (size < 1)
		return (0);
	json = data[0] & 1;
	escape(json ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT, data + 1, size - 1,
	    (size_t)(data[0] >> 1) * 37);

	log_setup("debug", json ? "json" : "text");
	log_begin(&l, LOG_WARN, "fuzz");
	for (v = data + 1; v <= end && k < 64; v = nul + 1, k++) {
		nul = memchr(v, 0, (size_t)(end - v));
		if (nul == NULL)
			nul = end;
		n = (size_t)(nul - v);
		if ((val = malloc(n + 1)) == NULL)
			break;
		memcpy(val, v, n);
		val[n] = '\0';
		log_str(&l, keys[k % 5], val);
		if (k % 7 == 3)
			log_int(&l, "bytes", (int64_t)n * (k % 2 ? -1 : 1));
		free(val);
		if (nul == end)
			break;
	}
	/* What log_end() adds, without writing the line. */
	fuzz_check(l.ll_len + 2 <= sizeof(l.ll_buf), "no room for the end");
	len = l.ll_len;
	if (json)
		l.ll_buf[len++] = '}';
	fuzz_check(json ? valid_json((const uint8_t *)l.ll_buf, len) :
	    valid_logfmt((const uint8_t *)l.ll_buf, len),
	    json ? "a line that is not one JSON object" :
	    "a line that is not one logfmt record");
	return (0);
}
