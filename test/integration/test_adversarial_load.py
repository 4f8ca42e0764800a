"""Adversarial load (issue 10, "Adversarial tests in make check"): peers
that do not read, a backend that flaps, and certificate rotation under load.
Loopback only; every test is bounded and stops by itself.

Memory bound of the never-reading tests, from DESIGN.md section 8: dmtls
keeps a bounded buffer per direction (a TLS record's worth, 16 KiB of
plaintext, plus wolfSSL's record buffers of about the same size on the TLS
leg) and stops reading a side while the other cannot take more; whatever
else is in flight sits in kernel socket buffers, which are not in RSS.
So pushing 64 MiB at a peer that never reads must leave dmtls holding at
most a few records per connection.  Asserted: each stalled stream holds at
most HELD_LIMIT (256 KiB) inside dmtls (bytes the sender got rid of minus
the bytes the kernel queues of the four sockets on the path hold), and
dmtls's RSS grows by less than RSS_LIMIT_KB (2 MiB for the two streams of
a test; 8 MiB under ASan, run with a 1 MiB quarantine, whose shadow memory
and allocator add their own) while 128 MiB is offered to it.
"""

import os
import socket
import ssl
import subprocess
import threading
import time

from backends import _Server, wait_until
from conftest import free_port, open_connections, tcp_sockets
from mysqlfake import FakeClient, FakeMySQLServer, caching_sha2_scramble
from routes import start_route
from tlsclient import client_context

PUSH_TOTAL = 64 << 20      # bytes each pushing side offers
CHUNK = 16384              # one TLS record per send: a send counts whole or not at all
STALL_QUIET = 1.0          # seconds without progress that make a stream stalled
STALL_TIMEOUT = 60         # seconds a stream may take to stall
HELD_LIMIT = 256 << 10     # bytes a stalled stream may leave inside dmtls
RSS_LIMIT_KB = 2048        # RSS growth for a test's two stalled streams
RSS_LIMIT_ASAN_KB = 8192   # the same under ASan, its quarantine cut to 1 MiB
# plaintext per byte of TLS 1.3 on the wire, at most (full records: 5 bytes
# of header, 1 of content type and 16 of AES-GCM tag per 16 KiB)
TLS_PLAIN = 16384 / (16384 + 22)


def sanitized(dmtls_bin):
    """True for an --enable-asan build (as test_load.py tells it)."""
    out = subprocess.run([dmtls_bin, "version"], capture_output=True,
                         text=True, timeout=10).stdout
    return "sanitizers:" in out


