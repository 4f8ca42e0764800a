"""Integration tests of the `server` route: dmtls terminates mTLS and relays
plaintext to --target (DESIGN.md sections 2-5 and 8).

Covered: a 16 MiB full-duplex relay, identity and chain refusals, TLS
versions, ALPN selection, half-close in both directions, an unreachable
target, the absolute handshake deadline and --max-conns holding extra
clients in the kernel backlog.

Every dmtls gets its own port (conftest.free_port) and is ready at its
event=ready line, with no probe connection.  Each connection's final log
line is found by its peer address (the client socket's local address).  A
refused peer's target is judged undialled from /proc/net/tcp once that
final line is in, never after a sleep.
"""

import hashlib
import select
import socket
import ssl
import threading
import time
import warnings

from backends import (DuplexServer, EchoServer, HalfCloseServer, pattern_chunks,
                      pattern_sha256, wait_until)
from conftest import accept_queue, free_port, held_socket
from routes import (TLSStream, close_tls, closed_within, echo_once, final_line, peer_of,
                    start_server)
from tlsclient import client_context, tls_connect, tls_refused

MIB = 1 << 20


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
        why, peer = tls_refused(port, pki, cert=cert, with_peer=True)
        assert why is not None, "client with cert=%r was accepted" % (cert,)
        assert "ALERT" in why.upper(), "refused without a TLS alert: " + why
        rec = final_line(dm, peer)
        assert rec["event"] == event, rec["_line"]
        # the connection has ended: any dial it made is in /proc/net/tcp
        assert not backend.dialled(), "target was dialled for a refused peer"
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
        assert not backend.dialled(), "target was dialled for a refused peer"


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
        why, peer = tls_refused(port, pki, alpn=["spdy/3"], with_peer=True)
        assert why is not None, "client offering only spdy/3 was accepted"
        assert "NO APPLICATION PROTOCOL" in why.upper().replace("_", " "), why
        rec = final_line(dm, peer)
        assert rec["event"] == "handshake_failed", rec["_line"]
        assert not backend.dialled(), "target was dialled for a refused peer"


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
    """Target down: the client is closed as soon as the connect is refused
    (long before the 60 s connect timeout) and the log says conn_failed
    ... Connection refused; once a backend listens there, a new connection
    works.  The target's port is a socket the test holds bound throughout
    (refusing connections until it listens), so nobody else can take it."""
    held = held_socket()
    bport = held.getsockname()[1]
    dm = start_server(procs, dmtls_bin, pki, port, "127.0.0.1:%d" % bport,
                      "--connect-timeout", "60s")
    t0 = time.monotonic()
    s = tls_connect(port, pki)
    peer = peer_of(s)
    s.settimeout(30)
    try:
        data = s.recv(1)
        assert data == b"", "unexpected data %r" % data
    except socket.timeout:
        raise AssertionError("connection still open 30 s after connect; log:\n"
                             + dm.log()) from None
    except (ssl.SSLError, OSError):
        pass  # an alert or reset is a close too
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    # a route that waited for the connect timeout would take 60 s
    assert elapsed < 30, "closed only after %.2f s" % elapsed
    rec = final_line(dm, peer)
    assert rec["event"] == "conn_failed", rec["_line"]
    assert "Connection refused" in rec.get("reason", ""), rec["_line"]

    with EchoServer(sock=held) as backend:
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            assert echo_once(s, b"back up") == b"back up"
        finally:
            close_tls(s)
        assert backend.accepted == 1
        assert final_line(dm, peer)["event"] == "close"


# -- 9. handshake deadline ---------------------------------------------------

def test_handshake_deadline_silent_client(dmtls_bin, pki, procs, port):
    """A TCP client that sends nothing is closed at the 1 s handshake deadline."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--handshake-timeout", "1s")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            peer = peer_of(s)
            elapsed = closed_within(s, 30)
        assert elapsed is not None, "silent client still connected after 30 s"
        assert elapsed >= 0.9, "closed after %.2f s, before the deadline" % elapsed
        _assert_deadline(final_line(dm, peer))
        assert not backend.dialled()


def _assert_deadline(rec):
    """The final line of a connection cut at the 1 s handshake deadline,
    by dmtls's own clock (a loaded machine delays when the test notices,
    not what dmtls measured)."""
    assert rec["event"] == "handshake_failed", rec["_line"]
    assert rec.get("reason") == "handshake timeout after 1000ms", rec["_line"]
    assert int(rec["dur_ms"]) >= 1000, rec["_line"]


def test_handshake_deadline_trickling_client(dmtls_bin, pki, procs, port):
    """A client trickling a real ClientHello one byte per 200 ms cannot
    extend the 1 s deadline: it is dropped at the deadline, in the middle of
    its hello (which would take over a minute to send), not at its end."""
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
            while time.monotonic() - t0 < 30 and sent < len(hello):
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
        assert len(hello) > 150, "a hello too short to outlast the deadline"
        assert sent < len(hello), "the whole hello went out: the deadline moved"
        assert elapsed >= 0.9, "dropped after %.2f s, before the deadline" % elapsed
        _assert_deadline(final_line(dm, peer))
        assert not backend.dialled()


# -- 10. max-conns -----------------------------------------------------------

def test_max_conns_holds_third_client(dmtls_bin, pki, procs, port):
    """--max-conns 2 (over 2 workers): a third client waits in the kernel
    backlog (its TCP connection sits in the listeners' accept queue, read
    from /proc/net/tcp, while both open connections keep echoing, and the
    target is not dialled for it); once one of the two closes, it is
    accepted and served.  Repeated a few rounds, because the third lands on
    either worker's listener."""
    with EchoServer() as backend:
        dm = start_server(procs, dmtls_bin, pki, port, backend.addr,
                          "--max-conns", "2", "--workers", "2")
        active = [tls_connect(port, pki) for _ in range(2)]
        held = None
        try:
            for i, s in enumerate(active):
                assert echo_once(s, b"conn %d" % i) == b"conn %d" % i
            wait_until(lambda: backend.accepted == 2, 10, "2 backend connections")
            ctx = client_context(pki)
            for rnd in range(4):
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                held = ctx.wrap_socket(raw, server_hostname="localhost",
                                       do_handshake_on_connect=False)
                wait_until(lambda: accept_queue(port) == 1, 10,
                           "round %d: the third client in the accept queue" % rnd)
                # dmtls's loops run (both open connections echo), and the
                # third client is still not accepted
                for i, s in enumerate(active):
                    msg = b"round %d conn %d" % (rnd, i)
                    assert echo_once(s, msg) == msg
                assert accept_queue(port) == 1, "round %d: the third client was " \
                    "accepted with max-conns 2; log:\n%s" % (rnd, dm.log())
                assert backend.accepted == 2 + rnd

                close_tls(active.pop(0))  # frees a slot (dmtls answered close_notify)
                held.settimeout(30)
                try:
                    held.do_handshake()
                    assert echo_once(held, b"round %d" % rnd) == b"round %d" % rnd
                except (ssl.SSLError, OSError) as e:
                    raise AssertionError(
                        "round %d: held client not served after a slot was freed: "
                        "%r; log:\n%s" % (rnd, e, dm.log())) from None
                assert accept_queue(port) == 0
                active.append(held)
                held = None
                assert backend.accepted == 3 + rnd
        finally:
            for s in active:
                s.close()
            if held is not None:
                held.close()
