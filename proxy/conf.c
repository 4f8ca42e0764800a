/*
 * conf.c: route configuration helpers shared by the command line and the
 * config file loader.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

const char *
route_kind_name(enum route_kind k)
{
	switch (k) {
	case ROUTE_SERVER:	return "server";
	case ROUTE_CLIENT:	return "client";
	case ROUTE_MYSQL:	return "mysql";
	}
	return "?";
}

void
route_conf_init(struct route_conf *rc, enum route_kind kind)
{
	memset(rc, 0, sizeof(*rc));
	rc->kind = kind;
	rc->connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
	rc->handshake_timeout_ms = DEF_HANDSHAKE_TIMEOUT_MS;
	rc->close_timeout_ms = DEF_CLOSE_TIMEOUT_MS;
	rc->reread = 1;
	rc->sec.verify_client = 1;
}

void
route_conf_free(struct route_conf *rc)
{
	free(rc->name);
	free(rc->src_file);
	free(rc->listen);
	free(rc->target);
	strlist_free(&rc->alpn);
	free(rc->sec.ssl_ca);
	free(rc->sec.ssl_cert);
	free(rc->sec.ssl_key);
	free(rc->sec.server_name);
	strlist_free(&rc->sec.allowed_cn);
	strlist_free(&rc->sec.allowed_dns);
	strlist_free(&rc->sec.allowed_uri);
	strlist_free(&rc->sec.allowed_ou);
	strlist_free(&rc->sec.ssl_crl);
	memset(rc, 0, sizeof(*rc));
}

size_t
route_conf_files(const struct route_conf *rc, const char **out, size_t max)
{
	const char *all[] = { rc->sec.ssl_ca, rc->sec.ssl_cert,
	    rc->sec.ssl_key };
	size_t i, n = 0;

	for (i = 0; i < sizeof(all) / sizeof(all[0]) && n < max; i++)
		if (all[i] != NULL && all[i][0] != '\0')
			out[n++] = all[i];
	for (i = 0; i < rc->sec.ssl_crl.sl_n && n < max; i++)
		out[n++] = rc->sec.ssl_crl.sl_v[i];
	return (n);
}

int
strlist_add(struct strlist *sl, const char *s)
{
	char **v;
	char *dup;

	if ((dup = strdup(s)) == NULL)
		return (-1);
	if ((v = realloc(sl->sl_v, (sl->sl_n + 2) * sizeof(*v))) == NULL) {
		free(dup);
		return (-1);
	}
	v[sl->sl_n++] = dup;
	v[sl->sl_n] = NULL;
	sl->sl_v = v;
	return (0);
}

int
strlist_add_csv(struct strlist *sl, const char *s)
{
	const char *p = s, *comma;
	char item[1024];
	size_t n;

	while (*p != '\0') {
		comma = strchr(p, ',');
		n = comma ? (size_t)(comma - p) : strlen(p);
		if (n >= sizeof(item))
			return (-1);
		memcpy(item, p, n);
		item[n] = '\0';
		if (n > 0 && strlist_add(sl, item) == -1)
			return (-1);
		p += n;
		if (*p == ',')
			p++;
	}
	return (0);
}

int
strlist_has(const struct strlist *sl, const char *s)
{
	size_t i;

	for (i = 0; i < sl->sl_n; i++)
		if (strcmp(sl->sl_v[i], s) == 0)
			return (1);
	return (0);
}

void
strlist_join(const struct strlist *sl, const char *sep, char *buf, size_t len)
{
	size_t i, off = 0;
	int n;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (i = 0; i < sl->sl_n && off < len; i++) {
		n = snprintf(buf + off, len - off, "%s%s", i ? sep : "",
		    sl->sl_v[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

void
strlist_free(struct strlist *sl)
{
	size_t i;

	for (i = 0; i < sl->sl_n; i++)
		free(sl->sl_v[i]);
	free(sl->sl_v);
	sl->sl_v = NULL;
	sl->sl_n = 0;
}