def small_quarantine():
    """Environment for a dmtls whose RSS is measured: under ASan, freed
    memory stays resident in a quarantine (256 MiB by default) and every
    record freed would count; 1 MiB keeps use-after-free detection for
    recent frees and lets RSS say what dmtls holds."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=1"}


# -- a stream pushed at a peer that never reads ---------------------------------

class Push:
    """Send PUSH_TOTAL bytes on `sock` from a thread, CHUNK at a time,
    until done or stop(); .sent counts the bytes handed to the socket."""

    def __init__(self, sock, total=PUSH_TOTAL):
        self.sock, self.total = sock, total
        self.sent, self.error = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        chunk = os.urandom(CHUNK)
        self.sock.settimeout(0.2)
        while self.sent < self.total and not self._stop.is_set():
            try:
                self.sent += self.sock.send(chunk[:min(CHUNK, self.total - self.sent)])
            except (socket.timeout, ssl.SSLWantWriteError):
                continue
            except OSError as e:
                self.error = "%s: %s" % (type(e).__name__, e)
                return

    def wait_stalled(self, what):
        """Wait until the stream made some progress and then none for
        STALL_QUIET seconds; return .sent.  Fails if it never stalls."""
        deadline = time.monotonic() + STALL_TIMEOUT
        last, since = -1, time.monotonic()
        while True:
            assert self.error is None, "%s: %s" % (what, self.error)
            now, n = time.monotonic(), self.sent
            if n != last:
                last, since = n, now
            elif n > 0 and now - since >= STALL_QUIET:
                return n
            assert n < self.total, "%s: all %d bytes went through: nobody " \
                "held the sender back" % (what, n)
            assert now < deadline, "%s: still sending after %ss (%d bytes)" % (
                what, STALL_TIMEOUT, n)
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


def ends(sock):
    """(local, remote) of a socket, as tcp_sockets() names them."""
    return sock.getsockname()[:2], sock.getpeername()[:2]


def path_queues(sender, receiver, tls):
    """Plaintext the kernel holds on the path sender -> dmtls -> receiver,
    at most: the queues of the sender's and receiver's sockets and of
    dmtls's two sockets facing them (each given as (local, remote)), the
    bytes of a leg that `tls` names ("in", "out") counted as TLS_PLAIN of
    plaintext; and dmtls's incoming socket's rx_queue (what dmtls left
    unread), in wire bytes."""
    by_ends = {(s["local"], s["remote"]): s for s in tcp_sockets()}
    total, unread = 0, None
    for leg, (local, remote) in zip(("in", "out"), (sender, receiver)):
        wire = 0
        for key in ((local, remote), (remote, local)):
            s = by_ends.get(key)
            assert s is not None, "no socket %s -> %s" % key
            wire += s["rx_queue"] + s["tx_queue"]
        total += int(wire * TLS_PLAIN) if leg in tls else wire
        if unread is None:
            unread = by_ends[(remote, local)]["rx_queue"]
    return total, unread


class NeverReads(_Server):
    """Plain (ctx None) or TLS backend.  The first byte of a connection
    says what it does: b"P" push PUSH_TOTAL bytes and never read, b"H"
    hold the connection and never read again, b"Q" answer b"q" and close
    (a warm-up).  .socks[role] is the (local, remote) of the P and H
    connections; .pushes["P"] the Push."""

    def __init__(self, ctx=None):
        self.ctx = ctx
        self.socks, self.pushes = {}, {}
        super().__init__()

    def handle(self, conn):
        sock = conn
        if self.ctx is not None:
            sock = self.ctx.wrap_socket(conn, server_side=True)
            with self._lock:
                self._conns.discard(conn)
                self._conns.add(sock)
        try:
            self.serve(sock, sock.recv(1))
        finally:
            sock.close()

    def serve(self, sock, role):
        if role == b"Q":
            sock.sendall(b"q")
            return
        with self._lock:
            self.socks[role] = ends(sock)
        if role == b"P":
            self.pushes[role] = Push(sock)
        self._closed.wait()
        if role in self.pushes:
            self.pushes[role].stop()


class NeverReadsMySQL(FakeMySQLServer):
    """The fake MySQL server; after a successful login user "pusher" gets
    PUSH_TOTAL bytes of result packets and is never read again, user
    "holder" is never read again."""

    def __init__(self, *a, **kw):
        self.socks, self.pushes = {}, {}
        super().__init__(*a, users={"pusher": b"pw", "holder": b"pw", "warm": b"pw"}, **kw)

    def _commands(self, tls, rec):
        user = rec["login"]["user"]
        if user == "warm":
            return super()._commands(tls, rec)
        role = b"P" if user == "pusher" else b"H"
        with self._lock:
            self.socks[role] = ends(tls)
        if role == b"P":
            self.pushes[role] = Push(tls)
        self._closed.wait()
        if role in self.pushes:
            self.pushes[role].stop()
        rec["ended"] = "closed by the test"


def check_stalled_streams(p, dmtls_bin, flows, rss_before):
    """flows: {name: (Push, sender ends, receiver ends, TLS legs)}.  Wait
    until every stream stalls, then check what dmtls holds (see the module
    docstring)."""
    report = []
    for name, (push, _, _, _) in flows.items():
        push.wait_stalled(name)
    for name, (push, snd, rcv, tls) in flows.items():
        queued, unread = path_queues(snd, rcv, tls)
        held = push.sent - queued
        report.append("%s: sender got rid of %d KiB, kernel queues hold %d KiB, "
                      "dmtls left %d KiB unread, holds ~%d KiB" % (
                          name, push.sent >> 10, queued >> 10, unread >> 10, held >> 10))
        assert unread > 0, "%s: dmtls read everything the sender sent: it does " \
            "not stop reading the sending side\n%s" % (name, "\n".join(report))
        assert held < HELD_LIMIT, "%s: dmtls buffers %d bytes of the stream " \
            "(limit %d)\n%s" % (name, held, HELD_LIMIT, "\n".join(report))
    growth = p.rss_kb() - rss_before
    limit = RSS_LIMIT_ASAN_KB if sanitized(dmtls_bin) else RSS_LIMIT_KB
    report.append("dmtls RSS %d -> +%d KiB (limit %d KiB)" % (rss_before, growth, limit))
    print("\n".join(report))
    assert growth < limit, "dmtls RSS grew by %d KiB with two stalled streams\n%s" % (
        growth, "\n".join(report))


def tls_to(port, pki, role):
    ctx = client_context(pki)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(role)
    return s


def plain_to(port, role):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(role)
    return s


def warm_up(connect):
    """One b"Q" round trip, so that what one connection allocates for good
    is in the RSS baseline."""
    s = connect(b"Q")
    try:
        assert s.recv(1) == b"q"
    finally:
        s.close()


def never_reading_pair(p, dmtls_bin, backend, connect, tls_client, tls_backend,
                       warm=None):
    """Warm up (warm(), or a b"Q" round trip), take the RSS baseline, open
    the client-pushes stream (H) and the backend-pushes stream (P), check
    them (tls_client, tls_backend: which legs are TLS), clean up."""
    (warm or (lambda: warm_up(connect)))()
    wait_until(lambda: not open_connections(p.pid), 10, "the warm-up to end")
    before = p.rss_kb()
    h = connect(b"H")
    pc = connect(b"P")
    push_up = Push(h)
    try:
        wait_until(lambda: b"H" in backend.socks and b"P" in backend.pushes, 10,
                   "the backend to see both streams")
        up = ("in" if tls_client else "") + ("out" if tls_backend else "")
        down = ("in" if tls_backend else "") + ("out" if tls_client else "")
        flows = {"client pushes, backend never reads": (
                     push_up, ends(h), backend.socks[b"H"], up),
                 "backend pushes, client never reads": (
                     backend.pushes[b"P"], backend.socks[b"P"], ends(pc), down)}
        check_stalled_streams(p, dmtls_bin, flows, before)
    finally:
        push_up.stop()
        h.close()
        pc.close()


def test_never_reading_peers_server_route(dmtls_bin, pki, procs):
    """Server route: a TLS client that never reads and a plain backend that
    never reads; dmtls holds each stream back and its memory stays bounded."""
    with NeverReads() as backend:
        port = free_port()
        p = start_route(procs, dmtls_bin, pki, "server", port, backend.addr,
                        allowed="dm", env=small_quarantine())
        never_reading_pair(p, dmtls_bin, backend, lambda r: tls_to(port, pki, r),
                           True, False)


def test_never_reading_peers_client_route(dmtls_bin, pki, procs):
    """Client route: a plain client that never reads and a TLS backend that
    never reads; dmtls holds each stream back and its memory stays bounded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path("dm"), pki.key("dm"))
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with NeverReads(ctx) as backend:
        port = free_port()
        p = start_route(procs, dmtls_bin, pki, "client", port, backend.addr,
                        allowed="dm", env=small_quarantine())
        never_reading_pair(p, dmtls_bin, backend, lambda r: plain_to(port, r),
                           False, True)


