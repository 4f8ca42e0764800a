/*
 * sandbox.h: confinement after start-up (DESIGN 7): no_new_privs, a
 * Landlock ruleset over the files dmtls reads and the folders of its unix
 * listeners, and a seccomp filter refusing what dmtls never does.
 */
#ifndef DMTLS_SANDBOX_H
#define DMTLS_SANDBOX_H

#include <stddef.h>

#include "conf.h"

struct sandbox {
	int		sb_nnp;		/* no_new_privs set */
	int		sb_landlock;	/* ABI in force; 0 none */
	int		sb_seccomp;	/* filter loaded */
	char		sb_landlock_why[160];	/* why not, when not */
	struct strlist	sb_read;	/* folders (real paths) read beneath */
	struct strlist	sb_write;	/* folders of unix listeners */
};

/* sandbox_init(sb): empty, nothing in force. */
void sandbox_init(struct sandbox *);

/* sandbox_add_config(sb, path): read the config file's folder (and so
 * its conf.d).  0 or -1 on ENOMEM. */
int sandbox_add_config(struct sandbox *, const char *);

/* sandbox_add_route(sb, rc): read the folders of the route's files
 * (route_conf_files()); write where its unix: listener lives.  0 or -1. */
int sandbox_add_route(struct sandbox *, const struct route_conf *);

/* sandbox_add_listen(sb, listen): a unix: address (the status listener's)
 * may be replaced in its folder; others are ignored.  0 or -1. */
int sandbox_add_listen(struct sandbox *, const char *);

/*
 * sandbox_apply(sb): confine the calling thread and every thread it
 * starts later: no_new_privs, Landlock with what the kernel offers (the
 * system files name resolution reads beside the folders added), seccomp.
 * What the kernel lacks is logged once and left out; never fails.  Call
 * it before any other thread exists.
 */
void sandbox_apply(struct sandbox *);

/*
 * sandbox_check_route(sb, rc, err, errlen): with Landlock in force, 0 when
 * every file of rc lies beneath a folder read at start and its unix:
 * listener in a folder written then; else -1 naming the file and saying
 * that a restart is needed.  Without Landlock, always 0.
 */
int sandbox_check_route(const struct sandbox *, const struct route_conf *,
    char *, size_t);

/* sandbox_sanitizers(): 1 in a sanitizer build (/proc readable, ptrace
 * allowed), else 0. */
int sandbox_sanitizers(void);

/* sandbox_free(sb): free the folder lists. */
void sandbox_free(struct sandbox *);

#endif
