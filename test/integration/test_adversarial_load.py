"""Adversarial load (issue 10, "Adversarial tests in make check"): peers
that do not read, a backend that flaps, and certificate rotation under load.
Loopback only; every test is bounded and stops by itself.

Memory bound of the never-reading tests.  DESIGN.md section 8: bounded
buffers per direction and backpressure (stop reading a side while the other
cannot take more); whatever else is in flight sits in kernel socket
buffers, which are not in RSS.  The code sizes the buffers in pooled 64 KiB
blocks (proxy/bufpool.h BUFPOOL_SZ, four TLS records; relay.h): a stalled
direction holds at most the TLS read-ahead, the plaintext being relayed and
the staged TLS output, 3 x 64 KiB, plus wolfSSL's own record buffers (about
17 KiB each way), about 230 KiB.  Asserted, with 64 MiB offered by each
pushing side:
- backpressure: the sender stalls before 64 MiB, and dmtls's socket
  facing it holds unread bytes (dmtls stopped reading it);
- HELD_LIMIT (256 KiB): bytes the sender got rid of, minus the plaintext
  the kernel queues of the four sockets on the path hold, is what dmtls
  holds of the stream;
- RSS_LIMIT_KB (2 MiB) for a test's two stalled streams (2 x 230 KiB plus
  two TLS sessions, doubled for the allocator): dmtls's VmRSS growth from
  a warmed-up baseline.  Under ASan 8 MiB, with its quarantine cut to 1 MiB
  (shadow memory and redzones add their own).
"""

import hashlib
import os
import random
import socket
import ssl
import struct
import threading
import time

from backends import EchoServer, TLSServer, _Server, wait_until
from conftest import free_port, open_connections, tcp_sockets, wait_listening
from mysqlfake import FakeClient, FakeMySQLServer, caching_sha2_scramble
from routes import (echo_once, route_lines, routes_block, security_lines, start_route,
                    start_run, write_conf)
from test_load import _sanitized as sanitized, fd_baseline
from tlsclient import client_context

PUSH_TOTAL = 64 << 20      # bytes each pushing side offers
CHUNK = 16384              # one TLS record per send: a send counts whole or not at all
STALL_QUIET = 2.0          # seconds without progress that make a stream stalled
STALL_TIMEOUT = 60         # seconds a stream may take to stall
HELD_LIMIT = 256 << 10     # bytes a stalled stream may leave inside dmtls
RSS_LIMIT_KB = 2048        # RSS growth for a test's two stalled streams
RSS_LIMIT_ASAN_KB = 8192   # the same under ASan, its quarantine cut to 1 MiB
# plaintext per byte of TLS 1.3 on the wire, at most (full records: 5 bytes
# of header, 1 of content type and 16 of AES-GCM tag per 16 KiB)
TLS_PLAIN = 16384 / (16384 + 22)


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
    PUSH_TOTAL random bytes (dmtls relays bytes untouched once the auth
    phase is over) and is never read again, user "holder" is never read
    again."""

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
    for attempt in range(5):
        for name, (push, _, _, _) in flows.items():
            push.wait_stalled(name)
        sent = {name: push.sent for name, (push, _, _, _) in flows.items()}
        queues = {name: path_queues(snd, rcv, tls)
                  for name, (_, snd, rcv, tls) in flows.items()}
        if all(push.sent == sent[name] for name, (push, _, _, _) in flows.items()):
            break  # still stalled after the snapshot: it is an equilibrium
    report = []
    for name in flows:
        queued, unread = queues[name]
        held = sent[name] - queued
        report.append("%s: sender got rid of %d KiB, kernel queues hold %d KiB, "
                      "dmtls left %d KiB unread, holds ~%d KiB" % (
                          name, sent[name] >> 10, queued >> 10, unread >> 10, held >> 10))
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


# -- a backend that flaps -------------------------------------------------------------

FLAP_SECONDS = 30          # the figure
FLAP_CLIENTS = 3           # client threads per route, each one connection at a time
FLAP_DEADLINE = 15         # s a client waits for anything (connect 2 s + handshake 5 s, doubled)
FLAP_MAX = 32768           # largest echo payload


def bound(port):
    """A socket bound to 127.0.0.1:port (SO_REUSEADDR), not listening."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    return s


