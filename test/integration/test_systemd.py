"""systemd integration (DESIGN.md section 7): the notify protocol (READY=1,
RELOADING=1, STOPPING=1, WATCHDOG=1) on a path or abstract NOTIFY_SOCKET,
socket activation through `listen = "systemd:NAME"` with
systemd-socket-activate, `systemd-analyze verify` of the units in systemd/,
and `dmtls check -c` of the example configs in conf.d/.

The notify socket is a unix datagram socket the test binds itself.  Unit
files and example configs are checked in temporary copies: the binary path
of Exec*= lines becomes the built binary; in the configs the ssl-* files
become the test PKI's and host names that do not resolve become 127.0.0.1.
"""

import glob
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import tempfile
import time
import uuid

import pytest

from backends import EchoServer, wait_until
from conftest import REPO, free_port, run, tcp_listening
from routes import conf_text, tls_echo, write_conf

UNIT_DIR = os.path.join(REPO, "systemd")
EXAMPLE_DIR = os.path.join(REPO, "conf.d")
UNITS = sorted(glob.glob(os.path.join(UNIT_DIR, "*.service")) +
               glob.glob(os.path.join(UNIT_DIR, "*.socket")))
EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLE_DIR, "*.conf")))
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)  # Linux; SCM_TIMESTAMP is the same


# -- helpers -----------------------------------------------------------------

def systemd_tool(name):
    """Path of a systemd tool; the suite needs them (bootstrap installs the
    Debian package systemd), so a missing one fails instead of skipping."""
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s not installed: run ./bootstrap (it installs the Debian "
                    "package systemd)" % name, pytrace=False)
    return path


def notify_conf(path, pki, listen, target):
    """One server route x, shutdown-timeout 5s."""
    return write_conf(path, conf_text(pki, [("x", listen, target, None)],
                                      shutdown_timeout="5s"))[0]


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket.
    `abstract=True` binds an abstract name (NOTIFY_SOCKET=@name).  .env is
    the environment to give dmtls; .messages lists [arrival time (Unix
    time, from SO_TIMESTAMP), assignment, consumed] received so far."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # timestamps from the kernel, so a busy test process does not skew
        # the intervals measured between datagrams
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self.dir = None
        if abstract:
            name = "dmtls-test-%s" % uuid.uuid4().hex
            self.sock.bind("\0" + name)
            self.env = {"NOTIFY_SOCKET": "@" + name}
        else:
            self.dir = tempfile.mkdtemp(prefix="dmtls-notify-", dir="/tmp")
            path = os.path.join(self.dir, "notify")  # well under sun_path's 108 bytes
            self.sock.bind(path)
            self.env = {"NOTIFY_SOCKET": path}
        self.messages = []

    def next(self, timeout):
        """The next assignment received (e.g. "READY=1"), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [m for m in self.messages if not m[2]]
            if pending:
                pending[0][2] = True
                return pending[0][1]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except socket.timeout:
                return None
            now = time.time()
            for level, kind, raw in anc:  # the kernel's arrival time
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMP) and len(raw) >= 16:
                    sec, usec = struct.unpack("@qq", raw[:16])
                    now = sec + usec / 1e6
            for line in data.decode(errors="replace").splitlines():
                if line:
                    self.messages.append([now, line, False])

    def expect(self, want, timeout=5, skip=("WATCHDOG=1",)):
        """Skip assignments in `skip` (and STATUS=...) until the next other
        one; it must be `want`."""
        while True:
            got = self.next(timeout)
            assert got is not None, "no %s within %ss; received: %r" % (
                want, timeout, [m[1] for m in self.messages])
            if got in skip or got.startswith("STATUS="):
                continue
            assert got == want, "expected %s, got %s; received: %r" % (
                want, got, [m[1] for m in self.messages])
            return

    def close(self):
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    ns = NotifySocket()
    yield ns
    ns.close()


@pytest.fixture
def no_watchdog_pid(monkeypatch):
    """Make sure no WATCHDOG_USEC/WATCHDOG_PID of ours leaks into dmtls."""
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)


def start_notify(procs, dmtls_bin, pki, tmp_path, env, echo, name="dmtls-run",
                 own_watchdog_pid=False):
    """`dmtls run` of a one-route config with env; own_watchdog_pid sets
    WATCHDOG_PID to dmtls's own PID (a shell execs it)."""
    port = free_port()
    conf = notify_conf(os.path.join(str(tmp_path), name + ".conf"), pki,
                       "127.0.0.1:%d" % port, echo.addr)
    argv = [dmtls_bin, "run", "-c", conf]
    if own_watchdog_pid:
        argv = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + argv
    return procs.start(argv, name=name, env=env), port


