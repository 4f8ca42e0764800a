/*
 * sandbox.c: no_new_privs, Landlock and seccomp, applied once after
 * start-up and before the worker threads exist (Landlock confines the
 * calling thread and the threads it creates later).
 *
 * Landlock: reading beneath the folders of the config file and of every
 * file a route reads, the few system files name resolution reads, the
 * system libraries (NSS modules are loaded on demand) and the random
 * devices; making and removing sockets where unix: listeners live.  Every
 * right the kernel's ABI knows is handled, so the rest is refused.
 * seccomp (libseccomp): a deny-list, EPERM rather than a kill, of what a
 * proxy never does: run programs, trace, mount, load modules, keyrings,
 * BPF, namespaces, clocks.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <seccomp.h>
#include <linux/landlock.h>

#include "log.h"
#include "sandbox.h"

#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER	(1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE	(1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV	(1ULL << 15)
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZERS	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZERS	1
#endif
#endif
#ifndef SANITIZERS
#define SANITIZERS	0
#endif

#define RIGHTS_FILE	(LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define RIGHTS_READ	(LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_READ_DIR)
#define RIGHTS_SOCK	(RIGHTS_READ | LANDLOCK_ACCESS_FS_MAKE_SOCK | \
	LANDLOCK_ACCESS_FS_REMOVE_FILE)

/* What getaddrinfo() and the clock read, and where wolfSSL seeds. */
static const char *system_files[] = {
	"/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf",
	"/etc/gai.conf", "/etc/host.conf", "/etc/services", "/etc/protocols",
	"/etc/localtime", "/etc/ld.so.cache", "/dev/urandom", "/dev/random",
	"/dev/null", NULL
};
/* NSS modules other than files and dns are loaded when first needed. */
static const char *library_dirs[] = {
	"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", NULL
};

/* Refused with EPERM.  Names this architecture lacks are skipped. */
static const char *denied[] = {
	"execve", "execveat", "mount", "umount2", "pivot_root", "chroot",
	"move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
	"mount_setattr", "init_module", "finit_module", "delete_module",
	"kexec_load", "kexec_file_load", "keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "setns", "unshare", "swapon", "swapoff",
	"reboot", "acct", "settimeofday", "clock_settime", "clock_adjtime",
	"adjtimex", "iopl", "ioperm", "quotactl", "syslog", "userfaultfd",
	"open_by_handle_at", "name_to_handle_at", "uselib", "vhangup",
	"fanotify_init", "io_uring_setup", "io_uring_enter",
	"io_uring_register",
#if !SANITIZERS
	/* LeakSanitizer stops the threads with ptrace to scan them. */
	"ptrace", "process_vm_readv", "process_vm_writev",
#endif
	NULL
};

int
sandbox_sanitizers(void)
{
	return (SANITIZERS);
}

void
sandbox_init(struct sandbox *sb)
{
	memset(sb, 0, sizeof(*sb));
}

void
sandbox_free(struct sandbox *sb)
{
	strlist_free(&sb->sb_read);
	strlist_free(&sb->sb_write);
}

/* The real path of path's folder into out (PATH_MAX); 0 or -1. */
static int
real_dir(const char *path, char *out)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	return (realpath(dirname(buf), out) != NULL ? 0 : -1);
}

static int
add_once(struct strlist *sl, const char *dir)
{
	if (strlist_has(sl, dir))
		return (0);
	return (strlist_add(sl, dir));
}

/* The folder of file as written and, when it is a link, of its target. */
static int
add_file(struct strlist *sl, const char *file)
{
	char dir[PATH_MAX], real[PATH_MAX];

	if (real_dir(file, dir) == 0 && add_once(sl, dir) == -1)
		return (-1);
	if (realpath(file, real) != NULL && real_dir(real, dir) == 0 &&
	    add_once(sl, dir) == -1)
		return (-1);
	return (0);
}

/* The socket path of a unix: listen address, or NULL (abstract, TCP). */
static const char *
unix_path(const char *listen)
{
	if (listen == NULL || strncmp(listen, "unix:", 5) != 0 ||
	    listen[5] == '@' || listen[5] == '\0')
		return (NULL);
	return (listen + 5);
}

int
sandbox_add_config(struct sandbox *sb, const char *path)
{
	return (add_file(&sb->sb_read, path));
}

int
sandbox_add_listen(struct sandbox *sb, const char *listen)
{
	const char *p = unix_path(listen);
	char dir[PATH_MAX];

	if (p == NULL || real_dir(p, dir) == -1)
		return (0);
	return (add_once(&sb->sb_write, dir));
}

int
sandbox_add_route(struct sandbox *sb, const struct route_conf *rc)
{
	const char *files[ROUTE_CONF_FILES_MAX];
	size_t i, n;

	n = route_conf_files(rc, files, ROUTE_CONF_FILES_MAX);
	for (i = 0; i < n; i++)
		if (add_file(&sb->sb_read, files[i]) == -1)
			return (-1);
	return (sandbox_add_listen(sb, rc->listen));
}

