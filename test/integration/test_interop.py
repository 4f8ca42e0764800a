"""Interoperability: dmtls routes against each other and against real TLS
tools (curl, openssl s_client), as DM deployments use them (DESIGN.md
sections 1-2: gRPC needs ALPN h2 end to end; server routes terminate mTLS for
any TLS client that presents an allowed certificate).
"""

import hashlib
import http.server
import os
import re
import select
import socket
import subprocess
import threading
import time

from backends import EchoServer, SinkServer
from conftest import free_port, run
from routes import start_route

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# SETTINGS frame: length 12, type 0x4, flags 0, stream 0;
# SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 100, SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 65535
H2_SETTINGS = (b"\x00\x00\x0c\x04\x00\x00\x00\x00\x00"
               b"\x00\x03\x00\x00\x00\x64"
               b"\x00\x04\x00\x00\xff\xff")


def test_pair_carries_h2_preface_and_negotiates_h2(dmtls_bin, pki, procs):
    """plaintext client -> client route -> server route -> plaintext backend:
    the HTTP/2 prior-knowledge preface and a SETTINGS frame arrive intact and
    both routes log alpn=h2 (gRPC between DM components needs it)."""
    payload = H2_PREFACE + H2_SETTINGS
    server_port, client_port = free_port(), free_port()
    with SinkServer() as sink:
        srv = start_route(procs, dmtls_bin, pki, "server", server_port, sink.addr,
                          "--cert-allowed-cn", "dm")
        cli = start_route(procs, dmtls_bin, pki, "client", client_port,
                          "127.0.0.1:%d" % server_port, "--cert-allowed-cn", "dm")
        with socket.create_connection(("127.0.0.1", client_port), timeout=5) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(5)
            while c.recv(65536):
                pass
        res = sink.wait_results(1)
        assert res[0]["bytes"] == len(payload), (res, srv.log(), cli.log())
        assert res[0]["sha256"] == hashlib.sha256(payload).hexdigest()
        s_line = srv.wait_log(r"^.*event=close route=\S+ .*$").group(0)
        c_line = cli.wait_log(r"^.*event=close route=\S+ .*$").group(0)
        assert re.search(r"\balpn=h2\b", s_line), s_line
        assert re.search(r"\balpn=h2\b", c_line), c_line


class _PageHandler(http.server.BaseHTTPRequestHandler):
    body = b"<html><body>dmtls curl page</body></html>\n"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_curl_through_server_route(dmtls_bin, pki, procs, port):
    """curl with the dm client certificate gets the page of a plaintext HTTP
    backend through a server route."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    try:
        d = start_route(procs, dmtls_bin, pki, "server", port,
                        "127.0.0.1:%d" % httpd.server_address[1],
                        "--cert-allowed-cn", "dm")
        # the backend speaks HTTP/1.1 only, so curl offers only http/1.1
        r = run(["curl", "-sS", "--http1.1", "--max-time", "10",
                 "--cert", pki.path("dm"), "--key", pki.key("dm"), "--cacert", pki.ca,
                 "https://localhost:%d/" % port], timeout=15)
        assert r.returncode == 0, "curl exit %d: %s\n%s" % (r.returncode, r.stderr, d.log())
        assert r.stdout == _PageHandler.body.decode()
        line = d.wait_log(r"^.*event=close route=\S+ .*$").group(0)
        assert "cn=dm" in line and re.search(r"\balpn=http/1\.1\b", line), line
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(3)


def _s_client(pki, port, leaf):
    return subprocess.Popen(
        ["openssl", "s_client", "-quiet", "-connect", "127.0.0.1:%d" % port,
         "-servername", "localhost", "-verify_return_error", "-CAfile", pki.ca,
         "-cert", pki.path(leaf), "-key", pki.key(leaf)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc, want, timeout):
    """Read proc.stdout until `want` appears, EOF, or `timeout`; return the
    bytes read."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    got = b""
    deadline = time.monotonic() + timeout
    while want not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        got += chunk
    return got


def _finish(proc):
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_openssl_s_client_identities(dmtls_bin, pki, procs, port):
    """openssl s_client presenting the dm leaf gets through (its line is
    echoed); presenting `other` it is refused: no echo, the backend is never
    dialled, and the log says event=denied cn=other."""
    line = b"hello from s_client\n"
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "--cert-allowed-cn", "dm")
        p = _s_client(pki, port, "dm")
        try:
            p.stdin.write(line)
            p.stdin.flush()
            got = _read_until(p, line, 10)
        finally:
            _finish(p)
        assert line in got, "dm: no echo; got %r\n%s" % (got, d.log())
        accepted = echo.accepted

        mark = d.mark()
        p = _s_client(pki, port, "other")
        try:
            try:
                p.stdin.write(line)
                p.stdin.flush()
            except BrokenPipeError:
                pass
            got = _read_until(p, line, 3)
            rc = p.wait(5)
        finally:
            _finish(p)
        assert line not in got, "other: data was echoed: %r" % got
        assert rc != 0, "s_client with `other` exited 0"
        m = d.wait_log(r"^.*event=denied\b.*$", since=mark)
        assert "cn=other" in m.group(0), m.group(0)
        assert echo.accepted == accepted, "backend dialled for a denied peer"
