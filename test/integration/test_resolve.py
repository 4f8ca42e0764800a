"""Target host names resolved for every connection (DESIGN 7, issue 12).

Each dmtls here runs in a mount namespace of its own (unshare -m) where
/etc/hosts, /etc/nsswitch.conf and, for the slow lookup, /etc/resolv.conf
are bind mounts of files in the test's folder: the test edits the hosts
file in place and the next connection must follow it, with no reload.
The backends listen on other loopback addresses (127.0.0.2, 127.0.0.3)
with the same port number, so only the name decides where a connection
goes.  Needs root (mount namespaces), as the rest of the suite.
"""

import os
import re
import signal
import socket
import struct
import threading
import time


from backends import EchoServer, wait_until
from conftest import free_port, run
from routes import READY, conf_text, write_conf
from tlsclient import tls_connect

# Mount the given files over their /etc twins, then exec the command.
NS_SCRIPT = ('while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 99; '
             'shift 2; done; shift; exec "$@"')
NSSWITCH_FILES = "hosts: files\n"          # no DNS: a missing name fails at once
NSSWITCH_DNS = "hosts: files dns\n"


class Namespace:
    """Private /etc files for the dmtls processes a test starts."""

    def __init__(self, tmp_path, hosts="", nsswitch=NSSWITCH_FILES, resolv=None):
        self.hosts = os.path.join(str(tmp_path), "hosts")
        self.files = [(self.hosts, "/etc/hosts")]
        self.set_hosts(hosts)
        self._put("nsswitch.conf", nsswitch, "/etc/nsswitch.conf", tmp_path)
        if resolv is not None:
            self._put("resolv.conf", resolv, "/etc/resolv.conf", tmp_path)

    def _put(self, name, text, over, tmp_path):
        path = os.path.join(str(tmp_path), name)
        with open(path, "w") as f:
            f.write(text)
        self.files.append((path, over))

    def set_hosts(self, text):
        """Rewrite the hosts file in place (the bind mount follows the
        inode, so never by rename)."""
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + text)

    def argv(self, argv):
        out = ["unshare", "-m", "--", "sh", "-c", NS_SCRIPT, "sh"]
        for src, dst in self.files:
            out += [src, dst]
        return out + ["--"] + [os.fspath(a) for a in argv]


def pair_of_backends():
    """Echo servers on 127.0.0.2:P and 127.0.0.3:P (the same P)."""
    for _ in range(50):
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(("127.0.0.2", 0))
        p = a.getsockname()[1]
        b = socket.socket()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            b.bind(("127.0.0.3", p))
        except OSError:
            a.close()
            b.close()
            continue
        return EchoServer(sock=a), EchoServer(sock=b), p
    raise AssertionError("no port free on both 127.0.0.2 and 127.0.0.3")


def start_ns_run(procs, dmtls_bin, ns, conf, **judged):
    p = procs.start(ns.argv([dmtls_bin, "run", "-c", conf]), name="dmtls-run", **judged)
    p.wait_log(READY, timeout=10)
    return p


def through(port, pki, payload=b"ping"):
    """One TLS connection to the server route on port: the echo, or None
    when dmtls closed it (the target failed)."""
    s = tls_connect(port, pki, timeout=10)
    try:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = s.recv(65536)
            if not data:
                return None
            got += data
        return got
    except (ConnectionError, OSError):
        return None
    finally:
        s.close()


def route_conf(tmp_path, pki, port, target, extra=(), top=(), level="info"):
    text = conf_text(pki, [("t", port, target, None)], top=top,
                     extra_route_lines={"t": list(extra)})
    text = text.replace('log-level = "info";', 'log-level = "%s";' % level)
    return write_conf(os.path.join(str(tmp_path), "dmtls.conf"), text)[0]


# -- per-connection lookups ----------------------------------------------------------

