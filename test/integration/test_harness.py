"""Tests of the integration-test harness itself (no dmtls binary needed)."""

import hashlib
import os
import socket
import ssl
import sys
import threading
import time

import pytest

from backends import (DuplexServer, EchoServer, HalfCloseServer, SinkServer,
                      SlowReader, TLSServer, pattern, pattern_chunks, pattern_sha256,
                      read_to_eof, wait_until)
from conftest import free_port, run
from tlsclient import tls_connect, tls_refused


def x509(pki, name, *args):
    """openssl x509 -in NAME.pem -noout ARGS -> CompletedProcess."""
    return run(["openssl", "x509", "-in", pki.path(name), "-noout", *args])


def verify(ca_path, cert_path):
    """True when openssl verify accepts cert_path against ca_path."""
    return run(["openssl", "verify", "-CAfile", ca_path, cert_path]).returncode == 0


def pubkey(pki, name):
    """Public key PEM of NAME-key.pem."""
    return run(["openssl", "pkey", "-in", pki.key(name), "-pubout"]).stdout


def connect(port, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


# -- PKI ---------------------------------------------------------------------

@pytest.mark.parametrize("name,cn", [("dm", "dm"), ("other", "other"),
                                     ("untrusted", "dm")])
def test_pki_leaf_identity(pki, name, cn):
    r = x509(pki, name, "-subject", "-ext", "subjectAltName,basicConstraints",
             "-checkend", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "subject=CN = %s\n" % cn in r.stdout
    assert "DNS:localhost" in r.stdout and "IP Address:127.0.0.1" in r.stdout
    assert "CA:FALSE" in r.stdout
    assert pubkey(pki, name) == x509(pki, name, "-pubkey").stdout  # key matches
    with open(pki.key(name)) as f:
        assert f.read().startswith("-----BEGIN PRIVATE KEY-----")


def test_pki_expired(pki):
    r = x509(pki, "expired", "-subject", "-checkend", "0")
    assert r.returncode == 1 and "subject=CN = dm" in r.stdout
    assert not verify(pki.ca, pki.path("expired"))


def test_pki_trust(pki):
    assert pki.ca == pki.path("ca") and os.path.isfile(pki.ca)
    assert verify(pki.ca, pki.path("dm"))
    assert verify(pki.ca, pki.path("other"))
    assert not verify(pki.ca, pki.path("untrusted"))
    assert verify(pki.path("ca2"), pki.path("untrusted"))
    r = x509(pki, "ca", "-subject", "-ext", "basicConstraints", "-checkend", "0")
    assert "subject=CN = dmtls test CA" in r.stdout and "CA:TRUE" in r.stdout


def test_pki_leaf_on_demand(pki):
    cert, key = pki.leaf("dm2", "dm")
    assert (cert, key) == (pki.path("dm2"), pki.key("dm2"))
    assert "subject=CN = dm\n" in x509(pki, "dm2", "-subject").stdout
    assert pubkey(pki, "dm2") != pubkey(pki, "dm")
    pki.leaf("wrong", "dm", sans=("DNS:wrong.example",))
    r = x509(pki, "wrong", "-ext", "subjectAltName")
    assert "DNS:wrong.example" in r.stdout and "localhost" not in r.stdout
    pki.new_ca("ca3")
    pki.leaf("dm3", "dm", ca="ca3")
    assert verify(pki.path("ca3"), pki.path("dm3"))
    assert not verify(pki.ca, pki.path("dm3"))
    bundle = pki.bundle("ca-and-ca3", "ca", "ca3")
    assert verify(bundle, pki.path("dm3")) and verify(bundle, pki.path("dm"))


def test_rsa_pki(rsa_pki):
    r = x509(rsa_pki, "dm", "-text")
    assert "rsaEncryption" in r.stdout and "2048 bit" in r.stdout
    assert verify(rsa_pki.ca, rsa_pki.path("dm"))


# -- plaintext backends ------------------------------------------------------

def test_echo_1mib(tmp_path):
    data = pattern(1 << 20, "echo")
    with EchoServer() as srv:
        assert srv.addr == "127.0.0.1:%d" % srv.port
        for _ in range(2):
            with connect(srv.port) as s:
                t = threading.Thread(target=lambda: (s.sendall(data),
                                                     s.shutdown(socket.SHUT_WR)))
                t.start()
                digest, n, _ = read_to_eof(s)
                t.join(5)
            assert (n, digest) == (len(data), hashlib.sha256(data).hexdigest())
        assert srv.accepted == 2
        assert [r["bytes"] for r in srv.wait_results(2)] == [len(data)] * 2


def test_sink_sha256():
    data = os.urandom(300000)
    with SinkServer(reply=b"done") as srv:
        with connect(srv.port) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            assert read_to_eof(s)[2] == b"done"
        res = srv.wait_results(1, timeout=5)
    assert res == [{"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}]


def test_wait_results_times_out():
    with SinkServer() as srv:
        with pytest.raises(AssertionError):
            srv.wait_results(1, timeout=0.2)


def test_pattern_deterministic():
    a = pattern(3 << 20 | 17, 7)
    assert a == pattern(3 << 20 | 17, 7) and len(a) == 3 << 20 | 17
    assert a != pattern(len(a), 8)
    assert pattern(100, 7) == a[:100]
    assert b"".join(pattern_chunks(len(a), 7, 1000)) == a
    assert pattern_sha256(len(a), 7) == hashlib.sha256(a).hexdigest()


def test_duplex():
    n = 4 << 20
    with DuplexServer(n, seed="down") as srv, connect(srv.port) as s:
        def send():
            s.sendall(pattern(n, "up"))
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=send)
        t.start()
        digest, got, _ = read_to_eof(s)
        t.join(10)
        assert (got, digest) == (n, pattern_sha256(n, "down"))
        assert srv.wait_results(1) == [{"sha256": pattern_sha256(n, "up"), "bytes": n}]


def test_half_close_reply_after_eof():
    with HalfCloseServer(b"late reply") as srv, connect(srv.port) as s:
        s.sendall(b"request")
        s.shutdown(socket.SHUT_WR)
        assert read_to_eof(s)[2] == b"late reply"
        assert srv.wait_results(1)[0]["data"] == b"request"


def test_half_close_first_close():
    with HalfCloseServer(b"bye", first_close=True) as srv, connect(srv.port) as s:
        assert s.recv(10) == b"bye" and s.recv(10) == b""  # server wrote and shut
        s.sendall(b"still flowing")
        s.shutdown(socket.SHUT_WR)
        assert srv.wait_results(1)[0]["data"] == b"still flowing"


def test_slow_reader_rate():
    with SlowReader(100000, rcvbuf=4096) as srv, connect(srv.port) as s:
        s.setblocking(False)
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            try:
                s.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        assert 50000 <= srv.bytes_read <= 160000


def test_close_does_not_hang_with_idle_clients():
    srv = EchoServer()
    socks = [connect(srv.port) for _ in range(5)]
    wait_until(lambda: srv.accepted == 5, msg="5 accepts")
    t = time.monotonic()
    srv.close()
    assert time.monotonic() - t < 2
    for s in socks:
        s.settimeout(2)
        assert s.recv(1) == b""
        s.close()


# -- TLS ---------------------------------------------------------------------

def test_tls_server_reports_client_cn(pki):
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca, alpn=["h2"]) as srv:
        with tls_connect(srv.port, pki, cert="dm", alpn=["h2", "http/1.1"]) as s:
            assert s.selected_alpn_protocol() == "h2"
            s.sendall(b"hello")
            assert s.recv(5) == b"hello"
        assert srv.peer_cns == ["dm"] and srv.alpns == ["h2"]
        assert srv.snis == ["localhost"] and srv.versions == ["TLSv1.3"]
        with tls_connect(srv.port, pki, cert="other", max_version="1.2",
                         server_hostname="127.0.0.1") as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        assert srv.peer_cns == ["dm", "other"] and srv.versions[1] == "TLSv1.2"
        assert srv.snis[1] is None and srv.errors == []


def test_tls_refusals(pki):
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca) as srv:
        assert tls_refused(srv.port, pki, cert="dm") is None
        assert tls_refused(srv.port, pki, cert=None) is not None
        assert tls_refused(srv.port, pki, cert="untrusted") is not None
        assert tls_refused(srv.port, pki, cert="expired") is not None
        wait_until(lambda: len(srv.errors) == 3, msg="3 handshake errors")
        assert srv.peer_cns == ["dm"]
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(srv.port, pki, ca="ca2")  # client refuses the server


# -- process fixture ---------------------------------------------------------

LISTENER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
time.sleep(0.3)
print("listening", flush=True); print("ready port=" + sys.argv[1], file=sys.stderr, flush=True)
while True:
    s.accept()[0].close()
"""


def test_procs_start_and_stop(procs, port):
    p = procs.start([sys.executable, "-c", LISTENER, str(port)], name="listener",
                    wait_port=port)
    assert p.wait_log(r"ready port=(\d+)").group(1) == str(port)
    assert p.rss_kb() > 1000 and p.fd_count() >= 3
    with pytest.raises(AssertionError, match="ready port"):
        p.wait_log("never printed", timeout=0.1)
    assert p.stop() == -15 and "listening" in p.out()


def test_procs_fail_fast(procs):
    t = time.monotonic()
    with pytest.raises(AssertionError, match="boom"):
        procs.start([sys.executable, "-c", "import sys; sys.exit('boom')"],
                    wait_port=free_port(), timeout=5)
    assert time.monotonic() - t < 3


def test_procs_unix_wait(procs, tmp_path):
    path = str(tmp_path / "s.sock")
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); "
            "s.bind(sys.argv[1]); s.listen(); time.sleep(30)")
    p = procs.start([sys.executable, "-c", code, path], wait_unix=path)
    assert p.proc.poll() is None
    # left running on purpose: the fixture's teardown must stop it
