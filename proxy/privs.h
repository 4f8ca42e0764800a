/*
 * privs.h: dropping root after the listeners are bound (`user`, `group`).
 */
#ifndef DMTLS_PRIVS_H
#define DMTLS_PRIVS_H

#include <sys/types.h>

#include <stddef.h>

struct privs {
	int	pv_dropped;		/* 1 once we switched to pv_uid */
	uid_t	pv_uid;
	gid_t	pv_gid;
	char	pv_user[64];
	char	pv_group[64];
	int	pv_ngroups;		/* supplementary groups in force */
};

/*
 * privs_resolve(user, group, pv, err, errlen): look up user (a name, or a
 * number) and group (NULL: the user's own) while the account databases
 * are still readable.  0, or -1 with a message naming the key and the fix.
 */
int privs_resolve(const char *, const char *, struct privs *, char *,
    size_t);

/*
 * privs_drop(pv, err, errlen): become pv's user: its supplementary groups
 * (initgroups), its group, its uid, real, effective and saved, in that
 * order, and check that root cannot be regained.  Started as that user
 * already, nothing to do.  Not root and not that user: -1.  0 or -1 with
 * a message; on -1 the process must not serve.
 */
int privs_drop(struct privs *, char *, size_t);

#endif
