"""Reload and shutdown of `dmtls run -c FILE` (DESIGN.md section 7).

Covered: SIGHUP reloads under load (20 threads of short connections on an
unchanged route and 5 long byte-exact transfers, while 10 reloads add a
route, remove one and change a CN list): no connection of the unchanged
route fails, the removed route refuses connections, the added one serves,
the new CN list applies; a broken config on reload keeps the old one
serving, logs event=reload_failed with FILE:LINE and shows up in /status
until a good reload; SIGTERM stops accepting, lets transfers finish and
exits 0, or cuts them at shutdown-timeout and exits 1.

Every reload waits (bounded) for its event=reloaded / event=reload_failed
line before the next one.  Readiness comes from event=ready, never from a
probe connection.
"""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import threading
import time

import pytest

from backends import DuplexServer, EchoServer, pattern_sha256, wait_until
from conftest import free_port
from routes import conf_text, connect_refused, http_get, line_of, reload, replace_file, start_run
from tlsclient import client_context, tls_refused

MIB = 1 << 20


# -- helpers -----------------------------------------------------------------

def status_json(status_port):
    code, _, body = http_get(status_port, "/status")
    assert code == 200, body
    return json.loads(body)


class Download(threading.Thread):
    """Read one DuplexServer stream of `nbytes` through dmtls, at most
    `rate` bytes/s while `slow` is set (unthrottled once it is cleared),
    hashing it; then close with close_notify.  .sha256, .bytes, .error
    afterwards.  While `slow` is set it never reads the last 1 MiB, so a
    transfer cannot end before the test clears `slow`, however slowly the
    test gets there.  The socket's receive buffer is kept small (64 KiB)
    so that throttling the reader quickly throttles dmtls, and little data
    sits in buffers."""

    def __init__(self, port, pki, slow, rate, nbytes):
        super().__init__(daemon=True)
        self.port, self.pki, self.slow, self.rate = port, pki, slow, rate
        self.hold_at = nbytes - MIB
        self.sha256, self.bytes, self.error = None, 0, None
        self.started_reading = threading.Event()

    def run(self):
        h = hashlib.sha256()
        try:
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            raw.settimeout(30)
            try:
                raw.connect(("127.0.0.1", self.port))
                s = client_context(self.pki).wrap_socket(raw, server_hostname="localhost")
            except BaseException:
                raw.close()
                raise
            try:
                t0 = time.monotonic()
                while True:
                    if self.slow.is_set() and self.bytes >= self.hold_at:
                        time.sleep(0.01)  # held until the test clears slow
                        continue
                    if self.slow.is_set():
                        ahead = self.bytes - self.rate * (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(min(0.05, ahead / self.rate))
                            continue
                    else:
                        t0 = time.monotonic() - self.bytes / self.rate
                    data = s.recv(16384)
                    if not data:
                        break
                    h.update(data)
                    self.bytes += len(data)
                    self.started_reading.set()
                try:
                    s.unwrap()
                except (ssl.SSLError, OSError, ValueError):
                    pass
            finally:
                s.close()
        except Exception as e:
            self.error = "%s after %d bytes: %s" % (type(e).__name__, self.bytes, e)
        self.sha256 = h.hexdigest()
        self.started_reading.set()


# -- 3. reload under load ------------------------------------------------------

def test_reload_under_load(dmtls_bin, pki, procs, tmp_path):
    """10 SIGHUP reloads (add a route, remove one, change a CN list, then
    add/remove a spare route) while 20 threads loop short TLS echoes on an
    unchanged route and 5 8 MiB transfers run on another unchanged route:
    no short connection fails, every transfer is byte-exact, the removed
    route refuses connections, the added route serves, and the new CN list
    applies to new connections."""
    nbytes = 8 * MIB
    ports = {n: free_port() for n in ("steady", "bulk", "gone", "cnroute", "added", "spare")}
    conf = os.path.join(str(tmp_path), "dmtls.conf")
    with EchoServer() as echo, DuplexServer(nbytes, "reload-bulk") as duplex:
        def cfg(added=False, gone=True, cn=("dm",), spare=False):
            routes = [("steady", ports["steady"], echo.addr, None),
                      ("bulk", ports["bulk"], duplex.addr, None)]
            if gone:
                routes.append(("gone", ports["gone"], echo.addr, None))
            routes.append(("cnroute", ports["cnroute"], echo.addr, cn))
            if added:
                routes.append(("added", ports["added"], echo.addr, None))
            if spare:
                routes.append(("spare", ports["spare"], echo.addr, None))
            return conf_text(pki, routes)

        replace_file(conf, cfg())
        d = start_run(procs, dmtls_bin, conf)
        assert tls_refused(ports["gone"], pki) is None, d.log()
        assert tls_refused(ports["cnroute"], pki, cert="other") is not None

        stop, failures, counts = threading.Event(), [], [0] * 20
        ctx = client_context(pki)

        def client(i):
            while not stop.is_set():
                try:
                    raw = socket.create_connection(("127.0.0.1", ports["steady"]), timeout=5)
                    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                        msg = b"client %d conn %d" % (i, counts[i])
                        s.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            data = s.recv(256)
                            if not data:
                                break
                            got += data
                        if got != msg:
                            raise AssertionError("echo %r != %r" % (got, msg))
                    counts[i] += 1
                except Exception as e:
                    failures.append("client %d conn %d: %s: %s" % (
                        i, counts[i], type(e).__name__, e))
                time.sleep(0.005)

        slow = threading.Event()
        slow.set()
        downloads = [Download(ports["bulk"], pki, slow, rate=MIB, nbytes=nbytes) for _ in range(5)]
        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(20)]
        try:
            for t in downloads + clients:
                t.start()
            for t in downloads:
                assert t.started_reading.wait(10), "transfer did not start; log:\n" + d.log()
            wait_until(lambda: all(counts), 10, "every client thread to finish a connection")

            steps = [dict(added=True),                                   # add
                     dict(added=True, gone=False),                       # remove
                     dict(added=True, gone=False, cn=("other",))]        # CN list
            for k in range(6):                                           # churn
                steps.append(dict(added=True, gone=False, cn=("other",), spare=k % 2 == 0))
            steps.append(dict(added=True, gone=False, cn=("other",)))    # final
            assert len(steps) == 10
            before = sum(counts)
            for n, step in enumerate(steps, 1):
                replace_file(conf, cfg(**step))
                done = sum(counts)
                reload(d)
                # the short connections run on each generation
                wait_until(lambda: sum(counts) >= done + 5, 10,
                           "short connections on generation %d" % n)
                if n == 1:
                    why = tls_refused(ports["added"], pki)
                    assert why is None, "added route not serving: %s\nlog:\n%s" % (why, d.log())
                elif n == 2:
                    wait_until(lambda: connect_refused(ports["gone"]), 2,
                               "removed route to refuse connections")
                elif n == 3:
                    why = tls_refused(ports["cnroute"], pki, cert="other")
                    assert why is None, "new CN other refused: %s\nlog:\n%s" % (why, d.log())
                    assert tls_refused(ports["cnroute"], pki, cert="dm") is not None, \
                        "CN dm still served after the CN list changed\nlog:\n" + d.log()
            still_slow = [t for t in downloads if t.is_alive()]
            during = sum(counts) - before
        finally:
            stop.set()
            slow.clear()
            for t in clients:
                t.join(10)
            for t in downloads:
                t.join(30)

        assert not failures, "%d failed short connections on the unchanged route, " \
            "first ones:\n%s\nlog tail:\n%s" % (len(failures), "\n".join(failures[:10]),
                                                d.log()[-3000:])
        assert during >= 50, "only %d short connections during the reloads" % during
        # held (see Download): one that ended before the reloads did failed
        assert len(still_slow) == 5, "transfers ended during the reloads: %r" % (
            [(t.bytes, t.error) for t in downloads],)
        want = pattern_sha256(nbytes, "reload-bulk")
        for t in downloads:
            assert not t.is_alive(), "transfer still running"
            assert t.error is None, t.error
            assert (t.bytes, t.sha256) == (nbytes, want), "transfer: %d bytes" % t.bytes
        # the final generation still holds
        assert connect_refused(ports["gone"])
        assert connect_refused(ports["spare"])
        assert tls_refused(ports["added"], pki) is None
        assert tls_refused(ports["cnroute"], pki, cert="other") is None
        assert tls_refused(ports["steady"], pki) is None


