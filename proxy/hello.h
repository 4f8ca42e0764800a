/*
 * hello.h: reading the protocols a TLS ClientHello offers (ALPN, RFC 7301),
 * from bytes alone: no socket, no session, no allocation.  Every byte is a
 * peer's, and every length is checked against what encloses it.
 */
#ifndef DMTLS_HELLO_H
#define DMTLS_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* What the first bytes of a TLS stream say about ALPN. */
enum hello_verdict {
	HELLO_ALPN,		/* offers protocols: the list is set */
	HELLO_NO_ALPN,		/* a ClientHello without ALPN */
	HELLO_MORE,		/* the first record is not whole yet */
	HELLO_OTHER,		/* not a ClientHello dmtls reads in one
				 * record: wolfSSL will judge it */
	HELLO_BAD_ALPN		/* its ALPN extension does not parse */
};

/*
 * hello_parse(buf, n, list, len): look at the first record in buf[0..n).
 * With HELLO_ALPN, list and len give the protocol names (each with its
 * length byte), checked to fill the list exactly; they point into buf.
 */
enum hello_verdict hello_parse(const uint8_t *, size_t, const uint8_t **,
    size_t *);

/* hello_offers(list, len, proto): 1 when the checked list holds proto. */
int hello_offers(const uint8_t *, size_t, const char *);

#endif
