"""Integration tests of the `server` route: dmtls terminates mTLS and relays
plaintext to --target (DESIGN.md sections 2-5 and 8).

Covered: a 16 MiB full-duplex relay, identity and chain refusals, TLS
versions, ALPN selection, half-close in both directions, an unreachable
target, the absolute handshake deadline and --max-conns holding extra
clients in the kernel backlog.

Every dmtls gets its own ephemeral port.  Each connection's final log line
is found by its peer address (the client socket's local address), so the
probe connection that Procs.start makes while waiting for the port never
gets in the way.
"""

import hashlib
import re
import select
import socket
import socketserver
import ssl
import threading
import time
import warnings

from backends import (DuplexServer, EchoServer, HalfCloseServer, pattern_chunks,
                      pattern_sha256, wait_until)
from conftest import free_port
from tlsclient import client_context, tls_connect

MIB = 1 << 20
FINAL_EVENTS = ("close", "denied", "handshake_failed", "conn_failed")
_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


# -- helpers -----------------------------------------------------------------

def start_server(procs, dmtls_bin, pki, port, target, *extra, allowed="dm"):
    """Start `dmtls server` on 127.0.0.1:port -> target (cert dm, CA ca)."""
    argv = [dmtls_bin, "server", "--listen", "127.0.0.1:%d" % port,
            "--target", target, "--ssl-ca", pki.ca, "--ssl-cert", pki.path("dm"),
            "--ssl-key", pki.key("dm"), "--cert-allowed-cn", allowed, *extra]
    p = procs.start(argv, name="dmtls", wait_port=port)
    p.wait_log(r"event=ready")
    return p


def parse_logfmt(line):
    """One logfmt line -> dict (quoted values unquoted)."""
    out = {}
    for key, value in _LOGFMT.findall(line):
        if value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        out[key] = value
    return out


def peer_of(sock):
    """The "IP:PORT" dmtls logs as peer= for a client socket."""
    host, port = sock.getsockname()[:2]
    return "%s:%d" % (host, port)


def final_line(proc, peer, timeout=5):
    """Wait for the one final log line (close/denied/handshake_failed/
    conn_failed) of the connection from `peer`; return it parsed, with the
    raw text under "_line".  Fails if there is more than one."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for line in proc.log().splitlines():
            rec = parse_logfmt(line)
            if rec.get("peer") == peer and rec.get("event") in FINAL_EVENTS:
                rec["_line"] = line
                found.append(rec)
        if found:
            assert len(found) == 1, "several final lines for %s:\n%s" % (
                peer, "\n".join(r["_line"] for r in found))
            return found[0]
        if time.monotonic() >= deadline:
            raise AssertionError("no final log line for peer %s within %ss; log:\n%s"
                                 % (peer, timeout, proc.log()))
        time.sleep(0.02)


def refused_with_peer(port, pki, wait=1.0, **kw):
    """Like tlsclient.tls_refused, but also return the client's peer address:
    (None or a description of the refusal, "IP:PORT")."""
    ctx = client_context(pki, **kw)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    peer = peer_of(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        raw.close()
        return "%s: %s" % (type(e).__name__, e), peer
    try:
        s.settimeout(wait)
        try:
            data = s.recv(1)
        except socket.timeout:
            return None, peer
        except (ssl.SSLError, OSError) as e:
            return "%s: %s" % (type(e).__name__, e), peer
        return ("eof" if not data else None), peer
    finally:
        s.close()


def echo_once(sock, payload):
    """Send payload on a TLS socket and read back exactly len(payload) bytes."""
    sock.sendall(payload)
    got = bytearray()
    while len(got) < len(payload):
        data = sock.recv(65536)
        assert data, "EOF after %d of %d echoed bytes" % (len(got), len(payload))
        got += data
    return bytes(got)


def close_tls(sock):
    """Polite close: send close_notify and wait (bounded by the socket
    timeout) for the peer's, then close whatever happens."""
    try:
        sock.unwrap()
    except (ssl.SSLError, OSError, ValueError):
        pass
    sock.close()


