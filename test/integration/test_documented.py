"""Behaviours README.md, dmtls(8) and dmtls.conf(5) promise that no other
test file covers (issue 15, "Documented behaviours with no test"):

- timeouts: --idle-timeout, --close-timeout, --connect-timeout;
- TLS 1.2 only with ECDHE key exchange and AEAD ciphers;
- stopping: /healthz 503 while draining, SIGINT as SIGTERM, a systemd:
  socket left open while dmtls drains;
- reload: log-level, log-format and shutdown-timeout take effect at once;
- identity rules: verify-client = false and its warning, the open-policy
  warning, cert-allowed-cn = [] clearing an inherited list, DNS, URI and OU
  rules on certificates made by openssl;
- `dmtls check` warnings: expiry within 30 days, no identity rules;
- addresses: unix:PATH (a stale socket replaced) and [V6]:PORT end to end;
- the SNI a client route sends; --log-format json;
- the command line: --flag=value, help, --version; the 1 MiB bound of a
  certificate file;
- README command 1, the Quick start demo (test/demo).

Readiness is the event=ready line; a connection's end is its final log
line, found by its peer address; nothing is proved by a sleep.
"""

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest

from backends import EchoServer, TLSServer, _Server, read_to_eof, wait_until
from conftest import (HERE, REPO, REPORT_RX, accept_queue, free_port, held_socket, run,
                      tcp_listening)
from routes import (TLSStream, close_tls, closed_within, conf_text, connect_refused, echo_once,
                    final_line, http_get, peer_of, replace_file, start_route, start_run,
                    tls_echo, write_conf)
from tlsclient import client_context, tls_connect, tls_refused


def log_json(proc, since=0):
    """The JSON log lines of proc from character offset since, parsed."""
    out = []
    for line in proc.log()[since:].splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_json(proc, event, since=0, timeout=10):
    """Wait for a JSON log line with "event": event; return it parsed."""
    return wait_until(lambda: next((r for r in log_json(proc, since)
                                    if r.get("event") == event), None),
                      timeout, "a JSON %s line; log:\n%s" % (event, proc.log()))


class QuietAfterEOF(_Server):
    """Reads to EOF, then neither sends nor closes until the server stops:
    the other direction of the connection goes quiet."""

    def handle(self, conn):
        read_to_eof(conn)
        self._record(eof=True)
        self._closed.wait(60)


# -- timeouts -------------------------------------------------------------------

def test_idle_timeout_closes_a_quiet_connection(dmtls_bin, pki, procs, port):
    """--idle-timeout 1s: a connection without traffic in either direction
    is closed at 1 s (reason "idle timeout", by dmtls's clock)."""
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "--idle-timeout", "1s", allowed="dm")
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            assert echo_once(s, b"then silence") == b"then silence"
            elapsed = closed_within(s, 30)
        finally:
            s.close()
        assert elapsed is not None, "idle connection still open after 30 s"
        assert elapsed >= 0.9, "closed after %.2f s" % elapsed
        rec = final_line(d, peer)
        assert (rec["event"], rec["reason"]) == ("close", "idle timeout"), rec["_line"]
        assert int(rec["dur_ms"]) >= 1000, rec["_line"]


def test_idle_timeout_is_reset_by_traffic(dmtls_bin, pki, procs, port):
    """--idle-timeout 3s: a connection that echoes every 0.2 s for 4.5 s
    stays open (traffic moves the deadline), then closes 3 s after the
    last byte."""
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "--idle-timeout", "3s", allowed="dm")
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            t0 = time.monotonic()
            while True:
                assert echo_once(s, b"tick") == b"tick", d.log()
                last = time.monotonic()
                if last - t0 >= 4.5:
                    break
                time.sleep(0.2)  # the traffic pattern, not a wait for an event
            closed = closed_within(s, 30)
            assert closed is not None, "still open 30 s after the last byte"
            quiet = time.monotonic() - last
        finally:
            s.close()
        rec = final_line(d, peer)
        assert rec["reason"] == "idle timeout", rec["_line"]
        assert int(rec["dur_ms"]) >= 4500 + 2900, rec["_line"]
        assert quiet >= 2.9, "closed %.2f s after the last byte" % quiet