def hard_close(sock):
    """Close with a reset (SO_LINGER 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FlappingBackend:
    """On a port the test owns, for `seconds`: phases of 0.2 to 1.2 s
    (seeded) that refuse (nothing listens), accept and echo (over TLS
    when `ctx` is an ssl server context), or accept and reset (SO_LINGER
    0) after reading what comes within 0.2 s, TLS handshake or not; a
    reset phase also resets every echo connection still open.  .phases
    counts the phases of each kind, .resets the connections reset."""

    def __init__(self, port, seconds, seed=10, ctx=None):
        self.port, self.seconds, self.ctx = port, seconds, ctx
        self.rng = random.Random(seed)
        self.phases = {"refuse": 0, "echo": 0, "reset": 0}
        self.resets = 0
        self._gen = 0               # bumped by every reset phase
        self._lock = threading.Lock()
        self._threads = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            mode = self.rng.choice(["refuse", "echo", "reset"])
            with self._lock:
                self.phases[mode] += 1
                if mode == "reset":
                    self._gen += 1
            until = min(end, time.monotonic() + self.rng.uniform(0.2, 1.2))
            if mode == "refuse":
                time.sleep(max(0, until - time.monotonic()))
                continue
            ls = bound(self.port)
            ls.listen(64)
            ls.settimeout(0.05)
            while time.monotonic() < until:
                try:
                    conn, _ = ls.accept()
                except socket.timeout:
                    continue
                t = threading.Thread(target=self._serve, args=(conn, mode), daemon=True)
                self._threads.append(t)
                t.start()
            hard_close(ls)  # what waits in the backlog is reset
        self._done.set()

    def _serve(self, conn, mode):
        with self._lock:
            gen = self._gen
        end = time.monotonic() + (0.2 if mode == "reset" else 3 * FLAP_DEADLINE)
        try:
            if mode == "echo" and self.ctx is not None:
                conn.settimeout(5)
                conn = self.ctx.wrap_socket(conn, server_side=True)
            conn.settimeout(0.05)
            while time.monotonic() < end:
                with self._lock:
                    if self._gen != gen:
                        break  # a reset phase began: reset this one too
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    if self.ctx is not None and mode == "echo":
                        conn = conn.unwrap()
                    conn.shutdown(socket.SHUT_WR)
                    conn.close()
                    return
                if mode == "echo":
                    conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass  # dmtls gave up on it, or it came in a reset phase: fine
        with self._lock:
            self.resets += 1
        hard_close(conn)

    def wait(self, timeout):
        """Wait for the last phase to end."""
        assert self._done.wait(timeout), "the flapping backend did not finish"

    def join(self, timeout):
        """Wait (bounded) for every connection thread to end."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


def flap_client(port, rng, stop, outcomes, bad):
    """Echo random payloads through port until stop; each connection ends
    in a full echo, or a prefix of it followed by EOF or a reset.  Anything
    else (a wrong byte, a wait past FLAP_DEADLINE) goes to `bad`."""
    while not stop.is_set():
        payload = rng.randbytes(rng.randrange(1, FLAP_MAX))
        got, how = bytearray(), None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=FLAP_DEADLINE) as s:
                s.sendall(payload)
                while len(got) < len(payload):
                    data = s.recv(65536)
                    if not data:
                        how = "eof"
                        break
                    got += data
                else:
                    how = "echo"
        except socket.timeout:
            bad.append("port %d: no echo, EOF or reset within %ss (%d of %d bytes back)"
                       % (port, FLAP_DEADLINE, len(got), len(payload)))
            continue
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        except OSError as e:
            bad.append("port %d: %s: %s" % (port, type(e).__name__, e))
            continue
        if bytes(got) != payload[:len(got)]:
            bad.append("port %d: wrong bytes: %d back, first difference at %d" % (
                port, len(got),
                next(i for i, (a, b) in enumerate(zip(got, payload)) if a != b)))
        key = (port, how)
        outcomes[key] = outcomes.get(key, 0) + 1
        if how != "echo":
            time.sleep(0.02)  # a refused client comes back, but does not flood