def closed_after(sock, limit):
    """Read from a plain socket until the peer closes it (EOF or reset) or
    `limit` seconds pass; return the elapsed time, or None if still open."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - t0 < limit:
        try:
            if not sock.recv(4096):
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:  # reset also counts as "closed by dmtls"
            return time.monotonic() - t0
    return None


class TLSStream:
    """A TLS client over ssl.MemoryBIO that supports what SSLSocket cannot:
    one thread sending while another receives, and a half-close
    (close_write() sends close_notify, reading goes on).  `rcvbuf` sets
    SO_RCVBUF before connecting."""

    def __init__(self, port, pki, timeout=60, rcvbuf=None, **ctx_kw):
        ctx = client_context(pki, **ctx_kw)
        self.raw = socket.socket()
        if rcvbuf:
            self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.raw.settimeout(timeout)
        self.raw.connect(("127.0.0.1", port))
        self.peer = peer_of(self.raw)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_hostname="localhost")
        self._lock = threading.Lock()       # guards the SSLObject and its BIOs
        self._send_lock = threading.Lock()  # keeps records in order on the wire
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    raise ConnectionError("EOF during the TLS handshake")
        self._flush()

    def _flush(self):
        with self._send_lock:
            with self._lock:
                data = self._out.read()
            if data:
                self.raw.sendall(data)

    def _feed(self):
        data = self.raw.recv(65536)
        with self._lock:
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()
        return data

    def sendall(self, data):
        view = memoryview(data)
        for off in range(0, len(view), 16384):
            with self._send_lock:
                with self._lock:
                    self._obj.write(view[off:off + 16384])
                    wire = self._out.read()
                self.raw.sendall(wire)

    def close_write(self, timeout=30):
        """Send close_notify (our EOF) but keep the read side open.

        OpenSSL's SSL_shutdown also tries to read the peer's close_notify and
        fails fatally (APPLICATION_DATA_AFTER_CLOSE_NOTIFY) if it meets
        application data instead, so wait until the receiving thread has
        consumed everything received so far (it must be running if the peer
        is sending)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._send_lock:
                with self._lock:
                    idle = self._in.pending == 0 and self._obj.pending() == 0
                    if idle:
                        try:
                            self._obj.unwrap()
                        except ssl.SSLWantReadError:  # peer's close_notify not in yet
                            pass
                        wire = self._out.read()
                if idle:
                    self.raw.sendall(wire)
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError("close_write: received data never consumed")
            time.sleep(0.001)

    def recv(self, n=65536):
        """Return plaintext, or b"" at the peer's close_notify.  A TCP EOF
        without close_notify raises ssl.SSLEOFError."""
        while True:
            with self._lock:
                try:
                    return self._obj.read(n)
                except ssl.SSLZeroReturnError:
                    return b""
                except ssl.SSLWantReadError:
                    pass
            self._flush()
            self._feed()

    def close(self):
        self.raw.close()