def test_moved_name_is_followed_without_reload(procs, dmtls_bin, pki, tmp_path):
    a, b, p = pair_of_backends()
    with a, b:
        ns = Namespace(tmp_path, "127.0.0.2 backend.test\n")
        port = free_port()
        d = start_ns_run(procs, dmtls_bin, ns,
                         route_conf(tmp_path, pki, port, "backend.test:%d" % p))
        assert through(port, pki) == b"ping", d.log()
        assert (a.accepted, b.accepted) == (1, 0)
        ns.set_hosts("127.0.0.3 backend.test\n")
        assert through(port, pki) == b"ping", d.log()
        assert (a.accepted, b.accepted) == (1, 1), d.log()
        assert "reload" not in d.log()
        assert "target_unresolved" not in d.log()   # it resolved at start


def test_unresolvable_name_starts_fails_then_works(procs, dmtls_bin, pki, tmp_path):
    a, b, p = pair_of_backends()
    with a, b:
        ns = Namespace(tmp_path)
        port = free_port()
        conf = route_conf(tmp_path, pki, port, "late.test:%d" % p)
        d = start_ns_run(procs, dmtls_bin, ns, conf)
        # Said at start, before any client: a warning, and run serves.
        w = d.wait_log(r"^.*event=target_unresolved.*$")
        assert "level=warn" in w.group(0) and "late.test:%d" % p in w.group(0), w.group(0)
        assert "its connections fail until the name resolves" in w.group(0), w.group(0)
        since = d.mark()
        assert through(port, pki) is None
        m = d.wait_log(r"^.*event=conn_failed.*$", since=since)
        assert re.search(r'reason="cannot resolve late\.test: [^"]+"', m.group(0)), m.group(0)
        ns.set_hosts("127.0.0.3 late.test\n")
        assert through(port, pki) == b"ping", d.log()
        assert b.accepted == 1
        assert len(re.findall(r"event=target_unresolved", d.log())) == 1, d.log()


def test_check_warns_for_unresolvable_name_and_exits_0(dmtls_bin, pki, tmp_path):
    ns = Namespace(tmp_path)
    conf = route_conf(tmp_path, pki, free_port(), "nowhere.test:3306")
    r = run(ns.argv([dmtls_bin, "check", "-c", conf]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^warning: t: target nowhere\.test:3306: cannot resolve nowhere\.test: "
                     r".+; its connections fail until the name resolves$", r.stdout, re.M), \
        r.stdout
    # A name that resolves gets no such warning.
    ns.set_hosts("127.0.0.2 nowhere.test\n")
    r = run(ns.argv([dmtls_bin, "check", "-c", conf]))
    assert r.returncode == 0 and "cannot resolve" not in r.stdout, r.stdout


def test_second_address_used_when_first_refuses(procs, dmtls_bin, pki, tmp_path):
    a, b, p = pair_of_backends()
    a.close()                       # 127.0.0.2:P refuses from now on
    with b:
        ns = Namespace(tmp_path, "127.0.0.2 two.test\n127.0.0.3 two.test\n")
        port = free_port()
        d = start_ns_run(procs, dmtls_bin, ns,
                         route_conf(tmp_path, pki, port, "two.test:%d" % p, level="debug"))
        assert through(port, pki) == b"ping", d.log()
        assert b.accepted == 1
        # The first address was dialled, and refused, first.
        d.wait_log(r'event=connect_next .*addr=127\.0\.0\.2:%d reason="Connection refused"' % p)


def test_literal_target_never_resolves(procs, dmtls_bin, pki, tmp_path):
    """A literal address works with name resolution broken entirely (no
    hosts file entries, nsswitch with nothing but an unknown service)."""
    with EchoServer() as e:
        ns = Namespace(tmp_path, nsswitch="hosts: nosuchservice\n")
        port = free_port()
        d = start_ns_run(procs, dmtls_bin, ns, route_conf(tmp_path, pki, port, e.addr))
        assert through(port, pki) == b"ping", d.log()


class SlowDNS:
    """A DNS server on 127.0.0.77:53 (UDP) that answers A queries with
    `address` after `delay` seconds (AAAA: no record).  .received and
    .answered count the queries and the replies sent."""

    def __init__(self, address="127.0.0.2", delay=0.0):
        self.delay, self.address = delay, address
        self.answered = self.received = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.77", 53))
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._timers = []
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _reply(self, q, peer):
        end = 12
        while q[end] != 0:
            end += 1 + q[end]
        qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
        question = q[12:end + 5]
        an = b""
        if qtype == 1:
            an = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4)
                  + socket.inet_aton(self.address))
        head = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if an else 0, 0, 0)
        self.sock.sendto(head + question + an, peer)
        with self._lock:
            self.answered += 1

    def _loop(self):
        while not self._stop.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            with self._lock:
                self.received += 1
            t = threading.Timer(self.delay, self._reply, (q, peer))
            t.daemon = True
            t.start()
            self._timers.append(t)

    def close(self):
        self._stop.set()
        self._t.join()
        for t in self._timers:
            t.cancel()
        self.sock.close()


