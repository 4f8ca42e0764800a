/*
 * fuzz_tls_accept: a server route's handshake (proxy/tls.c) fed a hostile
 * client's bytes: the ALPN selection that reads the ClientHello first
 * (hello.c), then wolfSSL_accept through the endpoint's I/O callbacks
 * (endpoint.c), and the verify callback (policy/) on any certificate the
 * client sends.  wolfSSL is the sanitizer-instrumented build.
 *
 * Input: a flags byte, then the client's stream (ClientHello, and what
 * else it sends before the handshake gives up).  Flags: bit 0 no client
 * certificate asked; bit 1 no ALPN configured (else "h2,http/1.1"); bit 2
 * an allow-list (cert-allowed-cn dm).
 */
#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "../../policy/certset.h"
#include "../../policy/policy.h"
#include "../../proxy/conf.h"
#include "../../proxy/endpoint.h"
#include "../../proxy/tls.h"
#include "fuzz.h"

static struct strlist alpn, no_alpn;
static char *cn_dm[] = { "dm", NULL };

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (strlist_add(&alpn, "h2") == -1 ||
	    strlist_add(&alpn, "http/1.1") == -1)
		abort();
	(void)fuzz_certset_of(FUZZ_SERVER);
	(void)fuzz_certset_of(FUZZ_SERVER_NOVERIFY);
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_rules rules;
	struct tls_params tp;
	struct tls_session ts;
	struct endpoint ep;
	enum tls_status st = TLS_WAIT;
	size_t off = 1;
	ssize_t w;
	int sv[2], i;

	if (size < 1)
		return (0);
	memset(&rules, 0, sizeof(rules));
	if (data[0] & 4) {
		rules.pr_cn.pl_v = cn_dm;
		rules.pr_cn.pl_n = 1;
	}
	memset(&tp, 0, sizeof(tp));
	tp.tp_ctx = certset_ctx(fuzz_certset_of(data[0] & 1 ?
	    FUZZ_SERVER_NOVERIFY : FUZZ_SERVER));
	tp.tp_kind = TLS_SERVER;
	tp.tp_alpn = data[0] & 2 ? &no_alpn : &alpn;
	tp.tp_sni = "";
	tp.tp_rules = &rules;

	fuzz_nonblock_pair(sv);
	endpoint_init(&ep, sv[0]);
	if (tls_setup(&ts, &ep, &tp) == -1)
		abort();	/* the test PKI's context always takes a session */
	/* The client said everything, then ended its side. */
	while (off < size && (w = send(sv[1], data + off, size - off,
	    MSG_NOSIGNAL)) > 0)
		off += (size_t)w;
	shutdown(sv[1], SHUT_WR);
	for (i = 0; i < 64 && st == TLS_WAIT; i++) {
		endpoint_ready(&ep, EV_READ | EV_WRITE);
		st = tls_handshake(&ts, &ep);
		fuzz_drain(sv[1]);
	}
	fuzz_check(st != TLS_WAIT, "the handshake waits on a closed client");
	if (st == TLS_FAIL)
		fuzz_check(ts.ts_v.tv_reason[0] != '\0',
		    "a failed handshake without a reason");
	endpoint_release(&ep);
	close(sv[0]);
	close(sv[1]);
	return (0);
}
