/*
 * test_log: the value escaper and the line builder of proxy/log.c.
 *
 * Every line is captured from stderr (a pipe) and parsed back by the strict
 * JSON and logfmt readers below, which know nothing of log.c: a line must
 * be one record, every value must decode, and the decoded value must be
 * what was logged (or its stated replacement).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../proxy/log.h"

/* ---- capturing stderr ------------------------------------------------ */

static char cap[1 << 16];
static size_t caplen;
static int cap_saved = -1, cap_rd = -1;

static void
cap_start(void)
{
	int p[2];

	assert_int_equal(pipe(p), 0);
	cap_saved = dup(STDERR_FILENO);
	assert_true(cap_saved >= 0);
	assert_true(dup2(p[1], STDERR_FILENO) >= 0);
	close(p[1]);
	cap_rd = p[0];
}

/* Restore stderr and read what was written meanwhile into cap. */
static void
cap_end(void)
{
	ssize_t n;

	dup2(cap_saved, STDERR_FILENO);
	close(cap_saved);
	caplen = 0;
	while ((n = read(cap_rd, cap + caplen, sizeof(cap) - 1 - caplen)) > 0)
		caplen += (size_t)n;
	close(cap_rd);
	cap[caplen] = '\0';
}

/* ---- an independent UTF-8 check (Unicode table 3-7) -------------------- */

/* Length of the well-formed sequence at s[0..n), or 0. */
static size_t
wf_utf8(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (s[0] < 0x80)
		return (1);
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		if (s[0] == 0xf4)
			hi = 0x8f;
	} else
		return (0);
	if (n < len || s[1] < lo || s[1] > hi)
		return (0);
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return (0);
	return (len);
}

static size_t
put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return (1);
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return (2);
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return (3);
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return (4);
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

static long
hex4(const char *p)
{
	long v = 0;
	int i, h;

	for (i = 0; i < 4; i++) {
		if ((h = hexval((unsigned char)p[i])) < 0)
			return (-1);
		v = v << 4 | h;
	}
	return (v);
}

/* ---- parsed records --------------------------------------------------- */

#define MAXF 64
struct rec {
	int	n;
	char	key[MAXF][32];
	char	val[MAXF][LOG_LINE_MAX];
	size_t	vlen[MAXF];
	int	num[MAXF];	/* JSON: the value was a number */
};
static struct rec rec;

/* Index of key in rec, or -1. */
static int
field(const char *key)
{
	int i;

	for (i = 0; i < rec.n; i++)
		if (strcmp(rec.key[i], key) == 0)
			return (i);
	return (-1);
}

/* Assert that field key decodes to want[0..wlen). */
static void
assert_field(const char *key, const char *want, size_t wlen)
{
	int i = field(key);

	if (i < 0)
		fail_msg("no field %s in: %s", key, cap);
	if (rec.vlen[i] != wlen || memcmp(rec.val[i], want, wlen) != 0)
		fail_msg("field %s: %zu bytes, want %zu: %s", key, rec.vlen[i],
		    wlen, cap);
}

/* ---- a strict JSON reader for one line of one flat object ------------- */

static const char *jp, *jend;