def test_close_timeout_after_one_direction_ends(dmtls_bin, pki, procs, port):
    """--close-timeout 1s: the client sends close_notify (its direction
    ends, the backend gets EOF) while the backend stays quiet and open:
    dmtls closes the connection once the other direction has been quiet
    for 1 s (reason "close timeout")."""
    with QuietAfterEOF() as backend:
        d = start_route(procs, dmtls_bin, pki, "server", port, backend.addr,
                        "--close-timeout", "1s", allowed="dm")
        conn = TLSStream(port, pki, timeout=30)
        try:
            conn.sendall(b"last words")
            conn.close_write()
            backend.wait_results(1, timeout=10)  # the EOF got through
            try:
                assert conn.recv() == b""
            except ssl.SSLEOFError:
                pass  # a TCP close without close_notify is a close too
        finally:
            conn.close()
        rec = final_line(d, conn.peer)
        assert (rec["event"], rec["reason"]) == ("close", "close timeout"), rec["_line"]
        assert int(rec["dur_ms"]) >= 1000, rec["_line"]


def test_connect_timeout_when_the_target_never_answers(dmtls_bin, pki, procs, port):
    """--connect-timeout 1s toward a target whose listen backlog is full
    (the kernel drops the SYNs): the client is closed and the log says
    conn_failed "connect to ... timed out after 1000ms"."""
    lst = held_socket()
    tport = lst.getsockname()[1]
    lst.listen(0)
    fillers = []
    try:
        for _ in range(2):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", tport))
            fillers.append(f)
        wait_until(lambda: accept_queue(tport) >= 1, 10, "the target's backlog to fill")
        d = start_route(procs, dmtls_bin, pki, "server", port, "127.0.0.1:%d" % tport,
                        "--connect-timeout", "1s", allowed="dm")
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            s.sendall(b"anyone there?")
            assert closed_within(s, 30) is not None
        finally:
            s.close()
        rec = final_line(d, peer)
        assert rec["event"] == "conn_failed", rec["_line"]
        assert rec["reason"] == "connect to 127.0.0.1:%d timed out after 1000ms" % tport, \
            rec["_line"]
    finally:
        for f in fillers:
            f.close()
        lst.close()


# -- TLS 1.2: ECDHE and AEAD only ---------------------------------------------------

def negotiated(port, pki, ciphers):
    """The TLS 1.2 cipher a client offering only `ciphers` (OpenSSL names)
    gets after an echo, or the refusal (a string)."""
    ctx = client_context(pki, max_version="1.2")
    ctx.set_ciphers(ciphers)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        raw.close()
        return "refused: %s" % e
    try:
        assert echo_once(s, b"x") == b"x"
        return s.cipher()[0]
    finally:
        close_tls(s)


@pytest.mark.parametrize("algo", ["ec", "rsa"])
def test_tls12_only_ecdhe_with_aead(dmtls_bin, pki, rsa_pki, procs, port, algo):
    """TLS 1.2 clients get AES-GCM or ChaCha20-Poly1305 with ECDHE; one
    that offers only CBC suites, RSA key exchange or DHE is refused."""
    keys = pki if algo == "ec" else rsa_pki
    sig = "ECDSA" if algo == "ec" else "RSA"
    good = ["ECDHE-%s-AES128-GCM-SHA256" % sig, "ECDHE-%s-AES256-GCM-SHA384" % sig,
            "ECDHE-%s-CHACHA20-POLY1305" % sig]
    bad = ["ECDHE-%s-AES128-SHA" % sig, "ECDHE-%s-AES128-SHA256" % sig,
           "ECDHE-%s-AES256-SHA384" % sig]
    if algo == "rsa":
        bad += ["AES128-GCM-SHA256", "AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256"]
    with EchoServer() as echo:
        start_route(procs, dmtls_bin, keys, "server", port, echo.addr, allowed="dm")
        got = {c: negotiated(port, keys, c) for c in good + bad}
    assert {c: got[c] for c in good} == {c: c for c in good}, got
    refused = {c: got[c] for c in bad if not got[c].startswith("refused")}
    assert not refused, "TLS 1.2 suites without ECDHE or AEAD accepted: %r" % refused


# -- stopping -------------------------------------------------------------------------

def drain_setup(procs, dmtls_bin, pki, tmp_path, echo, status_port=None):
    """dmtls run with route x (shutdown-timeout 60s) and one open, idle
    connection; returns (proc, route port, that connection)."""
    port = free_port()
    conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
        pki, [("x", port, echo.addr, None)], status_port=status_port,
        shutdown_timeout="60s"))
    d = start_run(procs, dmtls_bin, conf)
    s = tls_connect(port, pki, timeout=30)
    assert echo_once(s, b"open") == b"open"
    return d, port, s


