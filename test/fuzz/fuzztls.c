/*
 * fuzztls.c: certificate sets from the test PKI, for the targets that run
 * wolfSSL sessions (fuzz.h fuzz_certset_of).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/certset.h"
#include "../../proxy/tls.h"
#include "fuzz.h"
#include "pki.h"

/* One memfd per PEM, written once. */
static const char *
pem_path(const char *name, const char *pem)
{
	int fd = fuzz_memfd(name);

	fuzz_memfd_set(fd, pem, strlen(pem));
	return (fuzz_memfd_path(fd));
}

struct certset *
fuzz_certset_of(enum fuzz_pki which)
{
	static struct certset *made[4];
	static const char *ca, *cert, *key;
	struct certsrc_params p;
	struct certsrc *src;
	char err[1024];

	if (made[which] != NULL)
		return (made[which]);
	if (ca == NULL) {
		ca = pem_path("ca.pem", fuzz_ca_pem);
		cert = pem_path("server.pem", fuzz_server_pem);
		key = pem_path("server-key.pem", fuzz_server_key_pem);
	}
	memset(&p, 0, sizeof(p));
	p.name = "fuzz";
	p.ssl_ca = ca;
	p.verify_cb = tls_verify_cb;
	switch (which) {
	case FUZZ_SERVER:
		p.verify_client = 1;
		/* FALLTHROUGH */
	case FUZZ_SERVER_NOVERIFY:
	case FUZZ_PEER_SERVER:
		p.tls_server = 1;
		p.ssl_cert = cert;
		p.ssl_key = key;
		break;
	case FUZZ_CLIENT:
		break;
	}
	if (which == FUZZ_PEER_SERVER)
		p.verify_cb = NULL;
	if ((src = certsrc_new(&p, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fuzz: cannot build the test PKI's set: %s\n",
		    err);
		exit(1);
	}
	/* The source goes, the set stays (one reference). */
	made[which] = certsrc_current(src);
	certsrc_free(src);
	return (made[which]);
}