def test_flapping_backend_behind_client_and_server_routes(dmtls_bin, pki, procs, tmp_path):
    """For 30 s two backends refuse, echo or reset, in random phases: a
    plain one behind a server route that a client route of the same dmtls
    dials ("chain"), and a TLS one right behind a second client route
    ("direct").  Every client gets its echo or a clean close (EOF or a
    reset) within the deadlines, never a wrong byte; dmtls does not crash
    and its fd count comes back to its baseline."""
    chain_port, server_port, plain_port = free_port(), free_port(), free_port()
    direct_port, tls_port = free_port(), free_port()
    timeouts = ['connect-timeout = "2s";', 'handshake-timeout = "5s";',
                'close-timeout = "5s";']
    text = "\n".join(
        ['log-level = "info";'] + security_lines(pki) + routes_block(
            route_lines("chain", chain_port, "127.0.0.1:%d" % server_port,
                        timeouts, kind="client"),
            route_lines("back", server_port, "127.0.0.1:%d" % plain_port, timeouts),
            route_lines("direct", direct_port, "127.0.0.1:%d" % tls_port,
                        timeouts, kind="client"))) + "\n"
    conf, _ = write_conf(tmp_path / "flap.conf", text)
    p = start_run(procs, dmtls_bin, conf)
    for port in (chain_port, server_port, direct_port):
        wait_listening(port, p)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path("dm"), pki.key("dm"))
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # a first echo each way opens what dmtls opens once, before the baseline
    with EchoServer(sock=bound(plain_port)) as echo:
        with socket.create_connection(("127.0.0.1", chain_port), timeout=10) as s:
            assert echo_once(s, b"warm") == b"warm"
        wait_until(lambda: echo.results, 10, "the warm-up echo to end")
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca, sock=bound(tls_port)) as tls:
        with socket.create_connection(("127.0.0.1", direct_port), timeout=10) as s:
            assert echo_once(s, b"warm") == b"warm"
        wait_until(lambda: tls.results, 10, "the warm-up TLS echo to end")
    baseline = fd_baseline(p)

    backends = [FlappingBackend(plain_port, FLAP_SECONDS, seed=10),
                FlappingBackend(tls_port, FLAP_SECONDS, seed=11, ctx=ctx)]
    stop, outcomes, bad = threading.Event(), {}, []
    clients = [threading.Thread(target=flap_client, daemon=True,
                                args=(port, random.Random(i), stop, outcomes, bad))
               for i in range(FLAP_CLIENTS) for port in (chain_port, direct_port)]
    for t in clients:
        t.start()
    for b in backends:
        b.wait(FLAP_SECONDS + 10)
    stop.set()
    for t in clients:
        t.join(FLAP_DEADLINE + 5)
    assert not any(t.is_alive() for t in clients), "a client is stuck"
    for b in backends:
        assert b.join(10), "backend connections still open 10 s after the clients stopped"
    print("flapping backends: phases %s, %s; backend resets %d, %d; client outcomes "
          "chain %s, direct %s; %d bad" % (
              backends[0].phases, backends[1].phases, backends[0].resets,
              backends[1].resets, {h: n for (pt, h), n in outcomes.items() if pt == chain_port},
              {h: n for (pt, h), n in outcomes.items() if pt == direct_port}, len(bad)))
    assert not bad, "%d clients got neither an echo nor a clean close:\n  %s" % (
        len(bad), "\n  ".join(bad[:20]))
    for port in (chain_port, direct_port):
        assert outcomes.get((port, "echo"), 0) > 0, outcomes
        assert outcomes.get((port, "eof"), 0) + outcomes.get((port, "reset"), 0) > 0, \
            outcomes
    assert p.proc.poll() is None, "dmtls died:\n" + p.log()[-3000:]
    wait_until(lambda: p.fd_count() <= baseline, 30,
               "dmtls's fd count back to %d (now %d)" % (baseline, p.fd_count()))


# -- rotation under load --------------------------------------------------------------

ROTATIONS = 100            # leaf rotations (certificate and key)
CA_EVERY = 10              # a new CA joins the bundle before every 10th leaf
TRANSFERS = 50             # concurrent long transfers
TRANSFER_MIN = 4 << 20     # bytes each transfer echoes, at least (1 MiB under ASan)
TRANSFER_CHUNK = 16384
TRANSFER_PAUSE = 0.03      # s between a transfer's round trips: load, not a flood
CHURN = 4                  # threads opening new connections all along
SEEN_AFTER = 2             # new connections each rotation waits for