def test_healthz_503_while_draining(dmtls_bin, pki, procs, tmp_path):
    """After SIGTERM, while a connection is still open, /healthz answers
    503 "shutting down"; once it closes dmtls exits 0."""
    status_port = free_port()
    with EchoServer() as echo:
        d, _, s = drain_setup(procs, dmtls_bin, pki, tmp_path, echo, status_port)
        code, _, body = http_get(status_port, "/healthz")
        assert (code, body) == (200, "ok\n")
        since = d.mark()
        d.kill(signal.SIGTERM)
        d.wait_log(r"event=stopping", since=since)
        code, _, body = http_get(status_port, "/healthz")
        assert (code, body) == (503, "shutting down\n"), (code, body)
        assert echo_once(s, b"still served") == b"still served"
        close_tls(s)
        assert d.wait(30) == 0, d.log()


def test_sigint_stops_like_sigterm(dmtls_bin, pki, procs, tmp_path):
    """SIGINT: listeners closed (new connections refused), the open
    connection finishes, exit 0, as with SIGTERM."""
    with EchoServer() as echo:
        d, port, s = drain_setup(procs, dmtls_bin, pki, tmp_path, echo)
        since = d.mark()
        d.kill(signal.SIGINT)
        d.wait_log(r'event=stopping msg="SIGINT: listeners closed', since=since)
        assert connect_refused(port), "a new connection was accepted after SIGINT"
        assert echo_once(s, b"draining") == b"draining"
        close_tls(s)
        assert d.wait(30) == 0, d.log()
        d.wait_log(r'event=stopped msg="all connections finished"', since=since)


def test_systemd_socket_stays_open_while_draining(dmtls_bin, pki, procs, tmp_path):
    """A listen = "systemd:lst" socket (passed the systemd way) stays open
    and listening while dmtls drains after SIGTERM; new clients wait in
    its backlog, unserved; a route's own listener is closed."""
    sport, port = free_port(), free_port()
    with EchoServer() as echo:
        conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
            pki, [("passed", "systemd:lst", echo.addr, None), ("own", port, echo.addr, None)],
            shutdown_timeout="60s"))
        d = procs.start([sys.executable, os.path.join(HERE, "sockact.py"), str(sport),
                         str(1 << 20), dmtls_bin, "run", "-c", conf], name="dmtls-run")
        d.wait_log(r"event=ready")
        assert tls_echo(sport, pki, b"via systemd") == b"via systemd"
        held = tls_connect(port, pki, timeout=30)
        assert echo_once(held, b"open") == b"open"
        since = d.mark()
        d.kill(signal.SIGTERM)
        d.wait_log(r"event=stopping", since=since)
        assert not tcp_listening(port), "the route's own listener is still open"
        assert tcp_listening(sport), "the systemd socket was closed"
        late = socket.create_connection(("127.0.0.1", sport), timeout=10)
        try:
            wait_until(lambda: accept_queue(sport) == 1, 10, "a client in the backlog")
            close_tls(held)
            assert d.wait(30) == 0, d.log()
        finally:
            late.close()


# -- reload -------------------------------------------------------------------------

def test_reload_applies_log_settings_and_shutdown_timeout(dmtls_bin, pki, procs, tmp_path):
    """A reload that changes log-level to debug, log-format to json and
    shutdown-timeout from 60s to 1s: the lines after it are JSON, debug
    lines appear, and SIGTERM then cuts an open connection after 1 s (exit
    1), not 60 s."""
    port = free_port()
    with EchoServer() as echo:
        routes = [("x", port, echo.addr, None)]
        conf, _ = write_conf(tmp_path / "dmtls.conf",
                             conf_text(pki, routes, shutdown_timeout="60s"))
        d = start_run(procs, dmtls_bin, conf)
        new = conf_text(pki, routes, shutdown_timeout="1s", top=['log-format = "json";'])
        replace_file(conf, new.replace('log-level = "info";', 'log-level = "debug";'))
        since = d.mark()
        d.kill(signal.SIGHUP)
        wait_json(d, "reloaded", since)
        assert tls_echo(port, pki, b"after the reload") == b"after the reload"
        wait_until(lambda: any(r["level"] == "debug" for r in log_json(d, since)), 10,
                   "a debug line")
        lines = d.log()[since:].splitlines()
        after = lines[next(i for i, l in enumerate(lines) if '"reloaded"' in l):]
        for line in after:
            json.loads(line)  # every line from the reload on is JSON
        held = tls_connect(port, pki, timeout=60)
        try:
            assert echo_once(held, b"open") == b"open"
            d.expect_exit(1)
            t0 = time.monotonic()
            d.kill(signal.SIGTERM)
            assert d.wait(50) == 1, d.log()
            elapsed = time.monotonic() - t0
        finally:
            held.close()
        assert 0.9 <= elapsed < 40, "exited %.2f s after SIGTERM" % elapsed
        stopped = wait_json(d, "stopped", since)
        assert "cut" in stopped["msg"], stopped