class FixedPortEcho(socketserver.ThreadingTCPServer):
    """Echo server on a given 127.0.0.1 port (the harness backends always
    pick their own port); counts accepted connections in .accepted."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port):
        self.accepted = 0
        super().__init__(("127.0.0.1", port), _EchoHandler)
        self._thread = threading.Thread(target=self.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self):
        self.shutdown()
        self.server_close()
        self._thread.join(3)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.accepted += 1
        self.request.settimeout(10)
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)


# -- 1. full duplex ----------------------------------------------------------

def test_full_duplex_16mib_each_way(dmtls_bin, pki, procs, port):
    """16 MiB each way at the same time arrive intact at both ends."""
    n = 16 * MIB
    with DuplexServer(n, seed="down") as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        conn = TLSStream(port, pki, timeout=30)
        errors, got = [], {}

        def send():
            try:
                for piece in pattern_chunks(n, "up", 65536):
                    conn.sendall(piece)
                conn.close_write()
            except Exception as e:
                errors.append("send: %r" % e)

        def receive():
            h, count = hashlib.sha256(), 0
            try:
                while True:
                    data = conn.recv()
                    if not data:
                        break
                    h.update(data)
                    count += len(data)
            except Exception as e:
                errors.append("recv after %d bytes: %r" % (count, e))
            got.update(sha256=h.hexdigest(), bytes=count)

        threads = [threading.Thread(target=send, daemon=True),
                   threading.Thread(target=receive, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        try:
            assert not any(t.is_alive() for t in threads), "relay stalled; log:\n" + dm.log()
            assert not errors, "%s\nlog:\n%s" % (errors, dm.log())
            assert got == {"sha256": pattern_sha256(n, "down"), "bytes": n}
            (res,) = backend.wait_results(1, timeout=30)
            assert res == {"sha256": pattern_sha256(n, "up"), "bytes": n}
            assert not backend.errors
            assert final_line(dm, conn.peer)["event"] == "close"
        finally:
            conn.close()


# -- 2. identity and chain refusals ------------------------------------------

def _assert_refused(dmtls_bin, pki, procs, port, cert, event):
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        why, peer = refused_with_peer(port, pki, cert=cert)
        assert why is not None, "client with cert=%r was accepted" % (cert,)
        assert "ALERT" in why.upper(), "refused without a TLS alert: " + why
        rec = final_line(dm, peer)
        assert rec["event"] == event, rec["_line"]
        time.sleep(0.3)  # a late, wrong backend dial would show up here
        assert backend.accepted == 0, "target was dialled for a refused peer"
        return rec


def test_denies_unlisted_cn(dmtls_bin, pki, procs, port):
    """A CA-signed cert with CN=other is refused: event=denied cn=other."""
    rec = _assert_refused(dmtls_bin, pki, procs, port, "other", "denied")
    assert rec.get("cn") == "other", rec["_line"]


def test_denies_missing_client_cert(dmtls_bin, pki, procs, port):
    """A client presenting no certificate is refused: handshake_failed."""
    _assert_refused(dmtls_bin, pki, procs, port, None, "handshake_failed")


def test_denies_other_ca(dmtls_bin, pki, procs, port):
    """CN=dm signed by an untrusted CA is refused: handshake_failed."""
    _assert_refused(dmtls_bin, pki, procs, port, "untrusted", "handshake_failed")


def test_denies_expired_cert(dmtls_bin, pki, procs, port):
    """An expired CN=dm cert from the trusted CA is refused: handshake_failed."""
    _assert_refused(dmtls_bin, pki, procs, port, "expired", "handshake_failed")


# -- 3. TLS versions ---------------------------------------------------------

def test_tls11_refused(dmtls_bin, pki, procs, port):
    """A TLS 1.1-only client (a real TLS 1.1 ClientHello) is refused."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = client_context(pki, min_version=ssl.TLSVersion.TLSv1_1,
                                 max_version=ssl.TLSVersion.TLSv1_1)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer 1.1
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        peer = peer_of(raw)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                s = ctx.wrap_socket(raw, server_hostname="localhost")
            version = s.version()
            s.close()
            raise AssertionError("TLS 1.1 handshake succeeded: %s" % version)
        except (ssl.SSLError, OSError) as e:
            # must be the server refusing (an alert, or closing on us), not
            # our own OpenSSL declining to offer TLS 1.1
            assert (isinstance(e, (ConnectionError, ssl.SSLEOFError))
                    or "ALERT" in str(e).upper()), e
        finally:
            raw.close()
        rec = final_line(dm, peer)
        assert rec["event"] == "handshake_failed", rec["_line"]
        time.sleep(0.2)
        assert backend.accepted == 0


def _version_accepted(dmtls_bin, pki, procs, port, vmin, vmax, expect):
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        s = tls_connect(port, pki, min_version=vmin, max_version=vmax)
        peer = peer_of(s)
        try:
            assert s.version() == expect
            assert echo_once(s, b"hello " + expect.encode()) == b"hello " + expect.encode()
        finally:
            close_tls(s)
        rec = final_line(dm, peer)
        assert rec["event"] == "close", rec["_line"]
        assert rec.get("tls") == expect, rec["_line"]


def test_tls12_and_13_accepted(dmtls_bin, pki, procs, port):
    """TLS 1.2 and TLS 1.3 clients are accepted, echo works, log says tls=."""
    _version_accepted(dmtls_bin, pki, procs, port, "1.2", "1.2", "TLSv1.2")
    _version_accepted(dmtls_bin, pki, procs, free_port(), "1.3", "1.3", "TLSv1.3")


# -- 4. ALPN -----------------------------------------------------------------

def _alpn(dmtls_bin, pki, procs, port, offer):
    """Connect offering `offer`; return (selected protocol, final log line)."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--alpn", "h2,http/1.1")
        s = tls_connect(port, pki, alpn=offer)
        peer = peer_of(s)
        try:
            selected = s.selected_alpn_protocol()
            assert echo_once(s, b"ping") == b"ping"
        finally:
            close_tls(s)
        rec = final_line(dm, peer)
        assert rec["event"] == "close", rec["_line"]
        return selected, rec


def test_alpn_h2(dmtls_bin, pki, procs, port):
    """A client offering h2 gets h2."""
    selected, rec = _alpn(dmtls_bin, pki, procs, port, ["h2"])
    assert selected == "h2"
    assert rec.get("alpn") == "h2", rec["_line"]


def test_alpn_http11(dmtls_bin, pki, procs, port):
    """A client offering http/1.1 gets http/1.1."""
    selected, rec = _alpn(dmtls_bin, pki, procs, port, ["http/1.1"])
    assert selected == "http/1.1"
    assert rec.get("alpn") == "http/1.1", rec["_line"]


def test_alpn_route_order_wins(dmtls_bin, pki, procs, port):
    """A client offering http/1.1 before h2 gets h2: the route's list
    (h2 first) decides, not the client's order."""
    selected, rec = _alpn(dmtls_bin, pki, procs, port, ["http/1.1", "h2"])
    assert selected == "h2"
    assert rec.get("alpn") == "h2", rec["_line"]


