/*
 * fuzz_hello: the ClientHello reader of proxy/hello.c (the ALPN list a
 * server route selects from), on the first bytes a TLS client sends.
 *
 * Input: the client's bytes.  hello_parse() reads them whole and cut one
 * byte short (each in a block of its size), and the list it returns is
 * checked against hello_offers() name by name.
 */
#include <stdlib.h>
#include <string.h>

#include "../../proxy/hello.h"
#include "fuzz.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return (0);
}

/* Every name of a list hello_parse() checked is one hello_offers() finds. */
static void
check_list(const uint8_t *buf, size_t n, const uint8_t *list, size_t len)
{
	char name[256];
	size_t off, l;

	fuzz_check(list >= buf && len <= (size_t)(buf + n - list),
	    "the ALPN list is outside the input");
	fuzz_check(len >= 2, "an ALPN list without a name");
	for (off = 0; off < len; off += 1 + l) {
		l = list[off];
		fuzz_check(l > 0 && off + 1 + l <= len,
		    "hello_parse passed a list that does not parse");
		memcpy(name, list + off + 1, l);
		name[l] = '\0';
		if (strlen(name) == l)
			fuzz_check(hello_offers(list, len, name),
			    "hello_offers misses a name of the list");
	}
	(void)hello_offers(list, len, "h2");
	(void)hello_offers(list, len, "http/1.1");
	(void)hello_offers(list, len, "");
}

static enum hello_verdict
parse(const uint8_t *data, size_t n)
{
	const uint8_t *list = NULL;
	enum hello_verdict r;
	uint8_t *buf;
	size_t len = 0;

	if ((buf = malloc(n > 0 ? n : 1)) == NULL)
		abort();
	memcpy(buf, data, n);
	r = hello_parse(buf, n, &list, &len);
	if (r == HELLO_ALPN)
		check_list(buf, n, list, len);
	free(buf);
	return (r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum hello_verdict whole, cut;

	whole = parse(data, size);
	if (size == 0)
		return (0);
	cut = parse(data, size - 1);
	/* Once the first record is whole, more bytes change nothing. */
	if (cut != HELLO_MORE)
		fuzz_check(whole == cut, "a verdict changed with one more byte");
	return (0);
}