# -- identity rules -----------------------------------------------------------------

def test_verify_client_false_warns_and_asks_no_certificate(dmtls_bin, pki, procs, tmp_path):
    """A server route with verify-client = false serves a client without a
    certificate, and logs event=no_client_auth (in capitals, naming the
    route) at start and again at every reload."""
    port = free_port()
    with EchoServer() as echo:
        conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
            pki, [("nocheck", port, echo.addr, None)],
            extra_route_lines={"nocheck": ["security = { verify-client = false; };"]}))
        d = start_run(procs, dmtls_bin, conf)
        warning = (r"level=warn event=no_client_auth msg=\"ROUTE nocheck DOES NOT ASK "
                   r"CLIENTS FOR A CERTIFICATE \(verify-client = false\)")
        d.wait_log(warning)
        assert tls_refused(port, pki, cert=None) is None, d.log()
        since = d.mark()
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reloaded", since=since, timeout=10)
        d.wait_log(warning, since=since)


def test_open_policy_warning_and_any_ca_certificate(dmtls_bin, pki, procs, port):
    """A server route without identity rules accepts any certificate from
    ssl-ca (CN other too) and logs event=open_policy at start; with
    --cert-allowed-cn it logs none (the warnings come before event=ready)."""
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr)
        d.wait_log(r'level=warn event=open_policy msg="route server accepts any certificate '
                   r'signed by %s; set cert-allowed-cn' % pki.ca)
        assert tls_refused(port, pki, cert="other") is None, d.log()
        assert tls_refused(port, pki, cert="untrusted") is not None
        closed = start_route(procs, dmtls_bin, pki, "server", free_port(), echo.addr,
                             allowed="dm", name="dmtls-closed")
        assert "open_policy" not in closed.log()


def test_empty_allowed_cn_list_clears_the_inherited_one(dmtls_bin, pki, procs, tmp_path):
    """Top level cert-allowed-cn = ["dm"]; a route with cert-allowed-cn = []
    accepts CN other (and warns open_policy for itself only), while a
    sibling that inherits the list refuses it."""
    ports = {"open": free_port(), "inherits": free_port()}
    with EchoServer() as echo:
        conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
            pki, [("open", ports["open"], echo.addr, []),
                  ("inherits", ports["inherits"], echo.addr, None)]))
        d = start_run(procs, dmtls_bin, conf)
        assert tls_refused(ports["open"], pki, cert="other") is None, d.log()
        assert tls_refused(ports["inherits"], pki, cert="other") is not None
        assert tls_refused(ports["inherits"], pki, cert="dm") is None
        warned = [l for l in d.log().splitlines() if "event=open_policy" in l]
        assert len(warned) == 1 and "route open accepts" in warned[0], warned