# -- 7. notify -------------------------------------------------------------------

def test_notify_ready(dmtls_bin, pki, procs, tmp_path, notify, no_watchdog_pid):
    """`dmtls run` sends READY=1 to NOTIFY_SOCKET, and the route already
    serves when it arrives."""
    with EchoServer() as echo:
        d, port = start_notify(procs, dmtls_bin, pki, tmp_path, notify.env, echo)
        notify.expect("READY=1", timeout=10)
        assert tls_echo(port, pki) == b"hello", d.log()


def test_notify_reload_sends_reloading_then_ready(dmtls_bin, pki, procs, tmp_path, notify,
                                                  no_watchdog_pid):
    """On SIGHUP dmtls sends RELOADING=1, then READY=1 once reloaded."""
    with EchoServer() as echo:
        d, _ = start_notify(procs, dmtls_bin, pki, tmp_path, notify.env, echo)
        notify.expect("READY=1", timeout=10)
        since = d.mark()
        d.kill(signal.SIGHUP)
        notify.expect("RELOADING=1")
        notify.expect("READY=1")
        d.wait_log(r"event=reloaded", since=since)


def test_notify_stop_sends_stopping(dmtls_bin, pki, procs, tmp_path, notify, no_watchdog_pid):
    """On SIGTERM dmtls sends STOPPING=1 and exits 0."""
    with EchoServer() as echo:
        d, _ = start_notify(procs, dmtls_bin, pki, tmp_path, notify.env, echo)
        notify.expect("READY=1", timeout=10)
        d.kill(signal.SIGTERM)
        notify.expect("STOPPING=1")
        assert d.wait(10) == 0, d.log()


def watchdogs(ns, n, timeout=30):
    """Receive until ns holds n WATCHDOG=1; return their arrival times (the
    kernel's, see NotifySocket)."""
    deadline = time.monotonic() + timeout
    while True:
        times = [t for t, m, _ in ns.messages if m == "WATCHDOG=1"]
        if len(times) >= n:
            return times
        left = deadline - time.monotonic()
        assert left > 0, "only %d WATCHDOG=1 within %ss: %r" % (
            len(times), timeout, [m[1] for m in ns.messages])
        ns.next(left)


def test_notify_watchdog_every_half_interval(dmtls_bin, pki, procs, tmp_path, notify,
                                             no_watchdog_pid):
    """WATCHDOG_USEC=1000000 (no WATCHDOG_PID): WATCHDOG=1 arrives
    repeatedly, every half interval (0.5 s; the median of 8 gaps between
    0.35 and 0.7 s, by the kernel's arrival times), and no gap reaches the
    1 s timeout."""
    env = dict(notify.env, WATCHDOG_USEC="1000000")
    with EchoServer() as echo:
        start_notify(procs, dmtls_bin, pki, tmp_path, env, echo)
        notify.expect("READY=1", timeout=10)
        times = watchdogs(notify, 9)
        gaps = [b - a for a, b in zip(times, times[1:])]
        med = statistics.median(gaps)
        assert 0.35 <= med <= 0.7, "median WATCHDOG=1 interval %.3f s: %r" % (med, gaps)
        assert max(gaps) < 1.0, "a WATCHDOG=1 gap reached the timeout: %r" % gaps