class RotationPKI:
    """CAs and leaves made in-process (python3-cryptography, ECDSA P-256):
    cas[i] (PEM), a client leaf (CN dm) per CA in client_files[i], and the
    server leaf of generation g (0..ROTATIONS, signed by CA g // CA_EVERY
    rounded as the rotation plan says) as leaves[g] = (cert PEM, key PEM)
    with serials[serial] = g."""

    def __init__(self, folder, rotations, ca_every):
        from cryptography.hazmat.primitives.asymmetric import ec
        self._ec = ec
        self.folder = folder
        ncas = (rotations + ca_every - 1) // ca_every + 1
        self.cas = [self._ca(i) for i in range(ncas)]
        self.client_files = []
        for i, (ca_cert, ca_key, _) in enumerate(self.cas):
            cert, key = self._leaf(ca_cert, ca_key, "dm")
            paths = (os.path.join(folder, "client-%d.pem" % i),
                     os.path.join(folder, "client-%d-key.pem" % i))
            for path, data in zip(paths, (cert, key)):
                with open(path, "wb") as f:
                    f.write(data)
            self.client_files.append(paths)
        self.trust = os.path.join(folder, "all-cas.pem")
        with open(self.trust, "wb") as f:
            f.write(b"".join(pem for _, _, pem in self.cas))
        self.leaves, self.serials = [], {}
        for g in range(rotations + 1):
            ca_cert, ca_key, _ = self.cas[self.ca_of(g, ca_every)]
            cert, key = self._leaf(ca_cert, ca_key, "dm", serial_of=g)
            self.leaves.append((cert, key))

    @staticmethod
    def ca_of(g, ca_every):
        """Index of the CA that signs leaf generation g: CA i joins the
        bundle just before leaf (i - 1) * ca_every + 1."""
        return 0 if g == 0 else (g - 1) // ca_every + 1

    def _name(self, cn):
        from cryptography import x509
        from cryptography.x509.oid import NameOID
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def _builder(self, subject, issuer, pub, serial):
        import datetime
        from cryptography import x509
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(pub).serial_number(serial)
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def _ca(self, i):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        name = self._name("rotation CA %d" % i)
        cert = (self._builder(name, name, key.public_key(), x509.random_serial_number())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True,
                                             True, False, False), True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                    key.public_key()), False)
                .sign(key, hashes.SHA256()))
        return cert, key, cert.public_bytes(serialization.Encoding.PEM)

    def _leaf(self, ca_cert, ca_key, cn, serial_of=None):
        import ipaddress
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        serial = x509.random_serial_number()
        cert = (self._builder(self._name(cn), ca_cert.subject, key.public_key(), serial)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False,
                                             False, False, False), True)
                .add_extension(x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"),
                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), False)
                .sign(ca_key, hashes.SHA256()))
        if serial_of is not None:
            self.serials[serial] = serial_of
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def replace(path, data):
    """Write data beside path, then rename it over path (atomic)."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Rotation:
    """The state on disk, as clients read it before they connect: .leaf
    (the last leaf generation whose certificate and key are both in
    place), .started (the generation being moved in) and .ca (the last CA
    index added to the bundle)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.leaf = self.started = self.ca = 0

    def snapshot(self):
        with self.lock:
            return self.leaf, self.ca