# -- 4. broken config on reload --------------------------------------------------

BROKEN = {
    # kind: (text of the extra lines in route x, needle for the expected line)
    "unknown_key": (['bogus-key = 1;'], "bogus-key"),
    "key_mismatch": (None, 'name = "x"'),
}


def _broken_reload(dmtls_bin, pki, procs, tmp_path, kind, echo):
    """Start with a good config (route x, status listener), rewrite it
    broken (plus a new route y), SIGHUP.  Returns (proc, ports, status
    port, reload_failed line, expected FILE:LINE, good config text)."""
    port, port_y, status_port = free_port(), free_port(), free_port()
    conf = os.path.join(str(tmp_path), "dmtls.conf")
    good = conf_text(pki, [("x", port, echo.addr, None)], status_port=status_port)
    replace_file(conf, good)
    d = start_run(procs, dmtls_bin, conf)
    extra, needle = BROKEN[kind]
    routes = [("x", port, echo.addr, None), ("y", port_y, echo.addr, None)]
    if extra is not None:
        bad = conf_text(pki, routes, status_port=status_port, extra_route_lines={"x": extra})
    else:
        bad = conf_text(pki, routes, status_port=status_port, extra_route_lines={
            "x": ['security = { ssl-key = "%s"; };' % pki.key("other")]})
    replace_file(conf, bad)
    line = reload(d, expect="reload_failed")
    where = "%s:%d" % (os.path.realpath(conf), line_of(bad, needle))
    d.expect_error(r'event=reload_failed msg="%s: ' % re.escape(where))
    return d, (port, port_y), status_port, line, where, good, conf


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_reload_keeps_old_config_serving(dmtls_bin, pki, procs, tmp_path, kind):
    """After a reload with a broken file (an unknown key, or a key that does
    not match its certificate), route x still serves and route y of the
    broken file was not started."""
    with EchoServer() as echo:
        d, (port, port_y), _, _, _, _, _ = _broken_reload(dmtls_bin, pki, procs, tmp_path,
                                                          kind, echo)
        why = tls_refused(port, pki)
        assert why is None, "old route x not serving: %s\nlog:\n%s" % (why, d.log())
        assert connect_refused(port_y), "route y of the broken file is listening"
        assert d.proc.poll() is None


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_reload_logged_with_file_line(dmtls_bin, pki, procs, tmp_path, kind):
    """The failed reload logs event=reload_failed naming FILE:LINE of the
    error (the route's line for a certificate error)."""
    with EchoServer() as echo:
        _, _, _, line, where, _, _ = _broken_reload(dmtls_bin, pki, procs, tmp_path,
                                                    kind, echo)
        assert where in line, "%r not in %r" % (where, line)