def test_dns_uri_and_ou_rules_on_openssl_certificates(dmtls_bin, pki, procs, tmp_path):
    """A leaf made by openssl with DNS:w1.dm, URI:spiffe://dm/worker-1 and
    OU=ops passes routes allowing that DNS name, that URI or that OU (CN
    rules that do not match beside them), and is denied, with its names in
    the reason, where none matches."""
    cert = pki.leaf("doc-names", "worker", sans=("DNS:w1.dm", "URI:spiffe://dm/worker-1",
                                                  "IP:127.0.0.1"), ou="ops")
    rules = {"dns": 'cert-allowed-dns = ["w1.dm"];',
             "uri": 'cert-allowed-uri = ["spiffe://dm/worker-1"];',
             "ou": 'cert-allowed-ou = ["ops"];',
             "none": 'cert-allowed-dns = ["w2.dm"]; cert-allowed-uri = '
                     '["spiffe://dm/worker-2"]; cert-allowed-ou = ["dev"];'}
    ports = {name: free_port() for name in rules}
    with EchoServer() as echo:
        conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
            pki, [(name, ports[name], echo.addr, None) for name in rules],
            cns=("nobody",), extra_route_lines={
                name: ["security = { %s };" % r] for name, r in rules.items()}))
        d = start_run(procs, dmtls_bin, conf)
        for name in ("dns", "uri", "ou"):
            assert tls_refused(ports[name], pki, cert=cert) is None, (name, d.log())
        why, peer = tls_refused(ports["none"], pki, cert=cert, with_peer=True)
        assert why is not None
        rec = final_line(d, peer)
        assert rec["event"] == "denied" and rec["cn"] == "worker", rec["_line"]
        assert "DNS:w1.dm" in rec["sans"] and "URI:spiffe://dm/worker-1" in rec["sans"], \
            rec["_line"]
        assert "OU ops" in rec["reason"], rec["_line"]


# -- dmtls check --------------------------------------------------------------------

def test_check_warns_about_expiry_and_missing_rules(dmtls_bin, pki):
    """`dmtls check server` warns when the certificate expires within 30
    days and when the route has no identity rule, and not otherwise;
    warnings do not change the exit status 0."""
    soon = pki.leaf("doc-soon", "dm", days=10)
    later = pki.leaf("doc-later", "dm", days=90)

    def check(cert, *extra):
        r = run([dmtls_bin, "check", "server", "--listen", "127.0.0.1:%d" % free_port(),
                 "--target", "127.0.0.1:%d" % free_port(), "--ssl-ca", pki.ca,
                 "--ssl-cert", cert[0], "--ssl-key", cert[1], *extra])
        assert r.returncode == 0, r.stdout + r.stderr
        return [l for l in r.stdout.splitlines() if l.startswith("warning:")]

    expiry = "warning: server: ssl-cert %s expires within 30 days" % soon[0]
    open_ = ("warning: server: accepts any certificate signed by %s; set cert-allowed-cn "
             "to limit it" % pki.ca)
    assert check(soon, "--cert-allowed-cn", "dm") == [expiry]
    assert check(later, "--cert-allowed-cn", "dm") == []
    assert check(later) == [open_]


# -- addresses ----------------------------------------------------------------------

