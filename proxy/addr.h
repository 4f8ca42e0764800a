/*
 * addr.h: the address forms of DESIGN section 2 (HOST:PORT, [V6]:PORT,
 * unix:/path), listening sockets and non-blocking connects.
 */
#ifndef DMTLS_ADDR_H
#define DMTLS_ADDR_H

#include <sys/socket.h>

struct addr {
	struct sockaddr_storage	a_ss;
	socklen_t		a_len;
	char			a_host[256];	/* host part as written, "" for unix */
	int			a_is_ip;	/* host is a literal IP address */
	int			a_unix;
	int			a_systemd;	/* systemd:NAME, name in a_host */
	int			a_name;		/* a host name left unresolved
						 * (addr_parse_target): a_ss is
						 * empty, a_port holds the port */
	char			a_port[8];	/* the port as written */
};

/*
 * addr_parse(s, a, err, errlen): parse and resolve s (blocking resolver,
 * first address).  Returns 0, or -1 with a reason for people in err.
 */
int addr_parse(const char *, struct addr *, char *, size_t);

/*
 * addr_parse_target(s, a, err, errlen): parse s like addr_parse, but leave
 * a host name unresolved (a_name set): it is looked up for every
 * connection.  Literal addresses and unix paths are filled in as by
 * addr_parse.  Returns 0, or -1 with a reason for people in err.
 */
int addr_parse_target(const char *, struct addr *, char *, size_t);

/*
 * addr_lookup(host, port, res, err, errlen): the system's resolver
 * (getaddrinfo: /etc/hosts, DNS, as nsswitch.conf says), blocking, TCP
 * addresses in the order it returns them.  Returns 0 with *res to free
 * with freeaddrinfo(), or -1 with "cannot resolve HOST: why" in err.
 */
struct addrinfo;
int addr_lookup(const char *, const char *, struct addrinfo **, char *,
    size_t);

/*
 * addr_str(sa, len, buf, buflen): "1.2.3.4:5", "[::1]:5", "unix:/p",
 * "unix:(unnamed)" or "?"; reads only the len bytes the kernel filled in.
 */
const char *addr_str(const struct sockaddr *, socklen_t, char *, size_t);

/*
 * addr_listen(a, reuseport, err, errlen): a non-blocking listening socket
 * bound to a.  Returns the fd, or -1 with a reason in err.
 */
int addr_listen(const struct addr *, int, char *, size_t);

/*
 * addr_connect(a): start a non-blocking connect to a.  Returns the fd (the
 * connect may still be in progress), or -1 with errno set.
 */
int addr_connect(const struct addr *);

/* addr_dial(sa, len): addr_connect to a socket address of len bytes. */
int addr_dial(const struct sockaddr *, socklen_t);

/*
 * addr_systemd_fd(name, err, errlen): the listening socket systemd passed
 * under that name (LISTEN_FDS / LISTEN_FDNAMES; an unnamed socket is
 * "unknown", as systemd calls it).  Returns the fd, or -1 with a reason.
 */
int addr_systemd_fd(const char *, char *, size_t);

/* sock_tune(fd): TCP_NODELAY on TCP sockets; ignores errors. */
void sock_tune(int);

#endif
