"""Helpers the integration tests share: starting a route or a config,
writing and atomically replacing files, reloading, echoing, and finding a
connection's final log line.

Readiness is always taken from the `event=ready` log line (after the port
shows in LISTEN state in /proc/net/tcp), never from a probe connection, so
that every connection a route logs is one the test made.
"""

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

from conftest import free_port, run, wait_listening
from tlsclient import client_context, tls_connect

# The events that end a connection: each connection logs exactly one.
FINAL_EVENTS = ("close", "denied", "handshake_failed", "conn_failed")
RELOAD_TIMEOUT = 10  # seconds a reload may take to log its outcome
REFUSE_TIMEOUT = 10  # seconds a refused start may take before we call it hung
READY = r'event=ready\b|"event":"ready"'  # the ready line, logfmt or JSON
_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


# -- starting dmtls ------------------------------------------------------------

def route_argv(dmtls_bin, pki, kind, listen, target, *extra, cert="dm", ca=None,
               allowed=None):
    """argv of `dmtls KIND` from `listen` (a port number or an address) to
    `target`, trusting `ca` (default: the PKI's CA) and presenting `cert`
    (a PKI leaf name, a (cert, key) pair of paths, or None for none);
    `allowed`: a --cert-allowed-cn value or None."""
    if isinstance(listen, int):
        listen = "127.0.0.1:%d" % listen
    argv = [dmtls_bin, kind, "--listen", listen, "--target", target,
            "--ssl-ca", ca or pki.ca]
    if cert is not None:
        c, k = cert if isinstance(cert, (tuple, list)) else (pki.path(cert), pki.key(cert))
        argv += ["--ssl-cert", c, "--ssl-key", k]
    if allowed is not None:
        argv += ["--cert-allowed-cn", allowed]
    return argv + [os.fspath(e) for e in extra]


def start_route(procs, dmtls_bin, pki, kind, port, target, *extra, cert="dm", ca=None,
                allowed=None, name=None, env=None, **judged):
    """Start `dmtls KIND` on 127.0.0.1:port, or on the listen address port
    when it is a string (see route_argv), and wait until it listens and has
    logged event=ready.  `judged` (expect_status, expect_errors) go to
    procs.start.  Returns the Proc."""
    p = procs.start(route_argv(dmtls_bin, pki, kind, port, target, *extra, cert=cert,
                               ca=ca, allowed=allowed),
                    name=name or "dmtls-" + kind, env=env, **judged)
    if isinstance(port, int):
        wait_listening(port, p)
    p.wait_log(READY, timeout=10)
    return p


def start_server(procs, dmtls_bin, pki, port, target, *extra, allowed="dm"):
    """A server route with the dm leaf, allowing CN `allowed`."""
    return start_route(procs, dmtls_bin, pki, "server", port, target, *extra,
                       allowed=allowed, name="dmtls")


def start_run(procs, dmtls_bin, conf, name="dmtls-run", env=None, **judged):
    """Start `dmtls run -c conf` and wait for its event=ready line."""
    p = procs.start([dmtls_bin, "run", "-c", conf], name=name, env=env, **judged)
    p.wait_log(READY, timeout=10)
    return p


def reload(d, expect="reloaded"):
    """SIGHUP; wait for this reload's event=reloaded (or reload_failed);
    return the matching log line."""
    since = d.mark()
    d.kill(signal.SIGHUP)
    m = d.wait_log(r"^.*\bevent=(reloaded|reload_failed)\b.*$", timeout=RELOAD_TIMEOUT,
                   since=since)
    assert "event=%s" % expect in m.group(0), "expected event=%s, got:\n%s\nlog:\n%s" % (
        expect, m.group(0), d.log()[since:])
    return m.group(0)


# -- config files ----------------------------------------------------------------

def security_lines(pki, cns=("dm",), extra=(), cert="dm"):
    """The top-level security group, one setting per line (cns None: no
    cert-allowed-cn line)."""
    lines = ["security = {",
             '  ssl-ca = "%s";' % pki.ca,
             '  ssl-cert = "%s";' % pki.path(cert),
             '  ssl-key = "%s";' % pki.key(cert)]
    if cns is not None:
        lines.append("  cert-allowed-cn = [%s];" % ", ".join('"%s"' % c for c in cns))
    lines += ["  " + e for e in extra]
    lines.append("};")
    return lines


def route_lines(name, listen, target, extra=(), kind="server"):
    """One route group, one setting per line (no trailing comma); listen
    may be a port number."""
    if isinstance(listen, int):
        listen = "127.0.0.1:%d" % listen
    return (['  { name = "%s";' % name,
             '    kind = "%s";' % kind,
             '    listen = "%s";' % listen,
             '    target = "%s";' % target]
            + ["    " + e for e in extra] + ["  }"])


def routes_block(*routes):
    """routes = ( ... ); from lists of lines made by route_lines()."""
    out = ["routes = ("]
    for i, r in enumerate(routes):
        r = list(r)
        if i + 1 < len(routes):
            r[-1] += ","
        out += r
    out.append(");")
    return out


