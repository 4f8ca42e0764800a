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
                      SlowReader, TLSServer, _Server, pattern, pattern_chunks,
                      pattern_sha256, read_to_eof, wait_until)
import conftest
from conftest import (Proc, Procs, accept_queue, dmtls_path, free_port, held_socket, judge,
                      names_dmtls, run, tcp_listening)
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
    """SlowReader never reads faster than its rate (plus one burst), and
    does read: 100 KB/s, judged against the time it has been running."""
    rate = 100000
    with SlowReader(rate, rcvbuf=4096) as srv, connect(srv.port) as s:
        s.setblocking(False)
        start = time.monotonic()
        while srv.bytes_read < rate:  # a second's worth, however long it takes
            try:
                s.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
            assert time.monotonic() - start < 60, "SlowReader read %d B in 60 s" % (
                srv.bytes_read)
        got, elapsed = srv.bytes_read, time.monotonic() - start
        assert got <= rate * elapsed + 4096, "%d B in %.2f s" % (got, elapsed)


def test_close_does_not_hang_with_idle_clients():
    srv = EchoServer()
    socks = [connect(srv.port) for _ in range(5)]
    wait_until(lambda: srv.accepted == 5, msg="5 accepts")
    srv.close()  # raises if a handler thread is still running 3 s later
    for s in socks:
        s.settimeout(2)
        assert s.recv(1) == b""
        s.close()


# -- ports and socket states ---------------------------------------------------

def test_free_port_is_held_outside_the_ephemeral_range():
    """free_port() never repeats in a session, stays out of the range the
    kernel picks outgoing ports from, and is locked against other sessions
    (the lock file cannot be taken again)."""
    import fcntl
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = (int(x) for x in f.read().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(not lo <= p <= hi for p in ports), ports
    fd = os.open(os.path.join(conftest.PORT_LOCK_DIR, "%d.lock" % ports[0]), os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new open file: refused
    finally:
        os.close(fd)


def test_held_socket_refuses_then_serves():
    """held_socket(): connections are refused until it listens; an
    EchoServer can then serve on it, and accept_queue() counts what waits
    in a backlog nobody accepts from."""
    s = held_socket()
    port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()
    assert not tcp_listening(port)
    s.listen(4)
    waiting = [connect(port) for _ in range(2)]
    wait_until(lambda: accept_queue(port) == 2, msg="2 queued connections")
    for c in waiting:
        c.close()
    s.close()
    s = held_socket()
    with EchoServer(sock=s) as srv:
        assert srv.port == s.getsockname()[1] and not srv.dialled()
        with connect(srv.port) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        assert srv.dialled()


def test_connections_to_sees_a_connection_not_yet_accepted():
    """connections_to() (behind _Server.dialled()) shows a connection as
    soon as it reached the kernel, before anyone accepted it, and after it
    ended (TIME_WAIT)."""
    s = held_socket()
    port = s.getsockname()[1]
    s.listen(4)
    try:
        assert conftest.connections_to(port) == set()
        c = connect(port)
        here = c.getsockname()
        assert any(local == here for local, _, _ in conftest.connections_to(port))
        c.close()
        assert conftest.connections_to(port)
    finally:
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
    srv = TLSServer(pki.path("dm"), pki.key("dm"), pki.ca).expect_error(r"^handshake: ")
    with srv:
        assert tls_refused(srv.port, pki, cert="dm") is None
        assert tls_refused(srv.port, pki, cert=None) is not None
        assert tls_refused(srv.port, pki, cert="untrusted") is not None
        assert tls_refused(srv.port, pki, cert="expired") is not None
        wait_until(lambda: len(srv.errors) == 3, msg="3 handshake errors")
        assert srv.peer_cns == ["dm"]
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(srv.port, pki, ca="ca2")  # client refuses the server


def test_tls_refused_takes_silence_for_neither(pki):
    """A server that completes the handshake and then says nothing is
    neither accepting nor refusing: tls_refused() fails instead of
    guessing."""

    class Mute(TLSServer):
        def handle(self, conn):
            tls = self.ctx.wrap_socket(conn, server_side=True)
            tls.recv(1)
            self._closed.wait(30)

    with Mute(pki.path("dm"), pki.key("dm"), pki.ca) as srv:
        with pytest.raises(AssertionError, match="neither echoed"):
            tls_refused(srv.port, pki, timeout=1)


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
                    wait_port=free_port(), timeout=120)
    assert time.monotonic() - t < 60, "waited for the port instead of failing fast"


def test_procs_unix_wait(procs, tmp_path):
    path = str(tmp_path / "s.sock")
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); "
            "s.bind(sys.argv[1]); s.listen(); time.sleep(30)")
    p = procs.start([sys.executable, "-c", code, path], wait_unix=path)
    assert p.proc.poll() is None
    # left running on purpose: the fixture's teardown must stop it


# -- judging processes at stop -------------------------------------------------

# Stands in for dmtls: installs a SIGTERM handler that exits with argv[1],
# writes argv[2:] to stderr, says "ready", waits.  With argv[1] "crash" it
# kills itself with SIGSEGV on SIGTERM instead.
FAKE_DMTLS = """
import os, signal, sys
def on_term(*_):
    if sys.argv[1] == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    sys.exit(int(sys.argv[1]))
signal.signal(signal.SIGTERM, on_term)
for line in sys.argv[2:]:
    print(line, file=sys.stderr, flush=True)
print("ready", file=sys.stderr, flush=True)
while True:
    signal.pause()
"""

