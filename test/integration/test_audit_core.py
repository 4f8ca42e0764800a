"""Regression tests for defects the core audit (issue 9) found in the
connection engine: the handshake, the relay and the teardown."""

import fcntl
import os
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from backends import EchoServer, _Server, pattern, wait_until
from conftest import accept_queue, free_port, wait_listening
from routes import TLSStream, conf_text, reload, start_run, start_server
from tlsclient import client_context, tls_connect


def _outq(sock):
    """Bytes sent on sock that its peer's kernel has not acknowledged yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                          b"\0\0\0\0"))[0]

HERE = os.path.dirname(os.path.abspath(__file__))


def padded_chain(pki, tmp_path, count=20, pad=3000):
    """A certificate file: leaf dm followed by `count` self-signed
    certificates, each carrying a `pad`-byte comment: a large Certificate
    flight (about count * pad bytes)."""
    parts = [open(pki.path("dm")).read()]
    for i in range(count):
        cert = tmp_path / ("pad%d.pem" % i)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                        str(tmp_path / ("pad%d-key.pem" % i)), "-out", str(cert),
                        "-days", "30", "-subj", "/CN=pad%d" % i, "-addext",
                        "nsComment=" + "A" * pad], check=True, capture_output=True)
        parts.append(cert.read_text())
    path = tmp_path / "chain.pem"
    path.write_text("".join(parts))
    return path


def test_handshake_flight_larger_than_send_buffer(dmtls_bin, pki, procs, tmp_path):
    """A server flight that the socket takes only in part, while wolfSSL
    already waits for the client's answer, is still sent in full when the
    socket drains: the handshake completes instead of stalling until the
    deadline (issue 9 item 5)."""
    chain = padded_chain(pki, tmp_path)
    port = free_port()
    with EchoServer() as echo:
        d = procs.start([sys.executable, os.path.join(HERE, "sockact.py"), str(port), "4096",
                         dmtls_bin, "server", "--listen", "systemd:lst",
                         "--target", echo.addr, "--ssl-ca", pki.ca,
                         "--ssl-cert", chain, "--ssl-key", pki.key("dm"),
                         "--cert-allowed-cn", "dm", "--handshake-timeout", "20s"],
                        name="dmtls")
        wait_listening(port, d)
        ctx = client_context(pki)
        raw = socket.socket()
        # A small receive window keeps most of the flight in dmtls's
        # (small) send buffer, so its first flush is partial.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(15)
        raw.connect(("127.0.0.1", port))
        # A stalled handshake times out here (15 s), before dmtls's 20 s.
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"ping")
            assert s.recv(16) == b"ping"


def test_max_conns_counts_connections_across_a_reload(dmtls_bin, pki, procs, tmp_path):
    """max-conns counts the route's open connections whatever generation
    they belong to: after a reload, two connections of the old generation
    still hold both slots, so a third client stays in the kernel backlog
    until one of them ends (issue 9 item 13)."""
    port = free_port()
    with EchoServer() as echo:
        conf = str(tmp_path / "dmtls.conf")
        text = conf_text(pki, [("r", port, echo.addr, None)],
                         extra_route_lines={"r": ["max-conns = 2;"]})
        with open(conf, "w") as f:
            f.write(text)
        d = start_run(procs, dmtls_bin, conf)
        wait_listening(port, d)
        held = [tls_connect(port, pki) for _ in range(2)]
        for s in held:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        reload(d)
        ctx = client_context(pki)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        third = ctx.wrap_socket(raw, server_hostname="localhost",
                                do_handshake_on_connect=False)
        try:
            wait_until(lambda: accept_queue(port) == 1, 5,
                       "the third client in the accept queue")
            # It stays there: dmtls does not take it while both slots are
            # held (checked for a second; accepting takes microseconds).
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert accept_queue(port) == 1, "third client accepted over max-conns 2"
                time.sleep(0.05)
            held.pop(0).close()
            third.settimeout(10)
            third.do_handshake()
            third.sendall(b"y")
            assert third.recv(1) == b"y"
        finally:
            third.close()
            for s in held:
                s.close()


class EndServer(_Server):
    """Read until the peer ends; record the bytes and how the stream ended:
    "eof" (FIN) or "reset" (RST)."""

    def handle(self, conn):
        got = b""
        end = "eof"
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += data
        except ConnectionResetError:
            end = "reset"
        self._record(data=got, end=end)


def tls_record(stream, payload):
    """One TLS application-data record of `payload` from a TLSStream."""
    with stream._lock:
        stream._obj.write(payload)
        return stream._out.read()


@pytest.mark.parametrize("how", ["bad_mac", "cut_mid_record"])
def test_corrupt_tls_stream_reaches_target_as_reset(dmtls_bin, pki, procs, how):
    """A TLS record that fails its MAC, or a stream cut inside a record,
    reaches the plaintext target as an abort (RST), never as a FIN that
    makes a truncated stream look complete (issue 9 item 8)."""
    port = free_port()
    with EndServer() as backend:
        d = start_server(procs, dmtls_bin, pki, port, backend.addr)
        s = TLSStream(port, pki, timeout=10)
        s.sendall(b"first part;")
        wait_until(lambda: backend.accepted == 1, 5, "the target dialled")
        rec = bytearray(tls_record(s, b"second part"))
        if how == "bad_mac":
            rec[-1] ^= 0x01              # the tag no longer matches
            s.raw.sendall(bytes(rec))
        else:
            s.raw.sendall(bytes(rec[:len(rec) // 2]))
            s.raw.shutdown(socket.SHUT_WR)
        (res,) = backend.wait_results(1)
        s.raw.close()
        assert res["end"] == "reset", res
        assert res["data"] in (b"", b"first part;"), res
        m = d.wait_log(r"event=close .*reason=\"[^\"]*\"")
        assert "aborted" in m.group(0), m.group(0)


def test_write_error_one_way_keeps_the_other_way(dmtls_bin, pki, procs):
    """When the target stops taking the client's upload (it closed with the
    upload unread, so writes to it fail), the reply it already sent still
    reaches the client whole, then a clean close_notify (issue 9 item 8)."""
    reply = pattern(200 * 1024, "reply")

    class ReplyThenReset(_Server):
        def handle(self, conn):
            conn.recv(65536)
            conn.sendall(reply)
            conn.shutdown(socket.SHUT_WR)
            # Everything acknowledged by dmtls's kernel, then close with
            # the upload unread: the kernel resets the connection.
            wait_until(lambda: _outq(conn) == 0, 10, "reply acknowledged")
            self._record(sent=len(reply))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))

    port = free_port()
    with ReplyThenReset() as backend:
        d = start_server(procs, dmtls_bin, pki, port, backend.addr)
        s = TLSStream(port, pki, timeout=20, rcvbuf=4096)
        stop = threading.Event()

        def upload():
            try:
                while not stop.is_set():
                    s.sendall(b"u" * 65536)
            except OSError:
                pass

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        backend.wait_results(1)
        # The upload is now refused by the target; read the reply.
        got = bytearray()
        while True:
            data = s.recv()
            if not data:
                break
            got += data
        stop.set()
        s.raw.close()
        t.join(10)
        assert len(got) == len(reply) and bytes(got) == reply, len(got)
        d.wait_log(r"event=close .*reason=\"write to target")


def test_go_client_denied_sees_the_alert(dmtls_bin, pki, procs, goclient):
    """A Go client (as every DM component is) refused by the allow-list
    reports the server's alert, "remote error: tls: bad certificate", not
    "broken pipe" or "connection reset": under TLS 1.3 it writes before it
    reads the verdict, and dmtls drains before closing (issue 9 item 15)."""
    port = free_port()
    with EchoServer() as echo:
        d = start_server(procs, dmtls_bin, pki, port, echo.addr)
        for i in range(10):
            # It writes 256 KiB before it reads, so the server has its
            # bytes to deal with after the denial.
            r = subprocess.run([goclient, "127.0.0.1:%d" % port, pki.ca, pki.path("other"),
                                pki.key("other"), "localhost", str(256 * 1024)],
                               capture_output=True, text=True, timeout=20)
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert "remote error: tls: bad certificate" in r.stdout, \
                "round %d: Go saw %r" % (i, r.stdout)
        assert echo.accepted == 0
        # An allowed Go client still gets its echo.
        r = subprocess.run([goclient, "127.0.0.1:%d" % port, pki.ca, pki.path("dm"),
                            pki.key("dm"), "localhost"],
                           capture_output=True, text=True, timeout=20)
        assert r.stdout.startswith("ok: "), (r.stdout, r.stderr, d.log())


@pytest.mark.parametrize("name, sans, ok", [
    ("master-1", ("DNS:master-1",), True),          # a single-label name
    ("master-1.dm.svc", ("DNS:master-1.dm.svc",), True),
    ("127.0.0.1", ("DNS:localhost", "IP:127.0.0.1"), True),
    ("MASTER-1", ("DNS:master-1",), True),            # DNS names ignore case
    ("master-2", ("DNS:master-1",), False),
    ("master-1", ("IP:127.0.0.1",), False),
    ("127.0.0.2", ("IP:127.0.0.1",), False),
    ("w1.dm", ("DNS:*.dm",), True),                   # a wildcard label
    ("a.w1.dm", ("DNS:*.dm",), False),                # covers one label only
])
def test_client_route_server_name(dmtls_bin, pki, procs, name, sans, ok):
    """A client route's server-name is checked against the server's SANs,
    whatever its form: DM names its components with single labels such as
    master-1 (wolfSSL 5.9's own check refuses those, and IP addresses, so
    every connection failed); a name the certificate does not carry is
    refused with a clear reason."""
    leaf = "srv-" + re.sub(r"[^a-z0-9]+", "-", "%s-%s" % (name.lower(), "-".join(sans)))
    cert, key = pki.leaf(leaf, "dm", sans=sans)
    sport, cport = free_port(), free_port()
    with EchoServer() as echo:
        procs.start([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % sport,
                     "--target", echo.addr, "--ssl-ca", pki.ca, "--ssl-cert", cert,
                     "--ssl-key", key, "--cert-allowed-cn", "dm"],
                    name="server", wait_port=sport)
        c = procs.start([dmtls_bin, "client", "--listen", "127.0.0.1:%d" % cport,
                         "--target", "127.0.0.1:%d" % sport, "--server-name", name,
                         "--ssl-ca", pki.ca, "--ssl-cert", pki.path("dm"),
                         "--ssl-key", pki.key("dm"), "--cert-allowed-cn", "dm"],
                        name="client", wait_port=cport)
        with socket.create_connection(("127.0.0.1", cport), timeout=10) as s:
            s.sendall(b"hello")
            try:
                got = s.recv(16)
            except ConnectionResetError:
                got = b""
        if ok:
            assert got == b"hello", c.log()
        else:
            assert got == b""
            m = c.wait_log(r"event=handshake_failed .*")
            assert "does not match" in m.group(0) and name in m.group(0), m.group(0)