/* 1 when real (a real path) lies beneath one of the folders of sl. */
static int
beneath(const struct strlist *sl, const char *real)
{
	size_t i, n;

	for (i = 0; i < sl->sl_n; i++) {
		n = strlen(sl->sl_v[i]);
		if (strcmp(sl->sl_v[i], "/") == 0 ||
		    (strncmp(real, sl->sl_v[i], n) == 0 &&
		    (real[n] == '/' || real[n] == '\0')))
			return (1);
	}
	return (0);
}

int
sandbox_check_route(const struct sandbox *sb, const struct route_conf *rc,
    char *err, size_t errlen)
{
	const char *files[ROUTE_CONF_FILES_MAX], *p;
	char real[PATH_MAX];
	size_t i, n;

	if (sb->sb_landlock == 0)
		return (0);
	n = route_conf_files(rc, files, ROUTE_CONF_FILES_MAX);
	for (i = 0; i < n; i++) {
		/* A missing file is the certificate loader's to report. */
		if (realpath(files[i], real) == NULL || beneath(&sb->sb_read,
		    real))
			continue;
		snprintf(err, errlen, "%s lies outside the folders the sandbox "
		    "let dmtls read when it started; a restart is needed to "
		    "use it (or put it beside the files it reads now)",
		    files[i]);
		return (-1);
	}
	if ((p = unix_path(rc->listen)) != NULL &&
	    (real_dir(p, real) == -1 || !beneath(&sb->sb_write, real))) {
		snprintf(err, errlen, "listen %s: its folder is not one the "
		    "sandbox let dmtls make sockets in when it started; a "
		    "restart is needed to listen there", rc->listen);
		return (-1);
	}
	return (0);
}

/* ---- Landlock --------------------------------------------------------- */

#ifdef __NR_landlock_create_ruleset