def test_alpn_none(dmtls_bin, pki, procs, port):
    """A client offering no ALPN is accepted and gets none."""
    selected, rec = _alpn(dmtls_bin, pki, procs, port, None)
    assert selected is None
    assert rec.get("alpn") in (None, "", "none"), rec["_line"]


def test_alpn_unknown_refused(dmtls_bin, pki, procs, port):
    """A client offering only spdy/3 is refused (no_application_protocol)."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--alpn", "h2,http/1.1")
        why, peer = refused_with_peer(port, pki, alpn=["spdy/3"])
        assert why is not None, "client offering only spdy/3 was accepted"
        assert "NO APPLICATION PROTOCOL" in why.upper().replace("_", " "), why
        rec = final_line(dm, peer)
        assert rec["event"] == "handshake_failed", rec["_line"]
        time.sleep(0.2)
        assert backend.accepted == 0


# -- 7. half-close -----------------------------------------------------------

def _read_all(conn):
    buf = bytearray()
    while True:
        data = conn.recv()
        if not data:
            return bytes(buf)
        buf += data


def test_half_close_from_client(dmtls_bin, pki, procs, port):
    """Client close_notify reaches the backend as EOF; the backend's reply,
    sent after that EOF, still reaches the client, followed by EOF."""
    reply = b"reply after your EOF " * 1000
    with HalfCloseServer(reply) as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        conn = TLSStream(port, pki, timeout=5)
        try:
            conn.sendall(b"request")
            conn.close_write()
            (res,) = backend.wait_results(1, timeout=5)  # backend saw EOF
            assert res["data"] == b"request" and res["bytes"] == 7
            assert _read_all(conn) == reply
        finally:
            conn.close()
        assert final_line(dm, conn.peer)["event"] == "close"


def test_close_notify_behind_data_in_one_segment(dmtls_bin, pki, procs, port):
    """Several records and the close_notify arrive in one TCP segment while
    the client keeps its socket open for the reply: the EOF still reaches
    the backend.  (dmtls reads several records in one go; a close_notify
    met there was once left for the next read, which a write the other way
    could turn into a wait that never ended: test_full_duplex_16mib_each_way
    caught that now and then.)"""
    reply = b"reply after your EOF"
    payload = bytes(range(256)) * 200          # 51200 bytes: 4 records
    with HalfCloseServer(reply) as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        conn = TLSStream(port, pki, timeout=5)
        try:
            with conn._lock:
                for off in range(0, len(payload), 16384):
                    conn._obj.write(payload[off:off + 16384])
                try:
                    conn._obj.unwrap()
                except ssl.SSLWantReadError:
                    pass
                wire = conn._out.read()
            conn.raw.sendall(wire)                 # data + close_notify at once
            (res,) = backend.wait_results(1, timeout=5)
            assert res["bytes"] == len(payload), res
            assert _read_all(conn) == reply
        finally:
            conn.close()
        assert final_line(dm, conn.peer)["event"] == "close"


def test_half_close_from_backend(dmtls_bin, pki, procs, port):
    """Backend replies and shuts its write side first; the client reads the
    reply and EOF, then still sends data that reaches the backend."""
    reply = b"early reply " * 1000
    with HalfCloseServer(reply, first_close=True) as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr)
        conn = TLSStream(port, pki, timeout=5)
        try:
            assert _read_all(conn) == reply
            late = b"sent after the backend's EOF"
            conn.sendall(late)
            conn.close_write()
            (res,) = backend.wait_results(1, timeout=5)
            assert res["data"] == late and res["bytes"] == len(late)
        finally:
            conn.close()
        assert final_line(dm, conn.peer)["event"] == "close"


# -- 8. unreachable target ---------------------------------------------------

def test_backend_down_then_up(dmtls_bin, pki, procs, port):
    """Target down: the client is closed within 2 s and the log says
    conn_failed ... connect; once a backend listens there, a new
    connection works."""
    bport = free_port()
    dm = start_server(procs, dmtls_bin, pki, port, "127.0.0.1:%d" % bport)
    t0 = time.monotonic()
    s = tls_connect(port, pki)
    peer = peer_of(s)
    s.settimeout(3)
    try:
        data = s.recv(1)
        assert data == b"", "unexpected data %r" % data
    except socket.timeout:
        raise AssertionError("connection still open 3 s after connect; log:\n"
                             + dm.log()) from None
    except (ssl.SSLError, OSError):
        pass  # an alert or reset is a close too
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, "closed only after %.2f s" % elapsed
    rec = final_line(dm, peer)
    assert rec["event"] == "conn_failed", rec["_line"]
    assert "connect" in rec.get("reason", ""), rec["_line"]

    backend = FixedPortEcho(bport)
    try:
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            assert echo_once(s, b"back up") == b"back up"
        finally:
            close_tls(s)
        assert backend.accepted == 1
        assert final_line(dm, peer)["event"] == "close"
    finally:
        backend.close()


# -- 9. handshake deadline ---------------------------------------------------

def test_handshake_deadline_silent_client(dmtls_bin, pki, procs, port):
    """A TCP client that sends nothing is closed at the 1 s handshake deadline."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--handshake-timeout", "1s")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            peer = peer_of(s)
            elapsed = closed_after(s, 5)
        assert elapsed is not None, "silent client still connected after 5 s"
        assert 0.8 <= elapsed <= 2.5, "closed after %.2f s" % elapsed
        assert final_line(dm, peer)["event"] == "handshake_failed"
        assert backend.accepted == 0