def mysql_login(port, user):
    """A FakeClient logged in (caching_sha2 fast auth) through the route."""
    c = FakeClient(port, timeout=10)
    g = c.read_greeting()
    c.send(1, c.login_payload(user, caching_sha2_scramble(b"pw", g["nonce"])))
    seq, fast = c.read()
    assert fast == b"\x01\x03", fast
    seq, ok = c.read()
    assert ok[:1] == b"\x00", ok
    return c


def test_never_reading_peers_mysql_route(dmtls_bin, pki, procs):
    """Mysql route, after the upgrade: a client that never reads and a
    server that never reads; dmtls holds each stream back and its memory
    stays bounded."""
    with NeverReadsMySQL(pki.path("dm"), pki.key("dm"), ca=pki.ca) as backend:
        port = free_port()
        p = start_route(procs, dmtls_bin, pki, "mysql", port, backend.addr,
                        env=small_quarantine())

        def warm():
            c = mysql_login(port, "warm")
            c.send(0, b"\x01")  # COM_QUIT
            assert c.read_outcome()[0] == "eof"
            c.close()

        def connect(role):
            return mysql_login(port, {b"H": "holder", b"P": "pusher"}[role]).sock

        never_reading_pair(p, dmtls_bin, backend, connect, False, True, warm)
