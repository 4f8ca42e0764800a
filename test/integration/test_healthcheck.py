"""`dmtls healthcheck [-c FILE | ADDR]` (DESIGN.md section 5): GET /healthz
from ADDR, or from the `status` address of the config FILE, exit 0 on 200
and 1 otherwise with the reasons printed; the container image's HEALTHCHECK.
"""

import os
import socket
import threading
import time

import pytest

from conftest import free_port, run

# The command's own deadline is 5 s; a test waits twice that at most.
HC_TIMEOUT = 12


def write_conf(path, pki, port, status=None, cert="dm", extra=""):
    lines = ['log-level = "info";']
    if status is not None:
        lines.append('status = "%s";' % status)
    lines += [extra,
              "security = {",
              '  ssl-ca = "%s";' % pki.ca,
              '  ssl-cert = "%s";' % pki.path(cert),
              '  ssl-key = "%s";' % pki.key(cert),
              '  cert-allowed-cn = ["dm"];',
              "};",
              "routes = (",
              '  { name = "hc"; kind = "server"; listen = "127.0.0.1:%d"; '
              'target = "127.0.0.1:%d"; }' % (port, free_port()),
              ");", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return os.fspath(path)


def start_run(procs, dmtls_bin, conf):
    p = procs.start([dmtls_bin, "run", "-c", conf], name="dmtls-run")
    p.wait_log(r"event=ready", timeout=10)
    return p


def healthcheck(dmtls_bin, *args):
    return run([dmtls_bin, "healthcheck"] + list(args), timeout=HC_TIMEOUT)


class OneShotServer:
    """Accepts connections on 127.0.0.1 and hands each to `handler(conn)`."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.handler = handler
        self.conns = []
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            c.settimeout(5)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                self.handler(c)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_healthcheck_ok_from_config(dmtls_bin, pki, procs, tmp_path):
    """With -c FILE it asks the config's status address: 200 -> exit 0."""
    sp = free_port()
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "127.0.0.1:%d" % sp)
    start_run(procs, dmtls_bin, conf)
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "ok" in r.stdout


def test_healthcheck_ok_from_addr(dmtls_bin, pki, procs, tmp_path):
    """With ADDR it asks ADDR directly."""
    sp = free_port()
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "127.0.0.1:%d" % sp)
    start_run(procs, dmtls_bin, conf)
    r = healthcheck(dmtls_bin, "127.0.0.1:%d" % sp)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def test_healthcheck_wildcard_status_asks_loopback(dmtls_bin, pki, procs, tmp_path):
    """status = "0.0.0.0:PORT" (a container that lets Prometheus scrape it)
    is asked on 127.0.0.1."""
    sp = free_port()
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "0.0.0.0:%d" % sp)
    start_run(procs, dmtls_bin, conf)
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def test_healthcheck_unix_status(dmtls_bin, pki, procs, tmp_path):
    """A unix: status address works too."""
    path = str(tmp_path / "status.sock")
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "unix:" + path)
    start_run(procs, dmtls_bin, conf)
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


def test_healthcheck_503_prints_reasons(dmtls_bin, pki, procs, tmp_path):
    """An expired ssl-cert makes /healthz answer 503: exit 1, and the
    reasons dmtls gave (route, certificate expired) are printed."""
    sp = free_port()
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "127.0.0.1:%d" % sp,
                      cert="expired")
    start_run(procs, dmtls_bin, conf)
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "503" in out and "route hc" in out and "expired" in out, out


def test_healthcheck_config_without_status(dmtls_bin, pki, tmp_path):
    """A config with no `status` cannot be asked: exit 1, saying to set one."""
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port())
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert conf in r.stderr and "status" in r.stderr and "set" in r.stderr, r.stderr


def test_healthcheck_broken_config_names_file_line(dmtls_bin, pki, tmp_path):
    """A config that does not load: exit 1 with its FILE:LINE message."""
    conf = write_conf(tmp_path / "dmtls.conf", pki, free_port(), "127.0.0.1:1",
                      extra="bogus-key = 1;")
    r = healthcheck(dmtls_bin, "-c", conf)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "%s:3:" % conf in r.stderr, r.stderr


