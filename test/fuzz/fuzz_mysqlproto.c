/*
 * fuzz_mysqlproto: the MySQL packet parsers of proxy/mysqlproto.c, on the
 * payloads a server (greeting, auth switch) and a client (login) send, and
 * the builders mysql.c calls on what they parsed.
 *
 * Input: a selector byte, then one payload.  Selector bits 0-1: 0 the
 * server's greeting, 1 the client's login, 2 an AuthSwitchRequest, 3 all
 * three on the same bytes.  Bits 2-7 size the buffers of the builders.
 */
#include <stdlib.h>
#include <string.h>

#include "../../proxy/mysqlproto.h"
#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return (0);
}

static void
greeting(const uint8_t *p, size_t n)
{
	struct my_greeting g;
	uint8_t *copy;

	if (my_parse_greeting(p, n, &g) == -1)
		return;
	fuzz_check(memchr(g.g_version, 0, sizeof(g.g_version)) != NULL,
	    "greeting: version not terminated");
	fuzz_check(memchr(g.g_plugin, 0, sizeof(g.g_plugin)) != NULL,
	    "greeting: plugin not terminated");
	fuzz_check(g.g_nonce_len == 8 || g.g_nonce_len == 20,
	    "greeting: nonce length");
	fuzz_check(g.g_caps_lo_off + 2 <= n, "greeting: flags offset");
	/* What on_greeting() does to the copy it forwards. */
	if ((copy = malloc(n)) == NULL)
		return;
	memcpy(copy, p, n);
	my_hide_ssl(copy, &g);
	fuzz_check(!(copy[g.g_caps_lo_off + 1] & (CLIENT_SSL >> 8)),
	    "greeting: CLIENT_SSL still shown");
	free(copy);
}

static void
login(const uint8_t *p, size_t n)
{
	struct my_login l;
	uint8_t req[32];

	if (my_parse_login(p, n, &l) == -1)
		return;
	fuzz_check(memchr(l.l_user, 0, sizeof(l.l_user)) != NULL,
	    "login: user not terminated");
	fuzz_check(memchr(l.l_plugin, 0, sizeof(l.l_plugin)) != NULL,
	    "login: plugin not terminated");
	fuzz_check(l.l_auth_len == 0 || (l.l_auth >= p &&
	    l.l_auth_len <= (size_t)(p + n - l.l_auth)),
	    "login: auth response outside the payload");
	fuzz_check(n >= 32, "login: parsed with fewer than 32 bytes");
	/* What on_login() sends from it. */
	my_ssl_request(p, req);
	fuzz_check(req[1] & (CLIENT_SSL >> 8), "login: SSLRequest lacks SSL");
}

static void
auth_switch(const uint8_t *p, size_t n, size_t plen)
{
	char *plugin;
	uint8_t nonce[20];
	int r;

	/* A plugin buffer of plen bytes, to find writes past it. */
	if ((plugin = malloc(plen)) == NULL)
		return;
	r = my_parse_auth_switch(p, n, plugin, plen, nonce);
	fuzz_check(r >= -1 && r <= 1, "auth switch: result");
	if (r >= 0)
		fuzz_check(memchr(plugin, 0, plen) != NULL,
		    "auth switch: plugin not terminated");
	free(plugin);
}

/* The builders, on what a peer sent: a packet, an ERR with its text. */
static void
builders(const uint8_t *p, size_t n, size_t cap)
{
	uint8_t *out;
	char *msg;
	size_t k;

	if ((out = malloc(cap + 1)) == NULL)
		return;
	k = my_packet(out, cap, 3, p, n);
	fuzz_check(k == 0 || (k == n + 4 && my_packet_len(out) == n),
	    "my_packet: length");
	if ((msg = malloc(n + 1)) != NULL) {
		memcpy(msg, p, n);
		msg[n] = '\0';
		k = my_err_packet(out, cap, 7, msg);
		fuzz_check(k <= cap, "my_err_packet: past its buffer");
		fuzz_check(k == 0 || my_packet_len(out) + 4 == k,
		    "my_err_packet: length");
		free(msg);
	}
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *p;
	size_t n;
	int sel;

	if (size < 1)
		return (0);
	sel = data[0] & 3;
	n = size - 1;
	/* The payload alone, in a block of its size: a read past it or
	 * before it is a heap overflow. */
	if ((p = malloc(n > 0 ? n : 1)) == NULL)
		return (0);
	memcpy(p, data + 1, n);
	if (sel == 0 || sel == 3)
		greeting(p, n);
	if (sel == 1 || sel == 3)
		login(p, n);
	if (sel == 2 || sel == 3)
		auth_switch(p, n, 1 + (data[0] >> 2));
	builders(p, n, (size_t)(data[0] >> 2) * 300);
	free(p);
	return (0);
}