def test_notify_watchdog_other_pid_disabled(dmtls_bin, pki, procs, tmp_path, notify,
                                            no_watchdog_pid):
    """WATCHDOG_PID naming another process: no WATCHDOG=1 is sent.  A second
    dmtls, started after the first was ready, with WATCHDOG_PID set to its
    own PID, is the clock: once it has sent 3 WATCHDOG=1 (every 100 ms),
    the first has had its watchdog interval three times over."""
    env = dict(notify.env, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    own = NotifySocket()
    try:
        with EchoServer() as echo:
            start_notify(procs, dmtls_bin, pki, tmp_path, env, echo)
            notify.expect("READY=1", timeout=10)
            start_notify(procs, dmtls_bin, pki, tmp_path,
                         dict(own.env, WATCHDOG_USEC="200000"), echo, name="dmtls-own",
                         own_watchdog_pid=True)
            own.expect("READY=1", timeout=10)
            watchdogs(own, 3)
            while notify.next(0.05) is not None:  # what is already queued
                pass
            assert not [m for _, m, _ in notify.messages if m == "WATCHDOG=1"], \
                notify.messages
    finally:
        own.close()


def test_notify_abstract_socket(dmtls_bin, pki, procs, tmp_path, no_watchdog_pid):
    """NOTIFY_SOCKET=@name (abstract namespace) works: READY=1, and
    STOPPING=1 on SIGTERM."""
    ns = NotifySocket(abstract=True)
    try:
        with EchoServer() as echo:
            d, _ = start_notify(procs, dmtls_bin, pki, tmp_path, ns.env, echo)
            ns.expect("READY=1", timeout=10)
            d.kill(signal.SIGTERM)
            ns.expect("STOPPING=1")
            assert d.wait(10) == 0, d.log()
    finally:
        ns.close()


# -- 8. socket activation --------------------------------------------------------



def test_socket_activation_serves_inherited_socket(dmtls_bin, pki, procs, tmp_path):
    """`systemd-socket-activate -l 127.0.0.1:PORT --fdname=web dmtls run`
    with listen = "systemd:web": the route serves TLS echo on the
    inherited socket."""
    activate = systemd_tool("systemd-socket-activate")
    port = free_port()
    with EchoServer() as echo:
        conf = notify_conf(os.path.join(str(tmp_path), "dmtls.conf"), pki, "systemd:web",
                          echo.addr)
        d = procs.start([activate, "-l", "127.0.0.1:%d" % port, "--fdname=web",
                         dmtls_bin, "run", "-c", conf], name="socket-activate")
        wait_until(lambda: tcp_listening(port) or d.proc.poll() is not None, 10,
                   "systemd-socket-activate to listen")
        assert d.proc.poll() is None, d.log()
        # systemd-socket-activate execs dmtls on the first connection
        assert tls_echo(port, pki, b"activated") == b"activated", d.log()
        d.wait_log(r"event=ready")
        assert tls_echo(port, pki, b"again") == b"again", d.log()
        assert echo.accepted == 2


def test_systemd_listener_without_socket_exits_2(dmtls_bin, pki, tmp_path, monkeypatch):
    """listen = "systemd:web" with no socket passed: exit 2 with a message
    that says no socket was passed."""
    for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(var, raising=False)
    conf = notify_conf(os.path.join(str(tmp_path), "dmtls.conf"), pki, "systemd:web",
                      "127.0.0.1:%d" % free_port())
    r = run([dmtls_bin, "run", "-c", conf], timeout=5)
    assert r.returncode == 2, "exit %s; stderr:\n%s" % (r.returncode, r.stderr)
    assert "systemd" in r.stderr and "web" in r.stderr, r.stderr


# -- 9. units and example configs -------------------------------------------------

def test_units_present():
    """systemd/ holds at least one .service unit (DESIGN.md section 9)."""
    assert any(u.endswith(".service") for u in UNITS), "no units in %s" % UNIT_DIR


def _man_path(tmp):
    """A MANPATH holding the project's man pages (man/NAME.N -> manN/), or
    None when there are none."""
    pages = glob.glob(os.path.join(REPO, "man", "*.[1-8]"))
    if not pages:
        return None
    root = os.path.join(tmp, "man")
    for page in pages:
        section = os.path.join(root, "man" + page.rsplit(".", 1)[1])
        os.makedirs(section, exist_ok=True)
        shutil.copy(page, section)
    return root


_EXEC_BIN = re.compile(r"^(Exec\w+=[-@:+!|]*)(\S*/dmtls)(?=\s|$)", re.MULTILINE)


@pytest.mark.parametrize("unit", [os.path.basename(u) for u in UNITS])
def test_unit_verifies(dmtls_bin, tmp_path, unit):
    """`systemd-analyze verify` accepts the unit (with Exec*= pointing at the
    built binary, every unit of systemd/ beside it, the project's man pages
    on MANPATH) without an error or a warning about our files."""
    analyze = systemd_tool("systemd-analyze")
    units = os.path.join(str(tmp_path), "units")
    os.makedirs(units)
    for src in UNITS:
        with open(src) as f:
            text = _EXEC_BIN.sub(lambda m: m.group(1) + dmtls_bin, f.read())
        with open(os.path.join(units, os.path.basename(src)), "w") as f:
            f.write(text)
    man = _man_path(str(tmp_path))
    argv = [analyze, "verify"] + ([] if man else ["--man=no"]) + [os.path.join(units, unit)]
    r = run(argv, timeout=30, env={"MANPATH": man} if man else None)
    ours = [os.path.basename(u) for u in UNITS] + [units, unit.replace("@.", "@i."), "dmtls"]
    complaints = [l for l in r.stderr.splitlines() if any(n in l for n in ours)]
    assert r.returncode == 0 and not complaints, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, r.stdout, r.stderr)


