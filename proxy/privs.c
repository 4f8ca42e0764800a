/*
 * privs.c: drop root after binding: supplementary groups, group, user, in
 * the order that leaves no way back.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "privs.h"
#include "util.h"

/* A name, or a number that may have no entry. */
static int
lookup_user(const char *user, uid_t *uid, gid_t *gid, int *named)
{
	struct passwd *pw;
	long v;

	errno = 0;
	if ((pw = getpwnam(user)) != NULL) {
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		*named = 1;
		return (0);
	}
	if (parse_long(user, 0, 0x7ffffffe, &v) == 0) {
		*uid = (uid_t)v;
		*named = 0;
		if ((pw = getpwuid(*uid)) != NULL) {
			*gid = pw->pw_gid;
			*named = 1;
		} else
			*gid = (gid_t)v;
		return (0);
	}
	return (-1);
}

int
privs_resolve(const char *user, const char *group, struct privs *pv,
    char *err, size_t errlen)
{
	struct group *gr;
	int named;
	long v;

	memset(pv, 0, sizeof(*pv));
	if (lookup_user(user, &pv->pv_uid, &pv->pv_gid, &named) == -1) {
		snprintf(err, errlen, "user %s: no such user; create it (useradd "
		    "--system %s) or name another", user, user);
		return (-1);
	}
	snprintf(pv->pv_user, sizeof(pv->pv_user), "%s", user);
	if (group != NULL) {
		if ((gr = getgrnam(group)) != NULL)
			pv->pv_gid = gr->gr_gid;
		else if (parse_long(group, 0, 0x7ffffffe, &v) == 0)
			pv->pv_gid = (gid_t)v;
		else {
			snprintf(err, errlen, "group %s: no such group; create "
			    "it (groupadd --system %s) or name another", group,
			    group);
			return (-1);
		}
		snprintf(pv->pv_group, sizeof(pv->pv_group), "%s", group);
	} else if ((gr = getgrgid(pv->pv_gid)) != NULL)
		snprintf(pv->pv_group, sizeof(pv->pv_group), "%s",
		    gr->gr_name);
	else
		snprintf(pv->pv_group, sizeof(pv->pv_group), "%lu",
		    (unsigned long)pv->pv_gid);
	/* A number without an entry has no supplementary groups. */
	pv->pv_ngroups = named ? -1 : 0;
	return (0);
}

int
privs_drop(struct privs *pv, char *err, size_t errlen)
{
	gid_t groups[256];
	int n;

	if (geteuid() != 0) {
		if (getuid() == pv->pv_uid && geteuid() == pv->pv_uid)
			return (0);
		snprintf(err, errlen, "user %s: dmtls runs as uid %lu, not "
		    "root, and cannot switch to another user; start it as "
		    "root or remove the user key", pv->pv_user,
		    (unsigned long)geteuid());
		return (-1);
	}
	if (pv->pv_ngroups == -1) {
		if (initgroups(pv->pv_user, pv->pv_gid) == -1) {
			snprintf(err, errlen, "initgroups %s: %s", pv->pv_user,
			    strerror(errno));
			return (-1);
		}
	} else if (setgroups(1, &pv->pv_gid) == -1) {
		snprintf(err, errlen, "setgroups: %s", strerror(errno));
		return (-1);
	}
	if (setresgid(pv->pv_gid, pv->pv_gid, pv->pv_gid) == -1) {
		snprintf(err, errlen, "setresgid %s: %s", pv->pv_group,
		    strerror(errno));
		return (-1);
	}
	if (setresuid(pv->pv_uid, pv->pv_uid, pv->pv_uid) == -1) {
		snprintf(err, errlen, "setresuid %s: %s", pv->pv_user,
		    strerror(errno));
		return (-1);
	}
	/* No way back: with every uid set and no capability left, these
	 * must fail. */
	if (pv->pv_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0 ||
	    (pv->pv_gid != 0 && setgid(0) == 0))) {
		snprintf(err, errlen, "user %s: root could be regained after "
		    "dropping privileges; refusing to serve", pv->pv_user);
		return (-1);
	}
	if (getuid() != pv->pv_uid || geteuid() != pv->pv_uid ||
	    getgid() != pv->pv_gid || getegid() != pv->pv_gid) {
		snprintf(err, errlen, "user %s: the uid or gid did not change",
		    pv->pv_user);
		return (-1);
	}
	n = getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	pv->pv_ngroups = n < 0 ? 0 : n;
	pv->pv_dropped = 1;
	return (0);
}