def serial_seen(sock):
    from cryptography import x509
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def test_rotation_under_load_100_leaves_10_cas(dmtls_bin, pki, procs, tmp_path):
    """100 rotations of a server route's certificate and key (each leaf a
    new serial) and 10 of its CA bundle (the new CA joins the bundle before
    the leaves, server's and clients', move to it), during 50 concurrent
    long echo transfers and a steady churn of new connections: no
    connection fails, every transfer comes back intact (SHA-256), and every
    connection made after a rotation completed sees that rotation's serial
    or a later one."""
    folder = str(tmp_path)
    rp = RotationPKI(folder, ROTATIONS, CA_EVERY)
    ca_file = os.path.join(folder, "ca-bundle.pem")
    cert_file = os.path.join(folder, "cert.pem")
    key_file = os.path.join(folder, "key.pem")
    bundle = [rp.cas[0][2]]
    replace(ca_file, bundle[0])
    replace(cert_file, rp.leaves[0][0])
    replace(key_file, rp.leaves[0][1])
    ctxs = [client_context(pki, cert=files, ca=rp.trust) for files in rp.client_files]
    minimum = TRANSFER_MIN // 4 if sanitized(dmtls_bin) else TRANSFER_MIN
    state = Rotation()
    failures, seen, transfers = [], [], []
    done = threading.Event()

    def connect():
        """A new TLS connection with the client leaf of the newest CA in
        the bundle; returns (socket, the leaf generation complete on disk
        before connecting, the newest CA in the bundle then, the
        generation the server presented)."""
        leaf, ca = state.snapshot()
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            s = ctxs[ca].wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        return s, leaf, ca, rp.serials.get(serial_seen(s))

    def check_serial(what, leaf, gen):
        with state.lock:
            started = state.started
        if gen is None or not leaf <= gen <= started:
            failures.append("%s: connected when leaf %d was in place, saw leaf %s "
                            "(latest moving in: %d)" % (what, leaf, gen, started))

    def transfer(i):
        try:
            s, leaf, _, gen = connect()
        except (OSError, ssl.SSLError) as e:
            failures.append("transfer %d: connect: %s" % (i, e))
            return
        check_serial("transfer %d" % i, leaf, gen)
        rng = random.Random(i)
        up, back, n = hashlib.sha256(), hashlib.sha256(), 0
        try:
            while n < minimum or not done.is_set():
                chunk = rng.randbytes(TRANSFER_CHUNK)
                up.update(chunk)
                got = echo_once(s, chunk)
                back.update(got)
                n += len(chunk)
                if len(got) != len(chunk):
                    failures.append("transfer %d: %d of %d bytes back after %d" % (
                        i, len(got), len(chunk), n))
                    return
                time.sleep(TRANSFER_PAUSE)
            transfers.append((i, n, up.hexdigest() == back.hexdigest()))
        except (OSError, ssl.SSLError) as e:
            failures.append("transfer %d after %d bytes: %s" % (i, n, e))
        finally:
            s.close()

    def churn(j):
        k = 0
        while not done.is_set():
            k += 1
            what = "churn %d.%d" % (j, k)
            try:
                s, leaf, ca, gen = connect()
                try:
                    payload = b"%s" % what.encode()
                    if echo_once(s, payload) != payload:
                        failures.append("%s: echo broken" % what)
                finally:
                    s.close()
            except (OSError, ssl.SSLError) as e:
                failures.append("%s: %s" % (what, e))
                continue
            check_serial(what, leaf, gen)
            with state.lock:
                seen.append((leaf, ca, gen))

    def wait_seen(leaf, ca):
        """Until SEEN_AFTER new connections made once leaf `leaf` and CA
        `ca` were in place have ended (bounded)."""
        wait_until(lambda: sum(1 for l, c, _ in list(seen) if l >= leaf and c >= ca)
                   >= SEEN_AFTER or failures, 20,
                   "%d connections after leaf %d, CA %d" % (SEEN_AFTER, leaf, ca))

    with EchoServer() as echo:
        port = free_port()
        p = start_route(procs, dmtls_bin, pki, "server", port, echo.addr, ca=ca_file,
                        cert=(cert_file, key_file), allowed="dm")
        threads = [threading.Thread(target=transfer, args=(i,), daemon=True)
                   for i in range(TRANSFERS)]
        threads += [threading.Thread(target=churn, args=(j,), daemon=True)
                    for j in range(CHURN)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        try:
            wait_seen(0, 0)
            for g in range(1, ROTATIONS + 1):
                ca = rp.ca_of(g, CA_EVERY)
                if ca > state.ca:
                    bundle.append(rp.cas[ca][2])
                    replace(ca_file, b"".join(bundle))
                    with state.lock:
                        state.ca = ca
                    # the leaves move only once the new bundle is in use:
                    # a connection that meets the key renamed and not yet
                    # the certificate gets the last good set, which must
                    # already trust the CA its client certificate is from
                    wait_seen(g - 1, ca)
                with state.lock:
                    state.started = g
                cert, key = rp.leaves[g]
                replace(key_file, key)
                replace(cert_file, cert)
                with state.lock:
                    state.leaf = g
                wait_seen(g, ca)
                if failures:
                    break
        finally:
            rotated = time.monotonic() - t0
            done.set()
            for t in threads:
                t.join(60)
        stuck = [t for t in threads if t.is_alive()]
    gens = {gen for _, _, gen in seen}
    nbytes = sum(n for _, n, _ in transfers)
    reloads = p.log().count("event=cert_reloaded")
    print("rotation under load: %d rotations (%d CAs) in %.1fs; %d new connections; "
          "%d transfers, %d MiB echoed; %d sets loaded, %d half-rotated states met; "
          "%d failures" % (state.leaf, state.ca, rotated, len(seen), len(transfers),
                           nbytes >> 20, reloads,
                           p.log().count("event=cert_reload_failed"), len(failures)))
    assert not failures, "%d failures:\n  %s" % (len(failures), "\n  ".join(failures[:20]))
    assert not stuck, "%d threads still running" % len(stuck)
    assert state.leaf == ROTATIONS
    assert len(transfers) == TRANSFERS
    assert all(ok for _, _, ok in transfers), "transfers corrupted: %r" % [
        i for i, _, ok in transfers if not ok]
    assert gens >= set(range(ROTATIONS + 1)), "generations no connection saw: %s" % (
        sorted(set(range(ROTATIONS + 1)) - gens))
    assert reloads >= ROTATIONS + state.ca, "%d cert_reloaded lines" % reloads