static uint64_t
handled_for(int abi)
{
	uint64_t h = ((LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1);

	if (abi >= 2)
		h |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		h |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		h |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return (h);
}

/* Allow access beneath path (a folder) or to it (a file); a path that
 * does not exist is skipped.  0 or -1. */
static int
ll_rule(int rfd, const char *path, uint64_t access, uint64_t handled)
{
	struct landlock_path_beneath_attr pb;
	struct stat st;
	int fd, rv;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1)
		return (errno == ENOENT || errno == ENOTDIR || errno == EACCES ?
		    0 : -1);
	if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
		access &= RIGHTS_FILE;
	memset(&pb, 0, sizeof(pb));
	pb.allowed_access = access & handled;
	pb.parent_fd = fd;
	rv = (int)syscall(__NR_landlock_add_rule, rfd,
	    LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	close(fd);
	return (rv == 0 ? 0 : -1);
}

/* The system files and, when one is a link (resolv.conf to systemd's
 * stub), its target's folder: replaced files stay readable there. */
static int
ll_system(int rfd, uint64_t handled)
{
	char real[PATH_MAX], dir[PATH_MAX];
	int i;

	for (i = 0; system_files[i] != NULL; i++) {
		if (ll_rule(rfd, system_files[i], LANDLOCK_ACCESS_FS_READ_FILE,
		    handled) == -1)
			return (-1);
		if (realpath(system_files[i], real) != NULL &&
		    strcmp(real, system_files[i]) != 0 &&
		    strncmp(real, "/dev/", 5) != 0 &&
		    real_dir(real, dir) == 0 &&
		    ll_rule(rfd, dir, RIGHTS_READ, handled) == -1)
			return (-1);
	}
	for (i = 0; library_dirs[i] != NULL; i++)
		if (ll_rule(rfd, library_dirs[i], LANDLOCK_ACCESS_FS_READ_FILE,
		    handled) == -1)
			return (-1);
	if (SANITIZERS) {
		/* Reports read /proc/self/maps and symbolize the binary. */
		if (ll_rule(rfd, "/proc", RIGHTS_READ, handled) == -1 ||
		    (realpath("/proc/self/exe", real) != NULL &&
		    real_dir(real, dir) == 0 &&
		    ll_rule(rfd, dir, LANDLOCK_ACCESS_FS_READ_FILE, handled) ==
		    -1))
			return (-1);
	}
	return (0);
}

static void
landlock_apply(struct sandbox *sb)
{
	struct landlock_ruleset_attr ra;
	const char *what = "landlock_create_ruleset";
	long abi;
	size_t i;
	int rfd = -1;

	abi = syscall(__NR_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		snprintf(sb->sb_landlock_why, sizeof(sb->sb_landlock_why), "%s",
		    errno == ENOSYS ? "this kernel has no Landlock" :
		    errno == EOPNOTSUPP ? "Landlock is disabled in this kernel "
		    "(add landlock to the lsm= boot parameter)" :
		    errno == EPERM ? "landlock_create_ruleset was refused: a "
		    "seccomp filter around dmtls (systemd's SystemCallFilter=) "
		    "must allow landlock_create_ruleset, landlock_add_rule and "
		    "landlock_restrict_self" : strerror(errno));
		return;
	}
	memset(&ra, 0, sizeof(ra));
	ra.handled_access_fs = handled_for((int)abi);
	if ((rfd = (int)syscall(__NR_landlock_create_ruleset, &ra,
	    sizeof(ra), 0)) == -1)
		goto err;
	what = "landlock_add_rule";
	for (i = 0; i < sb->sb_read.sl_n; i++)
		if (ll_rule(rfd, sb->sb_read.sl_v[i], RIGHTS_READ,
		    ra.handled_access_fs) == -1)
			goto err;
	for (i = 0; i < sb->sb_write.sl_n; i++)
		if (ll_rule(rfd, sb->sb_write.sl_v[i], RIGHTS_SOCK,
		    ra.handled_access_fs) == -1)
			goto err;
	if (ll_system(rfd, ra.handled_access_fs) == -1)
		goto err;
	what = "landlock_restrict_self";
	if (syscall(__NR_landlock_restrict_self, rfd, 0) == -1)
		goto err;
	close(rfd);
	sb->sb_landlock = (int)abi;
	return;
err:
	snprintf(sb->sb_landlock_why, sizeof(sb->sb_landlock_why), "%s: %s",
	    what, strerror(errno));
	if (rfd != -1)
		close(rfd);
}

#else

static void
landlock_apply(struct sandbox *sb)
{
	snprintf(sb->sb_landlock_why, sizeof(sb->sb_landlock_why), "dmtls "
	    "was built without the Landlock system call numbers");
}

#endif

/* ---- seccomp ---------------------------------------------------------- */

/* 0, or -1 with why. */
static int
seccomp_apply(char *why, size_t whylen)
{
	scmp_filter_ctx ctx;
	int i, nr, rc;

	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == -1 && errno == EINVAL) {
		snprintf(why, whylen, "this kernel has no seccomp");
		return (-1);
	}
	if ((ctx = seccomp_init(SCMP_ACT_ALLOW)) == NULL) {
		snprintf(why, whylen, "seccomp_init failed");
		return (-1);
	}
	/* Every thread, should one exist already. */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	/* A binary tree of system call numbers, not a linear scan: the filter
	 * runs on every read and write of the data path. */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	for (i = 0; denied[i] != NULL; i++) {
		if ((nr = seccomp_syscall_resolve_name(denied[i])) ==
		    __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr,
		    0)) < 0) {
			snprintf(why, whylen, "seccomp_rule_add %s: %s",
			    denied[i], strerror(-rc));
			seccomp_release(ctx);
			return (-1);
		}
	}
	if ((rc = seccomp_load(ctx)) < 0) {
		snprintf(why, whylen, "seccomp_load: %s%s", strerror(-rc),
		    rc == -EPERM || rc == -EACCES ? " (a seccomp filter around "
		    "dmtls must allow seccomp)" : "");
		seccomp_release(ctx);
		return (-1);
	}
	seccomp_release(ctx);
	return (0);
}

void
sandbox_apply(struct sandbox *sb)
{
	char why[256], missing[512];

	missing[0] = '\0';
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
		sb->sb_nnp = 1;
	else
		snprintf(missing, sizeof(missing), "no_new_privs: %s; ",
		    strerror(errno));
	landlock_apply(sb);
	if (sb->sb_landlock == 0)
		snprintf(missing + strlen(missing), sizeof(missing) -
		    strlen(missing), "Landlock: %s, so files are not "
		    "confined; ", sb->sb_landlock_why);
	if (seccomp_apply(why, sizeof(why)) == 0)
		sb->sb_seccomp = 1;
	else
		snprintf(missing + strlen(missing), sizeof(missing) -
		    strlen(missing), "seccomp: %s, so system calls are not "
		    "filtered; ", why);
	if (missing[0] != '\0') {
		missing[strlen(missing) - 2] = '\0';
		log_msg(LOG_WARN, "sandbox_partial", "the kernel did not offer "
		    "all of the sandbox: %s", missing);
	}
	if (sb->sb_landlock)
		snprintf(why, sizeof(why), "abi%d", sb->sb_landlock);
	else
		snprintf(why, sizeof(why), "off");
	log_msg(LOG_INFO, "sandbox", "no_new_privs=%s landlock=%s seccomp=%s "
	    "read_folders=%zu socket_folders=%zu%s", sb->sb_nnp ? "on" : "off",
	    why, sb->sb_seccomp ? "on" : "off", sb->sb_read.sl_n,
	    sb->sb_write.sl_n, SANITIZERS ? " sanitizers=/proc,ptrace" : "");
}