def test_unix_listener_replaces_a_stale_socket(dmtls_bin, pki, procs, tmp_path, port):
    """--listen unix:PATH over a stale socket file (bound, then closed)
    replaces it and serves TLS there; a client route reaches it through
    --target unix:PATH; the file is left behind at exit; a regular file at
    PATH is an error, and is left alone."""
    path = os.path.join(str(tmp_path), "srv.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with EchoServer() as echo:
        srv = start_route(procs, dmtls_bin, pki, "server", "unix:" + path, echo.addr,
                          allowed="dm", name="dmtls-unix")
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(10)
            raw.connect(path)
            with client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
                assert echo_once(s, b"over unix") == b"over unix"
        start_route(procs, dmtls_bin, pki, "client", port, "unix:" + path, allowed="dm",
                    name="dmtls-to-unix")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert echo_once(c, b"plain -> tls over unix") == b"plain -> tls over unix"
        assert srv.stop() == 0
    assert stat.S_ISSOCK(os.lstat(path).st_mode), "the socket file was removed"

    regular = os.path.join(str(tmp_path), "regular")
    with open(regular, "w") as f:
        f.write("not a socket\n")
    r = run([dmtls_bin, "server", "--listen", "unix:" + regular, "--target", "127.0.0.1:1",
             "--ssl-ca", pki.ca, "--ssl-cert", pki.path("dm"), "--ssl-key", pki.key("dm"),
             "--cert-allowed-cn", "dm"])
    assert r.returncode == 2 and regular in r.stderr, r.stderr
    with open(regular) as f:
        assert f.read() == "not a socket\n"


def test_unix_listener_does_not_steal_a_live_socket(dmtls_bin, pki, tmp_path):
    """A unix socket another process listens on is not stale: dmtls must
    refuse to start there (exit 2) and the other listener keeps its path."""
    path = os.path.join(str(tmp_path), "live.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(4)
    try:
        try:
            r = run([dmtls_bin, "server", "--listen", "unix:" + path, "--target",
                     "127.0.0.1:1", "--ssl-ca", pki.ca, "--ssl-cert", pki.path("dm"),
                     "--ssl-key", pki.key("dm"), "--cert-allowed-cn", "dm"], timeout=5)
            rc = r.returncode
        except subprocess.TimeoutExpired:
            rc = None  # it started serving on the stolen path
        reached_live = leads_to(path, live)
        assert rc == 2 and reached_live, "exit %s; the path now leads %s" % (
            rc, "to the first listener" if reached_live else "elsewhere")
    finally:
        live.close()


def leads_to(path, lst):
    """True when a connection to the unix socket path reaches listener lst."""
    with socket.socket(socket.AF_UNIX) as c:
        try:
            c.connect(path)
        except OSError:
            return False
        lst.settimeout(5)
        try:
            lst.accept()[0].close()
        except socket.timeout:
            return False
    return True


def test_ipv6_listen_and_target(dmtls_bin, pki, procs):
    """--listen [::1]:PORT and --target [::1]:PORT: TLS over IPv6 in, the
    plaintext backend over IPv6 out; the log shows the peer as [::1]:PORT."""
    try:
        back = held_socket(socket.AF_INET6)
    except OSError as e:
        pytest.skip("no IPv6 loopback here: %s" % e)
    port = free_port()
    with EchoServer(sock=back) as echo:
        assert echo.addr.startswith("[::1]:")
        d = start_route(procs, dmtls_bin, pki, "server", "[::1]:%d" % port, echo.addr,
                        allowed="dm", name="dmtls-v6")
        raw = socket.create_connection(("::1", port), timeout=10)
        peer = "[::1]:%d" % raw.getsockname()[1]
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
            assert echo_once(s, b"over v6") == b"over v6"
            close_tls(s)
        assert final_line(d, peer)["event"] == "close"
        assert echo.accepted == 1


# -- what a client route sends --------------------------------------------------------

@pytest.mark.parametrize("target_host,server_name,sni", [
    ("localhost", None, "localhost"),      # the target's host name
    ("127.0.0.1", None, None),             # an IP: no SNI
    ("127.0.0.1", "localhost", "localhost"),  # --server-name wins
])
def test_client_route_sni(dmtls_bin, pki, procs, port, target_host, server_name, sni):
    """A client route sends --server-name as SNI, else the target's host
    name when it is not an IP address."""
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca) as srv:
        extra = ["--server-name", server_name] if server_name else []
        start_route(procs, dmtls_bin, pki, "client", port,
                    "%s:%d" % (target_host, srv.port), *extra, allowed="dm")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert echo_once(c, b"sni?") == b"sni?"
        wait_until(lambda: srv.snis, 10, "the server's handshake")
        assert srv.snis == [sni]


def test_log_format_json(dmtls_bin, pki, procs, port):
    """--log-format json: every stderr line is one JSON object with ts,
    level and event; a connection's close line carries its fields, with
    the byte counts as numbers."""
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "--log-format", "json", allowed="dm")
        s = tls_connect(port, pki)
        peer = peer_of(s)
        try:
            assert echo_once(s, b"12345") == b"12345"
        finally:
            close_tls(s)
        rec = wait_until(lambda: next((r for r in log_json(d) if r.get("peer") == peer
                                       and r.get("event") == "close"), None), 10, "close")
        lines = d.log().splitlines()
        assert lines and all(l.startswith("{") for l in lines), lines
        for r in map(json.loads, lines):
            assert {"ts", "level", "event"} <= set(r), r
        assert (rec["route"], rec["cn"], rec["bytes_in"], rec["bytes_out"]) == (
            "server", "dm", 5, 5), rec


def test_metrics_label_values_escaped(dmtls_bin, pki, procs, tmp_path):
    """A route named q"b\\c (a config file allows it) still gives a
    /metrics page whose every sample line is valid, with the name escaped
    as route="q\\"b\\\\c"."""
    from test_status import parse_metrics
    port, status_port = free_port(), free_port()
    with EchoServer() as echo:
        conf, _ = write_conf(tmp_path / "dmtls.conf", conf_text(
            pki, [('q\\"b\\\\c', port, echo.addr, None)], status_port=status_port))
        start_run(procs, dmtls_bin, conf)
        code, _, text = http_get(status_port, "/metrics")
        assert code == 200
        try:
            m = parse_metrics(text)
        except AssertionError as e:
            raise AssertionError("/metrics is not valid: %s" % e) from None
        assert any(dict(labels).get("route") == 'q\\"b\\\\c' for _, labels in m), text