/* A JSON string at jp into out (UTF-8); its length, or -1. */
static long
json_string(char *out, size_t outlen)
{
	size_t o = 0, k;
	long cp, lo;

	if (jp >= jend || *jp++ != '"')
		return (-1);
	while (jp < jend && *jp != '"') {
		unsigned char c = (unsigned char)*jp;
		if (outlen - o < 8)
			return (-1);
		if (c < 0x20)
			return (-1);
		if (c == '\\') {
			if (jend - jp < 2)
				return (-1);
			switch (jp[1]) {
			case '"': case '\\': case '/':
				out[o++] = jp[1];
				break;
			case 'b': out[o++] = '\b'; break;
			case 'f': out[o++] = '\f'; break;
			case 'n': out[o++] = '\n'; break;
			case 'r': out[o++] = '\r'; break;
			case 't': out[o++] = '\t'; break;
			case 'u':
				if (jend - jp < 6 || (cp = hex4(jp + 2)) < 0)
					return (-1);
				if (cp >= 0xdc00 && cp <= 0xdfff)
					return (-1);
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (jend - jp < 12 || jp[6] != '\\' ||
					    jp[7] != 'u' ||
					    (lo = hex4(jp + 8)) < 0xdc00 ||
					    lo > 0xdfff)
						return (-1);
					cp = 0x10000 + ((cp - 0xd800) << 10) +
					    (lo - 0xdc00);
					jp += 6;
				}
				o += put_utf8(out + o, (unsigned long)cp);
				jp += 4;
				break;
			default:
				return (-1);
			}
			jp += 2;
			continue;
		}
		if ((k = wf_utf8((const unsigned char *)jp,
		    (size_t)(jend - jp))) == 0)
			return (-1);
		memcpy(out + o, jp, k);
		o += k;
		jp += k;
	}
	if (jp >= jend)
		return (-1);
	jp++;
	return ((long)o);
}

/* JSON number grammar, integers only (all log_int writes). */
static long
json_int(char *out)
{
	const char *s = jp;

	if (jp < jend && *jp == '-')
		jp++;
	if (jp >= jend || *jp < '0' || *jp > '9')
		return (-1);
	if (*jp == '0')
		jp++;
	else
		while (jp < jend && *jp >= '0' && *jp <= '9')
			jp++;
	memcpy(out, s, (size_t)(jp - s));
	return (jp - s);
}

/* 0 when cap is exactly one line holding one flat JSON object. */
static int
parse_json(void)
{
	long n;

	memset(&rec, 0, sizeof(rec));
	jp = cap;
	jend = cap + caplen;
	if (caplen < 3 || cap[caplen - 1] != '\n')
		return (-1);
	jend--;
	if (*jp++ != '{')
		return (-1);
	if (jp < jend && *jp == '}')
		return (jp + 1 == jend ? 0 : -1);
	for (;;) {
		if (rec.n == MAXF)
			return (-1);
		if (json_string(rec.key[rec.n], sizeof(rec.key[0])) < 0)
			return (-1);
		if (jp >= jend || *jp++ != ':')
			return (-1);
		if (jp < jend && *jp == '"')
			n = json_string(rec.val[rec.n], sizeof(rec.val[0]));
		else {
			n = json_int(rec.val[rec.n]);
			rec.num[rec.n] = 1;
		}
		if (n < 0)
			return (-1);
		rec.vlen[rec.n++] = (size_t)n;
		if (jp >= jend)
			return (-1);
		if (*jp == '}')
			return (jp + 1 == jend ? 0 : -1);
		if (*jp++ != ',')
			return (-1);
	}
}

/* ---- a strict logfmt reader (the escapes dmtls writes) ---------------- */