ERR_LINE = "ts=2024-01-01T00:00:00.000Z level=error event=connect_failed target=x:1"
JSON_ERR = '{"ts":"2024-01-01T00:00:00.000Z","level":"error","event":"reload_failed"}'
ASAN = "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020"
UBSAN = "proxy/conn.c:120:9: runtime error: signed integer overflow"
ASSERT = "dmtls: proxy/conn.c:88: conn_free: Assertion `c->magic == CONN_MAGIC' failed."


def stopped(tmp_path, status, *lines, strict=True, **declared):
    """A FAKE_DMTLS process, judged as dmtls (strict) unless told, after
    writing `lines` to stderr and being stopped by SIGTERM."""
    p = Proc([sys.executable, "-c", FAKE_DMTLS, str(status), *lines], "fake",
             str(tmp_path), None, strict=strict, **declared)
    p.wait_log("^ready$")
    p.stop()
    return p


def test_judge_passes_a_clean_stop(tmp_path):
    p = stopped(tmp_path, 0, "ts=x level=info event=listening", "ts=x level=warn event=y")
    assert p.proc.returncode == 0 and judge(p) == []


def test_judge_flags_an_unexpected_error_line(tmp_path):
    assert judge(stopped(tmp_path, 0, ERR_LINE)) == ["unexpected error line: " + ERR_LINE]
    assert judge(stopped(tmp_path, 0, JSON_ERR)) == ["unexpected error line: " + JSON_ERR]


def test_judge_passes_a_declared_error_line(tmp_path):
    p = stopped(tmp_path, 0, ERR_LINE, JSON_ERR,
                expect_errors=[r"event=connect_failed target=x:1$"])
    assert judge(p) == ["unexpected error line: " + JSON_ERR]  # one line per regex
    p.expect_error(r'"event":"reload_failed"')
    assert judge(p) == []


def test_judge_flags_sanitizer_reports_and_assertions(tmp_path):
    want = ["report: " + line for line in (ASAN, UBSAN, ASSERT)]
    assert judge(stopped(tmp_path, 0, ASAN, UBSAN, ASSERT)) == want
    # a backend that is not dmtls is held to this too
    assert judge(stopped(tmp_path, 0, ASAN, UBSAN, ASSERT, strict=False)) == want


def test_judge_flags_an_unexpected_exit_status(tmp_path):
    p = stopped(tmp_path, 2)
    assert judge(p) == ["exit status 2, expected 0 (signals sent: SIGTERM)"]
    assert judge(p.expect_exit(2)) == [] and judge(p.expect_exit(None)) == []
    assert judge(stopped(tmp_path, 1, expect_status=1)) == []
    assert judge(stopped(tmp_path, 2, strict=False)) == []  # only a crash counts


def test_judge_flags_a_crash_of_any_process(tmp_path):
    for strict in (True, False):
        problems = judge(stopped(tmp_path, "crash", strict=strict))
        assert len(problems) == 1 and "-11 (SIGSEGV)" in problems[0], problems
    p = Proc([sys.executable, "-c", "import time; time.sleep(60)"], "sleeper",
             str(tmp_path), None)
    assert not p.strict and p.stop() == -15 and judge(p) == []  # we sent that one


def test_judge_recognises_dmtls_behind_a_wrapper():
    assert names_dmtls(["prlimit", "--nofile=48:48", "--", dmtls_path(), "run"])
    assert names_dmtls(["/elsewhere/bin/dmtls", "version"])
    assert not names_dmtls([sys.executable, "-c", "print('dmtls')", "dmtls.conf"])


def test_stop_all_stops_everything_then_reports_all(tmp_path):
    ps = Procs(str(tmp_path))
    for lines in ([ERR_LINE], [ASAN]):
        ps.start([sys.executable, "-c", FAKE_DMTLS, "0", *lines], name="fake",
                 strict=True).wait_log("^ready$")
    with pytest.raises(AssertionError) as e:
        ps.stop_all()
    assert all(p.proc.returncode == 0 for p in ps.all)
    msg = str(e.value)
    assert "unexpected error line: " + ERR_LINE in msg and "report: " + ASAN in msg
    assert "fake (argv" in msg and "fake-1 (argv" in msg


def test_run_flags_a_sanitizer_report_of_dmtls(tmp_path):
    fake = tmp_path / "dmtls"
    fake.write_text("#!%s\nimport sys\nprint(%r, file=sys.stderr)\nsys.exit(1)\n"
                    % (sys.executable, UBSAN))
    fake.chmod(0o755)
    with pytest.raises(AssertionError, match="runtime error: signed integer overflow"):
        run([fake, "check"])
    assert run([fake, "check"], expect_errors=[r"conn\.c:120:9: runtime error"]).returncode == 1
    # the same line from a program that is not dmtls is its own business
    assert run([sys.executable, "-c", "import sys; print(%r, file=sys.stderr)"
                % UBSAN]).returncode == 0


class Failing(_Server):
    """A backend whose handler raises."""

    def handle(self, conn):
        raise ValueError("boom from the handler")


def test_backend_reports_its_own_errors_at_exit():
    with pytest.raises(AssertionError, match="ValueError: boom from the handler"):
        with Failing() as srv:
            connect(srv.port).close()
            wait_until(lambda: srv.errors, msg="the handler's error")
    with Failing().expect_error(r"^ValueError: boom from the handler$") as srv:
        connect(srv.port).close()
        wait_until(lambda: srv.errors, msg="the handler's error")
    assert srv.errors == ["ValueError: boom from the handler"]