# -- the command line -----------------------------------------------------------------

def test_flag_equals_value(dmtls_bin, pki, procs, port):
    """--flag=VALUE and -flag=VALUE work like a separate argument."""
    with EchoServer() as echo:
        d = procs.start([dmtls_bin, "server", "--listen=127.0.0.1:%d" % port,
                         "-target=" + echo.addr, "--ssl-ca=" + pki.ca,
                         "-ssl-cert=" + pki.path("dm"), "--ssl-key=" + pki.key("dm"),
                         "--cert-allowed-cn=dm", "-handshake-timeout=5s", "--name=eq"],
                        name="dmtls-eq")
        d.wait_log(r"event=ready")
        assert tls_refused(port, pki) is None, d.log()
        assert tls_refused(port, pki, cert="other") is not None
        d.wait_log(r"event=denied route=eq .*cn=other")


def test_help_and_version(dmtls_bin):
    """`dmtls help` (--help, -h) prints the synopsis and exits 0; `dmtls
    server --help` lists its flags, `dmtls mysql --help` without --alpn;
    `dmtls --version` is `dmtls version`; an unknown command exits 2."""
    outs = [run([dmtls_bin, h]) for h in ("help", "--help", "-h")]
    for r in outs:
        assert r.returncode == 0 and r.stdout.startswith("usage: dmtls server "), r
    assert len({r.stdout for r in outs}) == 1
    srv = run([dmtls_bin, "server", "--help"])
    assert srv.returncode == 0 and "--listen ADDR" in srv.stdout and "--alpn" in srv.stdout
    my = run([dmtls_bin, "mysql", "--help"])
    assert my.returncode == 0 and "--listen ADDR" in my.stdout and "--alpn" not in my.stdout
    v, dashed = run([dmtls_bin, "version"]), run([dmtls_bin, "--version"])
    assert v.returncode == dashed.returncode == 0 and v.stdout == dashed.stdout
    assert v.stdout.startswith("dmtls "), v.stdout
    bad = run([dmtls_bin, "frobnicate"])
    assert bad.returncode == 2 and "unknown command frobnicate" in bad.stderr, bad.stderr


def _ca_of_size(pki, path, size):
    """A CA file of exactly `size` bytes: the CA certificate repeated, then
    newlines."""
    block = open(pki.ca, "rb").read()
    data = block * (size // len(block))
    data += b"\n" * (size - len(data))
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_certificate_file_of_at_most_1_mib(dmtls_bin, pki, procs, tmp_path, port):
    """A CA file of exactly 1 MiB is read; one byte more is refused at
    start, naming the file and the bound, and at a rotation the last good
    set keeps serving (cert_reload_failed)."""
    mib = 1 << 20
    fits = _ca_of_size(pki, os.path.join(str(tmp_path), "fits.pem"), mib)
    over = _ca_of_size(pki, os.path.join(str(tmp_path), "over.pem"), mib + 1)
    r = run([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % free_port(), "--target",
             "127.0.0.1:1", "--ssl-ca", over, "--ssl-cert", pki.path("dm"),
             "--ssl-key", pki.key("dm"), "--cert-allowed-cn", "dm"])
    assert r.returncode == 2, r.stderr
    assert "--ssl-ca %s is larger than %d bytes" % (over, mib) in r.stderr, r.stderr
    with EchoServer() as echo:
        ca = os.path.join(str(tmp_path), "ca.pem")
        replace_file(ca, open(fits, "rb").read())
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr, ca=ca,
                        allowed="dm")
        assert tls_refused(port, pki) is None, d.log()
        since = d.mark()
        replace_file(ca, open(over, "rb").read())
        assert tls_refused(port, pki) is None, d.log()
        d.wait_log(r"event=cert_reload_failed .*is larger than %d bytes" % mib, since=since)


# -- README command 1 ----------------------------------------------------------------

def test_readme_quick_start_demo(dmtls_bin):
    """`make demo` (test/demo/routes) runs: the page comes through the two routes,
    the peer with CN other is refused, and the logs it shows hold no
    sanitizer report."""
    r = run([os.path.join(REPO, "test", "demo", "routes")], timeout=120, env={"DMTLS_BIN": dmtls_bin})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "hello from the plaintext backend, through mutual TLS" in r.stdout, out
    assert "refused, as it should be" in r.stdout, out
    assert not REPORT_RX.search(out), out