static int
bare_byte(unsigned char c)
{
	return (c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\');
}

/* 0 when cap is exactly one logfmt line: key=value pairs, one space apart. */
static int
parse_logfmt(void)
{
	const char *p = cap, *end;
	size_t o, k;
	long cp;
	int h1, h2;

	memset(&rec, 0, sizeof(rec));
	if (caplen < 1 || cap[caplen - 1] != '\n')
		return (-1);
	end = cap + caplen - 1;
	while (p < end) {
		char *out = rec.val[rec.n];

		if (rec.n == MAXF)
			return (-1);
		if (rec.n > 0 && *p++ != ' ')
			return (-1);
		for (k = 0; p < end && (*p == '_' || (*p >= 'a' && *p <= 'z') ||
		    (*p >= 'A' && *p <= 'Z') || (k > 0 && *p >= '0' &&
		    *p <= '9')); k++) {
			if (k + 1 >= sizeof(rec.key[0]))
				return (-1);
			rec.key[rec.n][k] = *p++;
		}
		if (k == 0 || p >= end || *p++ != '=')
			return (-1);
		o = 0;
		if (p < end && *p == '"') {
			for (p++; p < end && *p != '"'; ) {
				unsigned char c = (unsigned char)*p;
				if (o + 8 > sizeof(rec.val[0]))
					return (-1);
				if (c < 0x20 || c == 0x7f)
					return (-1);
				if (c == '\\') {
					if (end - p < 2)
						return (-1);
					switch (p[1]) {
					case '"': case '\\':
						out[o++] = p[1];
						p += 2;
						break;
					case 'n': out[o++] = '\n'; p += 2; break;
					case 'r': out[o++] = '\r'; p += 2; break;
					case 't': out[o++] = '\t'; p += 2; break;
					case 'x':
						if (end - p < 4 ||
						    (h1 = hexval(p[2])) < 0 ||
						    (h2 = hexval(p[3])) < 0)
							return (-1);
						out[o++] = (char)(h1 << 4 | h2);
						p += 4;
						break;
					case 'u':
						if (end - p < 6 ||
						    (cp = hex4(p + 2)) < 0 ||
						    (cp >= 0xd800 && cp <= 0xdfff))
							return (-1);
						o += put_utf8(out + o,
						    (unsigned long)cp);
						p += 6;
						break;
					default:
						return (-1);
					}
					continue;
				}
				if ((k = wf_utf8((const unsigned char *)p,
				    (size_t)(end - p))) == 0)
					return (-1);
				/* C1 controls are escaped, never raw. */
				if (k == 2 && c == 0xc2 &&
				    (unsigned char)p[1] < 0xa0)
					return (-1);
				memcpy(out + o, p, k);
				o += k;
				p += k;
			}
			if (p >= end)
				return (-1);
			p++;
		} else {
			while (p < end && *p != ' ') {
				if (!bare_byte((unsigned char)*p) ||
				    o + 1 >= sizeof(rec.val[0]))
					return (-1);
				out[o++] = *p++;
			}
			if (o == 0)
				return (-1);
		}
		rec.vlen[rec.n++] = o;
	}
	return (0);
}

/* ---- logging helpers -------------------------------------------------- */

/* One line: event "t" with key=val (val[0..n), n may hold no NUL). */
static void
line_with(const char *fmt, const char *key, const char *val)
{
	struct logline l;

	assert_int_equal(log_setup("info", fmt), 0);
	cap_start();
	log_begin(&l, LOG_INFO, "t");
	log_str(&l, key, val);
	log_end(&l);
	cap_end();
}

static void
json_line_with(const char *key, const char *val)
{
	line_with("json", key, val);
	if (parse_json() != 0)
		fail_msg("not one JSON object: %s", cap);
}

static void
logfmt_line_with(const char *key, const char *val)
{
	line_with("text", key, val);
	if (parse_logfmt() != 0)
		fail_msg("not one logfmt line: %s", cap);
}

/* log_escape with a roomy buffer; the result NUL-terminated. */
static const char *
esc(enum log_format f, const char *s, size_t n)
{
	static char out[LOG_LINE_MAX * 8];
	size_t used, k;

	k = log_escape(f, s, n, out, sizeof(out) - 1, &used);
	assert_int_equal(k, n);
	out[used] = '\0';
	return (out);
}

#define ESC_J(s) esc(LOG_FORMAT_JSON, (s), sizeof(s) - 1)
#define ESC_L(s) esc(LOG_FORMAT_LOGFMT, (s), sizeof(s) - 1)

/* ---- the escaper ------------------------------------------------------ */

static void
test_escape_valid_utf8_copied(void **state)
{
	/* 2, 3 and 4 bytes, U+FFFD itself, the largest BMP and the largest
	 * code point, the first above the surrogates, NBSP, U+2028. */
	static const char s[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e "
	    "\xef\xbf\xbd \xef\xbf\xbf \xf4\x8f\xbf\xbf \xee\x80\x80 "
	    "\xc2\xa0 \xe2\x80\xa8";

	(void)state;
	assert_string_equal(ESC_J(s), s);
	assert_string_equal(ESC_L(s), s);
}

static void
test_escape_invalid_utf8(void **state)
{
	static const struct {
		const char *in, *json, *logfmt;
	} t[] = {
		/* lone continuation bytes */
		{ "\x80", "\\ufffd", "\\x80" },
		{ "a\xbf" "b", "a\\ufffdb", "a\\xbfb" },
		/* overlong forms of '/', U+07FF and U+FFFF */
		{ "\xc0\xaf", "\\ufffd\\ufffd", "\\xc0\\xaf" },
		{ "\xc1\xbf", "\\ufffd\\ufffd", "\\xc1\\xbf" },
		{ "\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd", "\\xe0\\x80\\xaf" },
		{ "\xe0\x9f\xbf", "\\ufffd\\ufffd\\ufffd", "\\xe0\\x9f\\xbf" },
		{ "\xf0\x80\x80\xaf", "\\ufffd\\ufffd\\ufffd\\ufffd",
		    "\\xf0\\x80\\x80\\xaf" },
		{ "\xf0\x8f\xbf\xbf", "\\ufffd\\ufffd\\ufffd\\ufffd",
		    "\\xf0\\x8f\\xbf\\xbf" },
		/* UTF-16 surrogates, alone and as a pair */
		{ "\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd", "\\xed\\xa0\\x80" },
		{ "\xed\xbf\xbf", "\\ufffd\\ufffd\\ufffd", "\\xed\\xbf\\xbf" },
		{ "\xed\xa0\xbd\xed\xb8\x80",
		    "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd",
		    "\\xed\\xa0\\xbd\\xed\\xb8\\x80" },
		/* past U+10FFFF, and bytes that never occur */
		{ "\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd",
		    "\\xf4\\x90\\x80\\x80" },
		{ "\xf5\x80\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd",
		    "\\xf5\\x80\\x80\\x80" },
		{ "\xff\xfe", "\\ufffd\\ufffd", "\\xff\\xfe" },
		/* sequences cut short, at the end and before ASCII */
		{ "\xe2\x82", "\\ufffd\\ufffd", "\\xe2\\x82" },
		{ "\xe2\x82z", "\\ufffd\\ufffdz", "\\xe2\\x82z" },
		{ "\xf0\x9f\x98", "\\ufffd\\ufffd\\ufffd", "\\xf0\\x9f\\x98" },
		{ "x\xc3", "x\\ufffd", "x\\xc3" },
		/* a lead byte followed by another lead byte */
		{ "\xc3\xc3\xa9", "\\ufffd\xc3\xa9", "\\xc3\xc3\xa9" },
		/* a good character after a bad one survives */
		{ "\xc3\xa9\xc3", "\xc3\xa9\\ufffd", "\xc3\xa9\\xc3" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_string_equal(esc(LOG_FORMAT_JSON, t[i].in,
		    strlen(t[i].in)), t[i].json);
		assert_string_equal(esc(LOG_FORMAT_LOGFMT, t[i].in,
		    strlen(t[i].in)), t[i].logfmt);
	}
}

static void
test_escape_quotes_backslashes_controls(void **state)
{
	(void)state;
	assert_string_equal(ESC_J("a\"b\\c"), "a\\\"b\\\\c");
	assert_string_equal(ESC_L("a\"b\\c"), "a\\\"b\\\\c");
	assert_string_equal(ESC_J("\n\r\t"), "\\n\\r\\t");
	assert_string_equal(ESC_L("\n\r\t"), "\\n\\r\\t");
	assert_string_equal(ESC_J("\x01\x08\x0b\x0c\x1b\x1f\x7f"),
	    "\\u0001\\u0008\\u000b\\u000c\\u001b\\u001f\\u007f");
	assert_string_equal(ESC_L("\x01\x1b[2J\x7f"),
	    "\\u0001\\u001b[2J\\u007f");
	/* C1 controls (U+0080..U+009F, CSI is U+009B) are escaped too. */
	assert_string_equal(ESC_J("\xc2\x80\xc2\x9b\xc2\x9f\xc2\xa0"),
	    "\\u0080\\u009b\\u009f\xc2\xa0");
	assert_string_equal(ESC_L("\xc2\x9b"), "\\u009b");
	/* NUL, when the caller passes one inside n. */
	assert_string_equal(esc(LOG_FORMAT_JSON, "a\0b", 3), "a\\u0000b");
}

/* Cut anywhere, the output is a whole-escape prefix of the full output and
 * the bytes consumed escape to exactly that prefix. */
static void
test_escape_never_splits(void **state)
{
	static const char s[] = "q\"\\\n\xff\xc3\xa9\x01\xf0\x9d\x84\x9e"
	    "\xe2\x82\xc2\x9b.";
	enum log_format f;
	char full[256], out[256], one[256];
	size_t fl, used, k, size, u2;

	(void)state;
	for (f = LOG_FORMAT_LOGFMT; f <= LOG_FORMAT_JSON; f++) {
		k = log_escape(f, s, sizeof(s) - 1, full, sizeof(full), &fl);
		assert_int_equal(k, sizeof(s) - 1);
		for (size = 0; size <= fl; size++) {
			memset(out, 'Z', sizeof(out));
			k = log_escape(f, s, sizeof(s) - 1, out, size, &used);
			assert_true(used <= size);
			assert_true(out[used] == 'Z');
			assert_memory_equal(out, full, used);
			out[used] = '\0';
			assert_string_equal(esc(f, s, k), out);
			/* The next character's escape did not fit. */
			if (k < sizeof(s) - 1)
				assert_int_equal(log_escape(f, s + k,
				    sizeof(s) - 1 - k, one, size - used, &u2),
				    0);
			else
				assert_int_equal(used, fl);
		}
		assert_int_equal(log_escape(f, s, sizeof(s) - 1, out, 0,
		    &used), 0);
		assert_int_equal(used, 0);
	}
}

/* ---- lines ------------------------------------------------------------ */

static void
test_json_line_round_trip(void **state)
{
	static const char hostile[] = "dm\"}\n{\"level\":\"error\\\xff\xfe"
	    "\xc0\xaf\x1b[31m";
	static const char want[] = "dm\"}\n{\"level\":\"error\\"
	    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\x1b[31m";
	struct logline l;

	(void)state;
	assert_int_equal(log_setup("info", "json"), 0);
	cap_start();
	log_begin(&l, LOG_WARN, "handshake_failed");
	log_str(&l, "route", "r1");
	log_str(&l, "cn", hostile);
	log_int(&l, "bytes_in", -12);
	log_int(&l, "bytes_out", INT64_MAX);
	log_str(&l, "empty", "");
	log_end(&l);
	cap_end();
	if (parse_json() != 0)
		fail_msg("not one JSON object: %s", cap);
	assert_field("event", "handshake_failed", 16);
	assert_field("level", "warn", 4);
	assert_field("route", "r1", 2);
	assert_field("cn", want, sizeof(want) - 1);
	assert_field("bytes_in", "-12", 3);
	assert_field("bytes_out", "9223372036854775807", 19);
	assert_true(rec.num[field("bytes_out")]);
	assert_field("empty", "", 0);
	assert_int_equal(field("level"), 1);
}

static void
test_logfmt_line_round_trip(void **state)
{
	static const char hostile[] = "dm\" level=error\n\\\xff\xfe\xc0\xaf"
	    "\x1b[31m\xc3\xa9";
	struct logline l;

	(void)state;
	assert_int_equal(log_setup("info", "text"), 0);
	cap_start();
	log_begin(&l, LOG_WARN, "denied");
	log_str(&l, "cn", hostile);
	log_str(&l, "bare", "abc-1.2:3/4");
	log_str(&l, "empty", "");
	log_str(&l, "space", "a b");
	log_str(&l, "eq", "a=b");
	log_int(&l, "n", 42);
	log_end(&l);
	cap_end();
	if (parse_logfmt() != 0)
		fail_msg("not one logfmt line: %s", cap);
	assert_field("cn", hostile, sizeof(hostile) - 1);
	assert_field("level", "warn", 4);
	assert_non_null(strstr(cap, " bare=abc-1.2:3/4 "));
	assert_non_null(strstr(cap, " empty=\"\" "));
	assert_non_null(strstr(cap, " space=\"a b\" "));
	assert_non_null(strstr(cap, " eq=\"a=b\" "));
	assert_non_null(strstr(cap, " n=42\n"));
	assert_int_equal(field("level"), 1);
	assert_int_equal(field("n"), rec.n - 1);
}

static void
test_every_byte_value(void **state)
{
	char all[256], want[512];
	size_t i, w = 0;

	(void)state;
	for (i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	/* Ascending, no lead byte is followed by a continuation byte: all of
	 * 0x80..0xff are invalid, each becomes U+FFFD in JSON. */
	for (i = 1; i < 0x80; i++)
		want[w++] = (char)i;
	for (i = 0x80; i < 0x100; i++) {
		memcpy(want + w, "\xef\xbf\xbd", 3);
		w += 3;
	}
	json_line_with("v", all);
	assert_field("v", want, 0x7f + 0x80 * 3);
	logfmt_line_with("v", all);
	assert_field("v", all, 255);
}

static void
test_long_field_cut_before_escaping(void **state)
{
	char big[5000], want[LOG_FIELD_MAX + 3];

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(want, 'a', LOG_FIELD_MAX);
	memcpy(want + LOG_FIELD_MAX, "...", 3);
	json_line_with("cn", big);
	assert_field("cn", want, sizeof(want));
	assert_field("event", "t", 1);
	logfmt_line_with("cn", big);
	assert_field("cn", want, sizeof(want));
	/* Exactly LOG_FIELD_MAX bytes are kept whole, with no mark. */
	big[LOG_FIELD_MAX] = '\0';
	json_line_with("cn", big);
	assert_field("cn", big, LOG_FIELD_MAX);
}

static void
test_long_field_cut_at_character(void **state)
{
	char big[LOG_FIELD_MAX + 16], want[LOG_FIELD_MAX + 3];

	(void)state;
	/* A two-byte character across the limit is left out whole. */
	memset(big, 'a', LOG_FIELD_MAX - 1);
	memcpy(big + LOG_FIELD_MAX - 1, "\xc3\xa9zzz", 6);
	memset(want, 'a', LOG_FIELD_MAX - 1);
	memcpy(want + LOG_FIELD_MAX - 1, "...", 3);
	json_line_with("cn", big);
	assert_field("cn", want, LOG_FIELD_MAX + 2);
	logfmt_line_with("cn", big);
	assert_field("cn", want, LOG_FIELD_MAX + 2);
	/* A four-byte one too. */
	memset(big, 'a', LOG_FIELD_MAX - 2);
	memcpy(big + LOG_FIELD_MAX - 2, "\xf0\x9d\x84\x9ezz", 7);
	memcpy(want + LOG_FIELD_MAX - 2, "...", 3);
	json_line_with("cn", big);
	assert_field("cn", want, LOG_FIELD_MAX + 1);
}

/* Many fields that escape to six times their size: the line runs out of
 * room, and is still one record; each value is whole or marked cut, and
 * the keys that had no room at all are left out, never half written. */
static void
test_line_full_of_hostile_fields(void **state)
{
	static const char *fmts[] = { "json", "text" };
	char bad[LOG_FIELD_MAX + 1], key[16];
	struct logline l;
	int f, i, j, n, cut;

	(void)state;
	memset(bad, '\x01', LOG_FIELD_MAX);
	bad[LOG_FIELD_MAX] = '\0';
	for (f = 0; f < 2; f++) {
		assert_int_equal(log_setup("info", fmts[f]), 0);
		cap_start();
		log_begin(&l, LOG_INFO, "t");
		for (i = 0; i < 20; i++) {
			snprintf(key, sizeof(key), "k%d", i);
			log_str(&l, key, bad);
		}
		log_int(&l, "last", 7);
		log_end(&l);
		cap_end();
		assert_true(caplen <= LOG_LINE_MAX);
		assert_true(caplen > LOG_LINE_MAX - 64);
		if ((f == 0 ? parse_json() : parse_logfmt()) != 0)
			fail_msg("not one %s line: %s", fmts[f], cap);
		for (i = 0, cut = 0, n = 0; i < rec.n; i++) {
			if (rec.key[i][0] != 'k')
				continue;
			n++;
			for (j = 0; j < (int)rec.vlen[i] - 3; j++)
				assert_int_equal(rec.val[i][j], '\x01');
			if (rec.vlen[i] != LOG_FIELD_MAX) {
				assert_memory_equal(rec.val[i] +
				    rec.vlen[i] - 3, "...", 3);
				cut++;
			}
		}
		assert_true(n >= 1 && n < 20);
		assert_true(cut >= 1);
		assert_int_equal(field("k0"), 3);
	}
}

static void
test_log_msg_long_message(void **state)
{
	char want[LOG_FIELD_MAX + 3];

	(void)state;
	assert_int_equal(log_setup("info", "json"), 0);
	cap_start();
	log_msg(LOG_ERROR, "config", "%s%3000s", "x", "");
	cap_end();
	if (parse_json() != 0)
		fail_msg("not one JSON object: %s", cap);
	want[0] = 'x';
	memset(want + 1, ' ', LOG_FIELD_MAX - 1);
	memcpy(want + LOG_FIELD_MAX, "...", 3);
	assert_field("msg", want, sizeof(want));
	assert_field("level", "error", 5);
}

static void
test_filtered_level_writes_nothing(void **state)
{
	struct logline l;

	(void)state;
	assert_int_equal(log_setup("warn", "json"), 0);
	cap_start();
	log_begin(&l, LOG_INFO, "t");
	log_str(&l, "k", "v");
	log_end(&l);
	cap_end();
	assert_int_equal(caplen, 0);
	assert_int_equal(log_setup("info", NULL), 0);
	assert_int_equal(log_setup("loud", NULL), -1);
	assert_int_equal(log_setup(NULL, "xml"), -1);
}

/* A Prometheus label value: only quote, backslash and newline have
 * escapes; what has none (other controls, bytes that are not UTF-8)
 * becomes U+FFFD, and well-formed UTF-8 stays. */
static void
test_escape_prometheus_label(void **state)
{
	const char in[] = "q\"b\\c\nd\te\xff\xc3\xa9";
	char out[64];
	size_t used, took;

	(void)state;
	took = log_escape(LOG_FORMAT_PROM, in, sizeof(in) - 1, out,
	    sizeof(out), &used);
	assert_int_equal(took, sizeof(in) - 1);
	out[used] = '\0';
	assert_string_equal(out, "q\\\"b\\\\c\\nd\xef\xbf\xbd" "e"
	    "\xef\xbf\xbd\xc3\xa9");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_valid_utf8_copied),
		cmocka_unit_test(test_escape_invalid_utf8),
		cmocka_unit_test(test_escape_quotes_backslashes_controls),
		cmocka_unit_test(test_escape_never_splits),
		cmocka_unit_test(test_json_line_round_trip),
		cmocka_unit_test(test_logfmt_line_round_trip),
		cmocka_unit_test(test_every_byte_value),
		cmocka_unit_test(test_long_field_cut_before_escaping),
		cmocka_unit_test(test_long_field_cut_at_character),
		cmocka_unit_test(test_line_full_of_hostile_fields),
		cmocka_unit_test(test_log_msg_long_message),
		cmocka_unit_test(test_filtered_level_writes_nothing),
		cmocka_unit_test(test_escape_prometheus_label),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