def test_broken_reload_in_status_until_good_reload(dmtls_bin, pki, procs, tmp_path):
    """/status shows "reload": {"ok": false, "error": FILE:LINE ...} after a
    failed reload, and ok true with no error after the next good one."""
    with EchoServer() as echo:
        d, _, status_port, _, where, good, conf = _broken_reload(
            dmtls_bin, pki, procs, tmp_path, "unknown_key", echo)
        st = status_json(status_port)
        assert st["reload"]["ok"] is False, st["reload"]
        assert where in st["reload"]["error"], st["reload"]
        replace_file(conf, good)
        reload(d)
        st = status_json(status_port)
        assert st["reload"]["ok"] is True, st["reload"]
        assert not st["reload"].get("error"), st["reload"]


# -- 5. SIGTERM ------------------------------------------------------------------

def _sigterm_setup(dmtls_bin, pki, procs, tmp_path, duplex, shutdown_timeout, rate):
    port = free_port()
    conf = os.path.join(str(tmp_path), "dmtls.conf")
    replace_file(conf, conf_text(pki, [("bulk", port, duplex.addr, None)],
                                 shutdown_timeout=shutdown_timeout))
    d = start_run(procs, dmtls_bin, conf)
    slow = threading.Event()
    slow.set()
    downloads = [Download(port, pki, slow, rate=rate, nbytes=duplex.nbytes)
                 for _ in range(5)]
    for t in downloads:
        t.start()
    for t in downloads:
        assert t.started_reading.wait(10), "transfer did not start; log:\n" + d.log()
    wait_until(lambda: all(t.bytes >= 256 * 1024 for t in downloads), 10,
               "every transfer to be under way")
    return d, port, slow, downloads