def conf_text(pki, routes, status_port=None, shutdown_timeout=None, extra_route_lines=None,
              top=(), cns=("dm",), cert="dm"):
    """A whole config: log-level info, `top` lines, the top-level security
    (leaf `cert`, CN list `cns`) and routes given as (name, port or listen
    address, target, route cns or None); extra_route_lines: {name: lines}."""
    lines = ['log-level = "info";']
    if status_port:
        lines.append('status = "127.0.0.1:%d";' % status_port)
    if shutdown_timeout:
        lines.append('shutdown-timeout = "%s";' % shutdown_timeout)
    lines += list(top) + security_lines(pki, cns=cns, cert=cert)
    blocks = []
    for name, listen, target, rcns in routes:
        extra = []
        if rcns is not None:
            extra.append("security = { cert-allowed-cn = [%s]; };"
                         % ", ".join('"%s"' % c for c in rcns))
        extra += list((extra_route_lines or {}).get(name, ()))
        blocks.append(route_lines(name, listen, target, extra))
    return "\n".join(lines + routes_block(*blocks)) + "\n"


def write_conf(path, text):
    """Write text (a string, or a list of lines) to path; return (path, text)."""
    if not isinstance(text, str):
        text = "\n".join(text) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return os.fspath(path), text


def replace_file(path, data):
    """Atomically replace path with data (str or bytes): a temporary file
    beside it, then os.replace(), as deployment tools do."""
    path = os.fspath(path)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def line_of(text, needle, nth=1):
    """1-based number of the nth line of text containing needle."""
    seen = 0
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError("%r not in:\n%s" % (needle, text))


def loopback():
    """A "127.0.0.1:PORT" address of a free port (see conftest.free_port)."""
    return "127.0.0.1:%d" % free_port()


# -- refused starts ------------------------------------------------------------

def expect_usage_error(dmtls_bin, args, *words):
    """`dmtls ARGS` must exit 2 (within REFUSE_TIMEOUT seconds) with a
    one-line message holding every word; returns the line."""
    try:
        r = run([dmtls_bin, *args], timeout=REFUSE_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("dmtls kept running (%s): it accepted %r" % (e, args)) from None
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, "exit %s; stderr:\n%s" % (r.returncode, r.stderr)
    assert len(lines) == 1, "expected a one-line message, got:\n%s" % r.stderr
    for w in words:
        assert w in lines[0], "%r not in %r" % (w, lines[0])
    return lines[0]


def expect_config_error(dmtls_bin, conf, text, needle, *words):
    """`dmtls run -c conf` must exit 2 with one line naming conf:LINE of
    the line of `text` holding needle, and every word; returns the line."""
    line = expect_usage_error(dmtls_bin, ["run", "-c", conf], *words)
    where = "%s:%d:" % (conf, line_of(text, needle))
    assert where in line, "%r not in %r" % (where, line)
    return line


# -- talking through a route --------------------------------------------------------

def echo_once(sock, payload):
    """Send payload and read back len(payload) bytes (bounded by the socket
    timeout); return what came back, short if the peer closed first."""
    sock.sendall(payload)
    got = bytearray()
    while len(got) < len(payload):
        data = sock.recv(65536)
        if not data:
            break
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


def tls_echo(port, pki, payload=b"hello", **kw):
    """One TLS connection to 127.0.0.1:port (tls_connect(**kw)): echo
    payload once and close with close_notify; return what came back."""
    s = tls_connect(port, pki, **kw)
    try:
        return echo_once(s, payload)
    finally:
        close_tls(s)


def http_get(port, path, method="GET", timeout=10):
    """(status code, headers dict, body text) of one plain HTTP request to
    127.0.0.1:port (a status listener)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode(errors="replace")
    finally:
        c.close()


def closed_within(sock, limit):
    """Read until the peer closes sock (EOF, a reset or a TLS error);
    return the seconds it took, or None when it is still open after
    `limit` seconds."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if not sock.recv(4096):
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except (ssl.SSLError, OSError):
            return time.monotonic() - t0
    return None


def connect_refused(port):
    """True when a TCP connect to 127.0.0.1:port is refused (nothing
    listens there)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def peer_of(sock):
    """The "IP:PORT" dmtls logs as peer= for a client socket."""
    host, port = sock.getsockname()[:2]
    return "%s:%d" % (host, port)


# -- log lines ---------------------------------------------------------------------

def parse_logfmt(line):
    """One logfmt line -> dict (quoted values unquoted)."""
    out = {}
    for key, value in _LOGFMT.findall(line):
        if value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        out[key] = value
    return out


def final_lines(proc, since=0):
    """The log lines that end a connection, from character offset since."""
    return [l for l in proc.log()[since:].splitlines()
            if re.search(r"\bevent=(%s)\b" % "|".join(FINAL_EVENTS), l)]


def final_line(proc, peer, timeout=10):
    """Wait for the one final log line (see FINAL_EVENTS) of the connection
    from `peer`; return it parsed, with the raw text under "_line".  Fails
    if there is more than one."""
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


# -- a TLS client that can half-close ---------------------------------------------

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
