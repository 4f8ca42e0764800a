/*
 * hello.c: the ALPN list of a ClientHello, read from its bytes (the first
 * TLS record: record header, handshake header, version, random, session
 * id, cipher suites, compression methods, extensions).
 */
#include <string.h>

#include "hello.h"

/* A TLS plaintext record holds at most 2^14 bytes (RFC 8446 5.1). */
#define TLS_RECORD_MAX	16384

/*
 * Check an ALPN extension's data (RFC 7301 3.1): a list length that covers
 * the rest exactly, then one or more names of 1 to 255 bytes that fill the
 * list exactly.  0 well-formed, -1 not.
 */
static int
alpn_parses(const uint8_t *p, size_t elen)
{
	size_t len, off;

	if (elen < 2)
		return (-1);
	len = (size_t)p[0] << 8 | p[1];
	if (len < 2 || len + 2 != elen)
		return (-1);
	for (off = 2; off < elen; off += 1 + p[off])
		if (p[off] == 0 || off + 1 + p[off] > elen)
			return (-1);
	return (0);
}

enum hello_verdict
hello_parse(const uint8_t *buf, size_t n, const uint8_t **list, size_t *len)
{
	size_t rec, off, end, elen, skip;

	if (n < 5)
		return (HELLO_MORE);
	if (buf[0] != 22)		/* handshake record */
		return (HELLO_OTHER);
	rec = (size_t)buf[3] << 8 | buf[4];
	if (rec > TLS_RECORD_MAX)
		return (HELLO_OTHER);
	if (n < 5 + rec)
		return (HELLO_MORE);
	end = 5 + rec;
	if (rec < 4 || buf[5] != 1)	/* client_hello */
		return (HELLO_OTHER);
	off = 9 + 2 + 32;		/* headers, version, random */
	if (off + 1 > end)
		return (HELLO_OTHER);
	off += 1 + buf[off];		/* session id */
	if (off + 2 > end)
		return (HELLO_OTHER);
	off += 2 + ((size_t)buf[off] << 8 | buf[off + 1]);	/* suites */
	if (off + 1 > end)
		return (HELLO_OTHER);
	off += 1 + buf[off];		/* compression */
	if (off + 2 > end)
		return (off == end ? HELLO_NO_ALPN : HELLO_OTHER);
	skip = (size_t)buf[off] << 8 | buf[off + 1];
	off += 2;
	if (off + skip > end)
		return (HELLO_OTHER);
	end = off + skip;
	while (off + 4 <= end) {
		elen = (size_t)buf[off + 2] << 8 | buf[off + 3];
		if (off + 4 + elen > end)
			return (HELLO_OTHER);
		if (buf[off] == 0 && buf[off + 1] == 16) {	/* ALPN */
			if (alpn_parses(buf + off + 4, elen) == -1)
				return (HELLO_BAD_ALPN);
			*len = elen - 2;
			*list = buf + off + 6;
			return (HELLO_ALPN);
		}
		off += 4 + elen;
	}
	return (HELLO_NO_ALPN);
}

int
hello_offers(const uint8_t *list, size_t len, const char *proto)
{
	size_t off = 0, plen = strlen(proto);

	while (off < len) {
		size_t l = list[off];
		if (off + 1 + l > len)
			return (0);
		if (l == plen && memcmp(list + off + 1, proto, plen) == 0)
			return (1);
		off += 1 + l;
	}
	return (0);
}