def test_examples_present():
    """conf.d/ holds example configs (DESIGN.md section 9)."""
    assert EXAMPLES, "no *.conf in %s" % EXAMPLE_DIR


def _resolves(host):
    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:
        return False


def _localize(text, pki):
    """The example config with the test PKI's files and unresolvable host
    names replaced by 127.0.0.1."""
    files = {"ssl-ca": pki.ca, "ssl-cert": pki.path("dm"), "ssl-key": pki.key("dm")}
    text = re.sub(r'\b(ssl-ca|ssl-cert|ssl-key)(\s*[=:]\s*)"[^"]*"',
                  lambda m: '%s%s"%s"' % (m.group(1), m.group(2), files[m.group(1)]), text)

    def host(m):
        h = m.group(2)
        if h.startswith("[") or h in ("unix", "systemd") or _resolves(h):
            return m.group(0)
        return '%s"127.0.0.1:%s"' % (m.group(1), m.group(3))

    return re.sub(r'\b((?:listen|target|status)\s*[=:]\s*)"([^":]+):(\d+)"', host, text)


def _only_routes(text):
    """True when the file sets nothing at the top level but routes (a
    conf.d drop-in rather than a complete config)."""
    depth, keys = 0, set()
    for line in re.sub(r"(#|//).*", "", text).splitlines():
        if depth == 0:
            m = re.match(r"\s*([A-Za-z][-\w]*)\s*[=:]", line)
            if m:
                keys.add(m.group(1))
        depth += line.count("{") + line.count("(") - line.count("}") - line.count(")")
    return keys == {"routes"}


@pytest.mark.parametrize("example", [os.path.basename(e) for e in EXAMPLES])
def test_example_config_checks(dmtls_bin, pki, tmp_path, example):
    """`dmtls check -c` exits 0 on the example config (a drop-in holding
    only routes is checked as conf.d/ of a main file with the test PKI as
    top-level security)."""
    with open(os.path.join(EXAMPLE_DIR, example)) as f:
        text = _localize(f.read(), pki)
    d = os.path.join(str(tmp_path), "etc")
    os.makedirs(d)
    if _only_routes(text):
        os.makedirs(os.path.join(d, "conf.d"))
        with open(os.path.join(d, "conf.d", example), "w") as f:
            f.write(text)
        conf = os.path.join(d, "dmtls.conf")
        with open(conf, "w") as f:
            f.write('security = { ssl-ca = "%s"; ssl-cert = "%s"; ssl-key = "%s"; };\n'
                    % (pki.ca, pki.path("dm"), pki.key("dm")))
    else:
        conf = os.path.join(d, example)
        with open(conf, "w") as f:
            f.write(text)
    r = run([dmtls_bin, "check", "-c", conf], timeout=15)
    assert r.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s\nconfig:\n%s" % (
        r.returncode, r.stdout, r.stderr, text)
    assert 'cert="CN=dm"' in r.stdout, r.stdout
