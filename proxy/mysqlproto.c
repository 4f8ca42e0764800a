/*
 * mysqlproto.c: MySQL packets for the in-band TLS upgrade: parsing what
 * the server and the client send before the auth phase ends, building
 * what dmtls sends.
 */
#include <string.h>

#include "mysqlproto.h"

#define ER_HANDSHAKE_ERROR	1043

static uint32_t
le32(const uint8_t *p)
{
	return ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24);
}

/* Copy a NUL-terminated string at p[*off] (within n) into dst. */
static int
get_cstr(const uint8_t *p, size_t n, size_t *off, char *dst, size_t dstlen)
{
	const uint8_t *nul;
	size_t len;

	if (*off > n)
		return (-1);
	if ((nul = memchr(p + *off, 0, n - *off)) == NULL)
		return (-1);
	len = (size_t)(nul - (p + *off));
	if (dst != NULL) {
		if (len >= dstlen)
			len = dstlen - 1;
		memcpy(dst, p + *off, len);
		dst[len] = '\0';
	}
	*off = (size_t)(nul - p) + 1;
	return (0);
}

int
my_parse_greeting(const uint8_t *p, size_t n, struct my_greeting *g)
{
	size_t off = 1, part2;
	uint8_t auth_len = 0;

	memset(g, 0, sizeof(*g));
	if (n < 1 || p[0] != 0x0a)
		return (-1);
	if (get_cstr(p, n, &off, g->g_version, sizeof(g->g_version)) == -1)
		return (-1);
	/* connection id 4, scramble part 1 8, filler 1, caps low 2 */
	if (off + 15 > n)
		return (-1);
	off += 4;
	memcpy(g->g_nonce, p + off, 8);
	g->g_nonce_len = 8;
	off += 9;
	g->g_caps_lo_off = off;
	g->g_caps = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8;
	off += 2;
	if (off == n)
		return (0);		/* a pre-4.1 server: no more fields */
	/* charset 1, status 2, caps high 2, auth data length 1, reserved 10 */
	if (off + 16 > n)
		return (-1);
	g->g_caps |= ((uint32_t)p[off + 3] | (uint32_t)p[off + 4] << 8) << 16;
	auth_len = p[off + 5];
	off += 16;
	if (g->g_caps & CLIENT_SECURE_CONN) {
		part2 = auth_len > 8 ? (size_t)auth_len - 8 : 13;
		if (part2 < 13)
			part2 = 13;
		if (off + part2 > n)
			return (-1);
		/* 12 scramble bytes and a NUL. */
		memcpy(g->g_nonce + 8, p + off, 12);
		g->g_nonce_len = 20;
		off += part2;
	}
	if ((g->g_caps & CLIENT_PLUGIN_AUTH) && off < n) {
		/* Some servers omit the final NUL. */
		size_t len = n - off;
		const uint8_t *nul = memchr(p + off, 0, len);
		if (nul != NULL)
			len = (size_t)(nul - (p + off));
		if (len >= sizeof(g->g_plugin))
			return (-1);
		memcpy(g->g_plugin, p + off, len);
		g->g_plugin[len] = '\0';
	}
	return (0);
}

/* A length-encoded integer at p[*off]; -1 when it runs past n. */
static int
get_lenenc(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
	size_t need;
	uint8_t b;

	if (*off >= n)
		return (-1);
	b = p[(*off)++];
	if (b < 0xfb) {
		*v = b;
		return (0);
	}
	need = b == 0xfc ? 2 : b == 0xfd ? 3 : b == 0xfe ? 8 : 0;
	if (need == 0 || *off + need > n)
		return (-1);
	*v = 0;
	while (need-- > 0)
		*v |= (uint64_t)p[*off + need] << (8 * need);
	*off += b == 0xfc ? 2 : b == 0xfd ? 3 : 8;
	return (0);
}

int
my_parse_login(const uint8_t *p, size_t n, struct my_login *l)
{
	size_t off = 32;
	uint64_t alen;

	memset(l, 0, sizeof(*l));
	if (n < 32)
		return (-1);
	l->l_caps = le32(p);
	if (!(l->l_caps & CLIENT_PROTOCOL_41))
		return (-1);
	if (n == 32)
		return (0);		/* an SSLRequest: no more fields */
	if (get_cstr(p, n, &off, l->l_user, sizeof(l->l_user)) == -1)
		return (-1);
	if (l->l_caps & CLIENT_LENENC_AUTH) {
		if (get_lenenc(p, n, &off, &alen) == -1)
			return (-1);
	} else if (l->l_caps & CLIENT_SECURE_CONN) {
		if (off >= n)
			return (-1);
		alen = p[off++];
	} else {
		/* Old clients: a NUL-terminated response. */
		size_t start = off;
		if (get_cstr(p, n, &off, NULL, 0) == -1)
			return (-1);
		l->l_auth = p + start;
		l->l_auth_len = off - start - 1;
		goto rest;
	}
	if (alen > n - off)
		return (-1);
	l->l_auth = p + off;
	l->l_auth_len = (size_t)alen;
	off += (size_t)alen;
rest:
	if ((l->l_caps & CLIENT_CONNECT_WITH_DB) && off < n &&
	    get_cstr(p, n, &off, NULL, 0) == -1)
		return (-1);
	if ((l->l_caps & CLIENT_PLUGIN_AUTH) && off < n &&
	    get_cstr(p, n, &off, l->l_plugin, sizeof(l->l_plugin)) == -1)
		return (-1);
	/* Connection attributes and the rest are forwarded unread. */
	return (0);
}

size_t
my_err_packet(uint8_t *buf, size_t len, uint8_t seq, const char *msg)
{
	size_t mlen = strlen(msg), n;

	if (len < 13)
		return (0);
	if (mlen > len - 13)
		mlen = len - 13;
	n = 9 + mlen;
	buf[0] = (uint8_t)(n & 0xff);
	buf[1] = (uint8_t)(n >> 8);
	buf[2] = 0;
	buf[3] = seq;
	buf[4] = 0xff;
	buf[5] = ER_HANDSHAKE_ERROR & 0xff;
	buf[6] = ER_HANDSHAKE_ERROR >> 8;
	memcpy(buf + 7, "#08S01", 6);
	memcpy(buf + 13, msg, mlen);
	return (4 + n);
}

int
my_parse_auth_switch(const uint8_t *p, size_t n, char *plugin, size_t plen,
    uint8_t nonce[20])
{
	size_t off = 1;

	if (n < 1 || p[0] != 0xfe ||
	    get_cstr(p, n, &off, plugin, plen) == -1)
		return (-1);
	if (n - off < 20)
		return (0);
	memcpy(nonce, p + off, 20);
	return (1);
}

size_t
my_packet_len(const uint8_t *h)
{
	return ((size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16);
}

size_t
my_packet(uint8_t *out, size_t cap, uint8_t seq, const uint8_t *p, size_t n)
{
	if (n > MY_MAXPKT || cap < 4 || n > cap - 4)
		return (0);
	out[0] = (uint8_t)(n & 0xff);
	out[1] = (uint8_t)((n >> 8) & 0xff);
	out[2] = (uint8_t)(n >> 16);
	out[3] = seq;
	memcpy(out + 4, p, n);
	return (4 + n);
}

void
my_ssl_request(const uint8_t *login, uint8_t req[32])
{
	memcpy(req, login, 32);
	req[1] |= CLIENT_SSL >> 8;
}

void
my_hide_ssl(uint8_t *p, const struct my_greeting *g)
{
	p[g->g_caps_lo_off + 1] &= (uint8_t)~(CLIENT_SSL >> 8);
}
