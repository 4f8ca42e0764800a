/*
 * fuzz_config: the config loader (proxy/conffile.c): libconfig text ->
 * a validated configuration, with the conf.d folder beside the main file,
 * then the checks `dmtls check` makes on each route's strings (addresses,
 * identity rules).
 *
 * Input: the main file, then the conf.d files, split by FUZZ_SEP.  With
 * no separator there is no conf.d folder; with one and nothing after it
 * the folder is there and empty.  The files go to a private temporary
 * folder.  Host names are not resolved: getaddrinfo() is wrapped (see
 * fuzz.mk) to take numeric addresses only, so no input reaches DNS.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../policy/policy.h"
#include "../../proxy/addr.h"
#include "../../proxy/conf.h"
#include "../../proxy/conffile.h"
#include "fuzz.h"

int __real_getaddrinfo(const char *, const char *, const struct addrinfo *,
    struct addrinfo **);
int __wrap_getaddrinfo(const char *, const char *, const struct addrinfo *,
    struct addrinfo **);

static char dir[64], confd[96], main_path[96];

int
__wrap_getaddrinfo(const char *host, const char *port,
    const struct addrinfo *hints, struct addrinfo **res)
{
	struct addrinfo h;

	memset(&h, 0, sizeof(h));
	if (hints != NULL)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	return (__real_getaddrinfo(host, port, &h, res));
}

/* Empty the conf.d folder and remove it. */
static void
clear_confd(void)
{
	char path[160];
	struct dirent *de;
	DIR *d;

	if ((d = opendir(confd)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", confd, de->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(confd);
}

static void
write_file(const char *path, const uint8_t *p, size_t n)
{
	int fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1) {
		perror(path);
		exit(1);
	}
	if (n > 0 && write(fd, p, n) != (ssize_t)n) {
		perror(path);
		exit(1);
	}
	close(fd);
}

static void
cleanup(void)
{
	clear_confd();
	unlink(main_path);
	rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/dmtls-fuzz-config.XXXXXX",
	    tmp != NULL && strlen(tmp) < 30 ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		exit(1);
	}
	snprintf(confd, sizeof(confd), "%s/conf.d", dir);
	snprintf(main_path, sizeof(main_path), "%s/dmtls.conf", dir);
	atexit(cleanup);
	return (0);
}

/* kind: of the identity rules sl holds, or -1 for a list of no rules. */
static void
check_list(const struct strlist *sl, int kind)
{
	size_t i;

	for (i = 0; i < sl->sl_n; i++)
		fuzz_check(kind < 0 || policy_rule_error(
		    (enum policy_kind)kind, sl->sl_v[i]) == NULL,
		    "a rule loaded that is not a rule");
	fuzz_check(sl->sl_n == 0 || sl->sl_v[sl->sl_n] == NULL,
	    "a list not NULL-terminated");
}

static void
check_route(const struct route_conf *rc)
{
	struct addr a;
	char why[256], buf[64];

	fuzz_check(rc->name != NULL && rc->listen != NULL &&
	    rc->target != NULL && rc->sec.ssl_ca != NULL,
	    "a route loaded without its required keys");
	(void)route_kind_name(rc->kind);
	(void)addr_parse(rc->listen, &a, why, sizeof(why));
	(void)addr_parse(rc->target, &a, why, sizeof(why));
	check_list(&rc->alpn, -1);
	check_list(&rc->sec.allowed_cn, POLICY_CN);
	check_list(&rc->sec.allowed_dns, POLICY_DNS);
	check_list(&rc->sec.allowed_uri, POLICY_URI);
	check_list(&rc->sec.allowed_ou, POLICY_OU);
	strlist_join(&rc->alpn, ",", buf, sizeof(buf));
	fuzz_check(rc->connect_timeout_ms > 0 &&
	    rc->handshake_timeout_ms > 0 && rc->close_timeout_ms > 0 &&
	    rc->idle_timeout_ms >= 0, "a timeout out of range");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_part part[FUZZ_MAXPARTS];
	struct config cf;
	char err[1024], path[160];
	size_t n, i;

	n = fuzz_split(data, size, part, FUZZ_MAXPARTS);
	clear_confd();
	write_file(main_path, part[0].fp_p, part[0].fp_n);
	if (n > 1 && mkdir(confd, 0700) == -1) {
		perror(confd);
		exit(1);
	}
	for (i = 1; i < n; i++) {
		if (part[i].fp_n == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%02zu.conf", confd, i);
		write_file(path, part[i].fp_p, part[i].fp_n);
	}
	err[0] = '\0';
	if (config_load(main_path, &cf, err, sizeof(err)) == -1) {
		fuzz_check(err[0] != '\0', "refused without a message");
		return (0);
	}
	fuzz_check(cf.cf_nroutes > 0, "a config without routes");
	fuzz_check(cf.cf_g.shutdown_timeout_ms >= 0, "a negative timeout");
	for (i = 0; i < cf.cf_nroutes; i++)
		check_route(&cf.cf_routes[i]);
	config_free(&cf);
	return (0);
}