def test_handshake_deadline_trickling_client(dmtls_bin, pki, procs, port):
    """A client trickling a real ClientHello one byte per 200 ms cannot
    extend the 1 s deadline: it is dropped at about 1 s, not later."""
    out = ssl.MemoryBIO()
    obj = client_context(pki).wrap_bio(ssl.MemoryBIO(), out,
                                       server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100  # a full ClientHello record

    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--handshake-timeout", "1s")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            peer = peer_of(s)
            t0 = time.monotonic()
            elapsed, sent = None, 0
            while time.monotonic() - t0 < 5 and sent < len(hello):
                try:
                    s.sendall(hello[sent:sent + 1])
                    sent += 1
                except OSError:
                    elapsed = time.monotonic() - t0
                    break
                r, _, _ = select.select([s], [], [], 0.2)
                if r:
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        elapsed = time.monotonic() - t0
                        break
        assert elapsed is not None, (
            "trickling client still connected after %.1f s (%d bytes sent)"
            % (time.monotonic() - t0, sent))
        assert 0.8 <= elapsed <= 2.5, "dropped after %.2f s" % elapsed
        assert final_line(dm, peer)["event"] == "handshake_failed"
        assert backend.accepted == 0


# -- 10. max-conns -----------------------------------------------------------

def test_max_conns_holds_third_client(dmtls_bin, pki, procs, port):
    """--max-conns 2 (over 2 workers): a third client waits in the kernel
    backlog (TCP connect works, TLS does not start, the target is not
    dialled); once one of the two closes, it is served.  Repeated a few
    rounds, because the third lands on either worker's listener."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--max-conns", "2", "--workers", "2")
        active = [tls_connect(port, pki) for _ in range(2)]
        held = None
        try:
            for i, s in enumerate(active):
                assert echo_once(s, b"conn %d" % i) == b"conn %d" % i
            wait_until(lambda: backend.accepted == 2, 3, "2 backend connections")
            ctx = client_context(pki)
            for rnd in range(4):
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                held = ctx.wrap_socket(raw, server_hostname="localhost",
                                       do_handshake_on_connect=False)
                held.settimeout(0.8)
                try:
                    held.do_handshake()
                    raise AssertionError("round %d: handshake of a third client "
                                         "completed with max-conns 2" % rnd)
                except (socket.timeout, TimeoutError):
                    pass  # held in the backlog, as designed
                assert backend.accepted == 2 + rnd

                close_tls(active.pop(0))  # frees a slot (dmtls answered close_notify)
                held.settimeout(3)
                try:
                    held.do_handshake()
                    assert echo_once(held, b"round %d" % rnd) == b"round %d" % rnd
                except (ssl.SSLError, OSError) as e:
                    raise AssertionError(
                        "round %d: held client not served within 3 s after a slot "
                        "was freed: %r; log:\n%s" % (rnd, e, dm.log())) from None
                active.append(held)
                held = None
                assert backend.accepted == 3 + rnd
        finally:
            for s in active:
                s.close()
            if held is not None:
                held.close()
