/*
 * mysqlproto.h: MySQL protocol packets as far as the in-band TLS upgrade
 * needs them: parsers for what the peers send (greeting, login, auth
 * switch) and builders for what dmtls sends (packets, SSLRequest, ERR).
 * Pure functions on bytes: no socket, no state, no allocation.  Every
 * byte parsed is a peer's, and every length is checked.
 */
#ifndef DMTLS_MYSQLPROTO_H
#define DMTLS_MYSQLPROTO_H

#include <stddef.h>
#include <stdint.h>

#define CLIENT_PROTOCOL_41	0x00000200U
#define CLIENT_SSL		0x00000800U
#define CLIENT_SECURE_CONN	0x00008000U
#define CLIENT_CONNECT_WITH_DB	0x00000008U
#define CLIENT_PLUGIN_AUTH	0x00080000U
#define CLIENT_LENENC_AUTH	0x00200000U

/* Bounds on what the upgrade accepts before the auth phase ends. */
#define MY_MAXPKT	(16384 - 4)

/* A server greeting (HandshakeV10) as far as dmtls needs it. */
struct my_greeting {
	uint32_t	g_caps;
	size_t		g_caps_lo_off;	/* payload offset of the low flags */
	uint8_t		g_nonce[20];
	size_t		g_nonce_len;
	char		g_plugin[64];
	char		g_version[64];
};

/* my_parse_greeting(p, n, g): 0, or -1 when the payload is malformed. */
int my_parse_greeting(const uint8_t *, size_t, struct my_greeting *);

/* A client login (HandshakeResponse41) as far as dmtls needs it. */
struct my_login {
	uint32_t	l_caps;
	char		l_user[128];
	const uint8_t	*l_auth;	/* points into the payload */
	size_t		 l_auth_len;
	char		l_plugin[64];
};

/* my_parse_login(p, n, l): 0, or -1 when the payload is malformed. */
int my_parse_login(const uint8_t *, size_t, struct my_login *);

/*
 * my_parse_auth_switch(p, n, plugin, plen, nonce): an AuthSwitchRequest
 * (0xfe, plugin name, NUL, auth data): the plugin name (cut to fit plen)
 * and, when it carries 20 bytes of data, the new nonce.  1 with nonce
 * set, 0 without, -1 malformed.
 */
int my_parse_auth_switch(const uint8_t *, size_t, char *, size_t,
    uint8_t[20]);

/* my_packet_len(hdr): the payload length a 4-byte packet header gives. */
size_t my_packet_len(const uint8_t *);

/*
 * my_packet(out, cap, seq, p, n): packet header (length, seq) and payload
 * into out; its size, or 0 when n exceeds MY_MAXPKT or cap.
 */
size_t my_packet(uint8_t *, size_t, uint8_t, const uint8_t *, size_t);

/*
 * my_ssl_request(login, req): the SSLRequest for a login payload of at
 * least 32 bytes: its first 32 bytes (flags, max packet size, charset:
 * what mysqld takes from here) with CLIENT_SSL set.
 */
void my_ssl_request(const uint8_t *, uint8_t[32]);

/* my_hide_ssl(p, g): clear CLIENT_SSL in the greeting payload g came from. */
void my_hide_ssl(uint8_t *, const struct my_greeting *);

/* my_err_packet(buf, len, seq, msg): an ERR packet; returns its size. */
size_t my_err_packet(uint8_t *, size_t, uint8_t, const char *);

#endif