def test_sigterm_drains_transfers_and_exits_0(dmtls_bin, pki, procs, tmp_path):
    """SIGTERM during 5 8 MiB transfers (shutdown-timeout 20s): new
    connections are refused at once, the transfers finish byte-exact, and
    dmtls exits 0."""
    nbytes = 8 * MIB
    with DuplexServer(nbytes, "sigterm-drain") as duplex:
        d, port, slow, downloads = _sigterm_setup(dmtls_bin, pki, procs, tmp_path,
                                                  duplex, "20s", rate=2 * MIB)
        try:
            since = d.mark()
            d.kill(signal.SIGTERM)
            d.wait_log(r"event=stopping", since=since)
            assert all(t.is_alive() for t in downloads), "transfers ended before SIGTERM"
            # event=stopping is logged by the main thread as it asks the
            # workers to close their listeners: allow them a moment, then
            # every new connection must be refused
            wait_until(lambda: connect_refused(port), 10,
                       "new connections to be refused after SIGTERM")
            for _ in range(5):
                assert connect_refused(port), "a new connection was accepted after SIGTERM"
        finally:
            slow.clear()
            for t in downloads:
                t.join(30)
        want = pattern_sha256(nbytes, "sigterm-drain")
        for t in downloads:
            assert not t.is_alive(), "transfer still running"
            assert t.error is None, t.error
            assert (t.bytes, t.sha256) == (nbytes, want), "transfer: %d bytes" % t.bytes
        assert d.wait(10) == 0, d.log()
        d.wait_log(r"event=stopped", since=since)


def test_sigterm_shutdown_timeout_cuts_and_exits_1(dmtls_bin, pki, procs, tmp_path):
    """SIGTERM with shutdown-timeout 1s while 5 slow transfers would need
    many more seconds: dmtls cuts them at about 1 s, says so in its log,
    and exits 1."""
    nbytes = 8 * MIB
    with DuplexServer(nbytes, "sigterm-cut") as duplex:
        d, port, slow, downloads = _sigterm_setup(dmtls_bin, pki, procs, tmp_path,
                                                  duplex, "1s", rate=512 * 1024)
        try:
            since = d.mark()
            t0 = time.monotonic()
            d.expect_exit(1)
            # the cut resets the backend's side of each transfer
            duplex.expect_error(r"^ConnectionResetError: \[Errno 104\]",
                                r"^send: \[Errno (32|104)\]")
            d.kill(signal.SIGTERM)
            rc = d.wait(10)
            elapsed = time.monotonic() - t0
        finally:
            slow.clear()  # read what was buffered before the cut at full speed
            for t in downloads:
                t.join(10)
        assert rc == 1, "exit %s; log:\n%s" % (rc, d.log())
        # not before the 1 s timeout, and not at the 30 s default or when the
        # (held, see Download) transfers end
        assert 0.9 <= elapsed < 20, "exited %.2f s after SIGTERM" % elapsed
        m = d.wait_log(r"^.*event=stopped.*$", since=since)
        assert "cut" in m.group(0), m.group(0)
        for t in downloads:
            assert not t.is_alive(), "transfer still running after dmtls exited"
            assert t.bytes < nbytes, "a transfer completed despite the cut"