def test_healthcheck_nothing_listening(dmtls_bin):
    """Nobody on ADDR: exit 1 naming the address and the error."""
    addr = "127.0.0.1:%d" % free_port()
    r = healthcheck(dmtls_bin, addr)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert addr in r.stderr and "refused" in r.stderr, r.stderr


def test_healthcheck_sends_one_get_healthz(dmtls_bin):
    """The request is GET /healthz with Connection: close; a 200 from
    anything is healthy."""
    def ok(c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        c.close()
    srv = OneShotServer(ok)
    try:
        r = healthcheck(dmtls_bin, "127.0.0.1:%d" % srv.port)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        assert len(srv.requests) == 1, srv.requests
        head = srv.requests[0].decode()
        assert head.startswith("GET /healthz HTTP/1.1\r\n"), head
        assert "\r\nConnection: close\r\n" in head, head
    finally:
        srv.close()


def test_healthcheck_hostile_answer_is_escaped(dmtls_bin):
    """A non-HTTP answer full of terminal escapes is unhealthy, and what is
    printed of it carries no control byte."""
    def junk(c):
        c.sendall(b"\x1b[2J\x1b]0;pwned\x07HTTP/1.1 200 OK\r\n\r\n\x00\x1b[31m")
        c.close()
    srv = OneShotServer(junk)
    try:
        r = healthcheck(dmtls_bin, "127.0.0.1:%d" % srv.port)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        out = r.stdout + r.stderr
        assert not any(ord(ch) < 0x20 and ch != "\n" or ord(ch) == 0x7f for ch in out), \
            repr(out)
    finally:
        srv.close()


def test_healthcheck_503_body_escaped(dmtls_bin):
    """A 503 whose body carries control bytes: printed escaped."""
    def bad(c):
        c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n"
                  b"route x: \x1b[31mred\x1b[0m\n")
        c.close()
    srv = OneShotServer(bad)
    try:
        r = healthcheck(dmtls_bin, "127.0.0.1:%d" % srv.port)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "route x:" in r.stderr and "\x1b" not in r.stderr, repr(r.stderr)
    finally:
        srv.close()


def test_healthcheck_silent_server_times_out(dmtls_bin):
    """A server that accepts and never answers: exit 1 within the command's
    deadline (5 s), saying it timed out."""
    hold = threading.Event()
    srv = OneShotServer(lambda c: hold.wait(HC_TIMEOUT))
    try:
        t0 = time.monotonic()
        r = healthcheck(dmtls_bin, "127.0.0.1:%d" % srv.port)
        took = time.monotonic() - t0
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "timed out" in r.stderr, r.stderr
        assert took < 9, took
    finally:
        hold.set()
        srv.close()


def test_healthcheck_huge_answer_is_bounded(dmtls_bin):
    """An endless answer does not make it read forever: it stops at its
    bound and judges what it has."""
    stop = threading.Event()

    def flood(c):
        c.sendall(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        try:
            while not stop.is_set():
                c.sendall(b"x" * 65536)
        except OSError:
            pass
    srv = OneShotServer(flood)
    try:
        t0 = time.monotonic()
        r = healthcheck(dmtls_bin, "127.0.0.1:%d" % srv.port)
        assert r.returncode == 1, (r.returncode, r.stdout[:200], r.stderr[:200])
        assert time.monotonic() - t0 < 9
        assert len(r.stderr) < 20000, len(r.stderr)
    finally:
        stop.set()
        srv.close()


@pytest.mark.parametrize("argv", [["-c"], ["-c", "a", "b"], ["a", "b"], ["--bogus"]])
def test_healthcheck_usage_errors_exit_2(dmtls_bin, argv):
    r = healthcheck(dmtls_bin, *argv)
    assert r.returncode == 2, (argv, r.returncode, r.stdout, r.stderr)
    assert "usage" in r.stderr or "healthcheck" in r.stderr, r.stderr


def test_healthcheck_bad_address(dmtls_bin):
    """An ADDR that is not one: exit 2 naming it."""
    r = healthcheck(dmtls_bin, "nonsense")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "nonsense" in r.stderr, r.stderr