def test_lookup_outlived_by_connect_timeout(procs, dmtls_bin, pki, tmp_path):
    """The connect timeout fires while the lookup still runs: the
    connection fails at the deadline, and the answer that comes later is
    dropped without touching it (the ASan build checks that)."""
    dns = SlowDNS(delay=3.0)
    try:
        with EchoServer(sock=_bound("127.0.0.2")) as e:
            ns = Namespace(tmp_path, nsswitch=NSSWITCH_DNS,
                           resolv="nameserver 127.0.0.77\noptions timeout:10 attempts:1\n")
            port = free_port()
            d = start_ns_run(procs, dmtls_bin, ns,
                             route_conf(tmp_path, pki, port, "slow.test:%d" % e.port,
                                        extra=['connect-timeout = "1s";']))
            since = d.mark()
            t0 = time.monotonic()
            assert through(port, pki) is None
            took = time.monotonic() - t0
            m = d.wait_log(r"^.*event=conn_failed.*$", since=since)
            assert 'reason="cannot resolve slow.test: no answer within connect-timeout ' \
                '1000ms"' in m.group(0), m.group(0)
            assert 0.8 < took < 2.8, took
            # The late answers arrive; the resolver keeps serving afterwards.
            wait_until(lambda: dns.answered >= 2, timeout=10, msg="the late DNS answers")
            dns.delay = 0.0
            assert through(port, pki) == b"ping", d.log()
            assert e.accepted == 1
    finally:
        dns.close()


def _bound(host):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    return s


def test_shutdown_cuts_connections_whose_lookups_run(procs, dmtls_bin, pki, tmp_path):
    """More lookups than resolver threads, none answered: at the shutdown
    deadline every connection is cut, running and queued lookups alike,
    and dmtls exits (status 1: connections were cut) with no report."""
    dns = SlowDNS(delay=60.0)
    socks = []
    try:
        ns = Namespace(tmp_path, nsswitch=NSSWITCH_DNS,
                       resolv="nameserver 127.0.0.77\noptions timeout:30 attempts:1\n")
        port = free_port()
        conf = route_conf(tmp_path, pki, port, "slow.test:9", top=['shutdown-timeout = "1s";'],
                          extra=['connect-timeout = "60s";'])
        d = start_ns_run(procs, dmtls_bin, ns, conf, expect_status=1)
        for _ in range(8):
            socks.append(tls_connect(port, pki, timeout=20))
        # Every connection is waiting for its lookup (4 run, 4 queued).
        wait_until(lambda: dns.received >= 8, timeout=10, msg="4 lookups running (A and AAAA each)")
        d.kill(signal.SIGTERM)
        assert d.wait(timeout=15) == 1
        assert d.log().count("reason=\"shutdown timeout\"") == 8, d.log()
    finally:
        for s in socks:
            s.close()
        dns.close()
