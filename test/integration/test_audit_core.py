"""Regression tests for defects the core audit (issue 9) found in the
connection engine: the handshake, the relay and the teardown."""

import os
import socket
import ssl
import subprocess
import sys

from backends import EchoServer
from conftest import free_port, wait_listening
from tlsclient import client_context

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
