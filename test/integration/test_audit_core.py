"""Regression tests for defects the core audit (issue 9) found in the
connection engine: the handshake, the relay and the teardown."""

import os
import socket
import ssl
import subprocess
import sys
import time

from backends import EchoServer, wait_until
from conftest import free_port, wait_listening
from test_reload import conf_text, reload, start_run
from tlsclient import client_context, tls_connect

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


def listen_backlog(port):
    """Connections waiting in the accept queue of 127.0.0.1:port (the
    rx_queue column of its LISTEN entry in /proc/net/tcp)."""
    needle = "0100007F:%04X" % port
    total = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == needle and fields[3] == "0A":
                total += int(fields[4].split(":")[1], 16)
    return total


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
            wait_until(lambda: listen_backlog(port) == 1, 5,
                       "the third client in the accept queue")
            # It stays there: dmtls does not take it while both slots are
            # held (checked for a second; accepting takes microseconds).
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert listen_backlog(port) == 1, "third client accepted over max-conns 2"
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
