"""pytest fixtures for the dmtls integration tests.

Fixtures: dmtls_bin, pki, rsa_pki, port, procs, run.  Plain helpers that
tests may import (``from conftest import free_port, run``): free_port(), run(),
judge().  Every process started through `procs` is judged when it stops
(judge(): exit status, sanitizer reports, unexpected level=error lines);
a test declares what it provokes with Proc.expect_error / expect_exit.
The test folder is put on sys.path, so ``from backends import EchoServer``,
``from pki import PKI`` and ``from tlsclient import tls_connect`` work.
"""

import errno
import fcntl
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from pki import PKI  # noqa: E402

# Every bounded wait of the shared helpers (process start, log lines, exit,
# stop, run(), wait_until, tlsclient's socket timeouts) is multiplied by
# $DMTLS_TEST_TIME_SCALE (default 1): make check-valgrind sets it, as dmtls
# runs many times slower there.  Latency bounds that tests assert are not.
TIME_SCALE = float(os.environ.get("DMTLS_TEST_TIME_SCALE") or 1)


def scaled(seconds):
    """seconds * TIME_SCALE: a bound on how long dmtls may take."""
    return seconds * TIME_SCALE


# -- ports ------------------------------------------------------------------

PORT_LOCK_DIR = "/tmp/dmtls-test-ports"
_held_ports = {}  # port -> descriptor of its lock file, held until exit


def _port_ranges():
    """Port ranges outside the kernel's ephemeral range (no outgoing
    connection ever takes a local port there) and above 10000."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    ranges = [(10000, lo - 1), (hi + 1, 65535)]
    return [(a, b) for a, b in ranges if b - a >= 1000]


def _bindable(port):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as s:
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL:
                continue  # no IPv6 loopback here
            return False
    return True


def free_port():
    """Return a TCP port that no one else gets while this test session runs.

    A port the kernel hands out (bind to port 0) can be taken again by any
    outgoing connection or another test before dmtls binds it.  This one
    lies outside the ephemeral range, is locked (flock on a file under
    PORT_LOCK_DIR, held until the session ends) against every other test
    session on the machine, is never handed out twice in a session, and
    could be bound on 127.0.0.1 (and ::1) just now."""
    os.makedirs(PORT_LOCK_DIR, exist_ok=True)
    ranges = _port_ranges()
    rng = random.SystemRandom()
    for _ in range(2000):
        a, b = rng.choice(ranges)
        port = rng.randint(a, b)
        if port in _held_ports:
            continue
        fd = os.open(os.path.join(PORT_LOCK_DIR, "%d.lock" % port),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not _bindable(port):
            os.close(fd)  # releases the lock
            continue
        _held_ports[port] = fd
        return port
    raise AssertionError("no free port found outside the ephemeral range")


def held_socket(family=socket.AF_INET):
    """A TCP socket bound to a free_port() on the loopback address but not
    listening: a connection to it is refused until the test calls
    listen() on it (a target that is down, then up, on a port the test
    owns throughout).  The caller closes it (or hands it to a backend)."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, free_port()))
    return s


# -- socket states, read from /proc/net/tcp{,6} -------------------------------

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV",
              "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
              "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
              "0A": "LISTEN", "0B": "CLOSING"}


def _hexaddr(text):
    """"0100007F:1F90" -> ("127.0.0.1", 8080); IPv6 likewise."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(
            raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port, 16)


def tcp_sockets(path=None):
    """Every TCP socket of the machine: a list of dicts with local and
    remote ((ip, port)), state ("LISTEN", "ESTABLISHED"...), rx_queue (for
    a listener: connections waiting to be accepted; else bytes received
    that the owner has not read), tx_queue (bytes written and not yet
    acknowledged by the peer) and inode."""
    out = []
    for p in ([path] if path else ["/proc/net/tcp", "/proc/net/tcp6"]):
        try:
            with open(p) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            w = line.split()
            tx, rx = w[4].split(":")
            out.append({"local": _hexaddr(w[1]), "remote": _hexaddr(w[2]),
                        "state": TCP_STATES.get(w[3], w[3]), "rx_queue": int(rx, 16),
                        "tx_queue": int(tx, 16), "inode": int(w[9])})
    return out


def tcp_listening(port, host="127.0.0.1"):
    """True when host:port is in LISTEN state, read from /proc/net/tcp{,6}
    so that no probe connection reaches the listener."""
    return any(s["state"] == "LISTEN" and s["local"] == (host, port)
               for s in tcp_sockets())


def accept_queue(port, host="127.0.0.1"):
    """Connections that the kernel completed and that wait in the listen
    backlog of host:port (summed over every listener there, as with
    SO_REUSEPORT): nobody has accepted them yet."""
    return sum(s["rx_queue"] for s in tcp_sockets()
               if s["state"] == "LISTEN" and s["local"] == (host, port))


def connections_to(port, host="127.0.0.1"):
    """The non-listening TCP sockets with host:port at either end, as a set
    of (local, remote, state): a connection leaves one (TIME_WAIT at the
    latest) for a minute after it ends."""
    return {(s["local"], s["remote"], s["state"]) for s in tcp_sockets()
            if s["state"] != "LISTEN" and (host, port) in (s["local"], s["remote"])}


def open_connections(pid):
    """TCP sockets held by process pid that are not listeners (its open
    connections, whatever their state)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return [s for s in tcp_sockets() if s["inode"] in inodes and s["state"] != "LISTEN"]


def wait_listening(port, proc, timeout=10):
    """Wait (bounded) until proc listens on 127.0.0.1:port without dialling
    it; fail early, with its stderr, if proc exits first."""
    from backends import wait_until

    def listening():
        if proc.proc.poll() is not None:
            raise AssertionError("%s exited with %s before listening; stderr:\n%s"
                                 % (proc.name, proc.proc.returncode, proc.log()))
        return tcp_listening(port)

    wait_until(listening, timeout, "%s listening on port %d" % (proc.name, port))


def run(argv, timeout=10, env=None, input=None, expect_errors=()):
    """Run argv to completion (bounded by `timeout`); return the
    CompletedProcess with text stdout/stderr.  `env` overlays os.environ.
    When argv names the dmtls binary, a sanitizer report or an assertion
    failure on its stderr raises AssertionError (the caller checks the exit
    status); `expect_errors` regexes excuse such lines (known bugs only)."""
    argv = [os.fspath(a) for a in argv]
    full_env = dict(os.environ, **env) if env else None
    r = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(timeout),
                       env=full_env, input=input)
    if names_dmtls(argv):
        bad = unexpected_lines(r.stderr, REPORT_RX, expect_errors)
        if bad:
            raise AssertionError("%s: sanitizer report or assertion failure:\n  %s\n"
                                 "stderr:\n%s" % (argv, "\n  ".join(bad), r.stderr))
    return r


# -- judging a process when it stops ------------------------------------------

# A sanitizer report, a valgrind memcheck error (test/valgrind/dmtls opens
# each with a marker line; an ERROR SUMMARY above 0 when run without -q) or
# a failed assert(); never fine, in any process.
REPORT_RX = re.compile(r"(?:Address|Leak|UndefinedBehavior|Thread|Memory)Sanitizer"
                       r"|runtime error:|Assertion `.*' failed"
                       r"|^==\d+== (?:valgrind memcheck error begin$|ERROR SUMMARY: [1-9])")
# A dmtls log line at level error, logfmt or JSON.
ERROR_RX = re.compile(r'(?:^|\s)level=error(?:\s|$)|"level":"error"')


def dmtls_path():
    """Path of the dmtls binary under test: $DMTLS_BIN, else <repo>/dmtls."""
    return os.environ.get("DMTLS_BIN") or os.path.join(REPO, "dmtls")


def names_dmtls(argv):
    """True when argv runs the dmtls binary (directly or after a wrapper
    such as prlimit or systemd-socket-activate)."""
    real = os.path.realpath(dmtls_path())
    return any(os.path.basename(a) == "dmtls" or os.path.realpath(a) == real
               for a in argv if a)


def unexpected_lines(text, rx, expected):
    """Lines of `text` that match `rx` and no regex of `expected` (re.search
    on the single line)."""
    return [line for line in text.splitlines()
            if rx.search(line) and not any(re.search(e, line) for e in expected)]


def _excerpt(text, n=40):
    """n lines of stderr: from the first sanitizer/assertion report (its
    stack is what matters), else the last n."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if REPORT_RX.search(line)), None)
    return lines[first:first + n] if first is not None else lines[-n:]


def _status_text(rc):
    if rc is not None and rc < 0:
        try:
            return "%d (%s)" % (rc, signal.Signals(-rc).name)
        except ValueError:
            pass
    return str(rc)


def judge(p):
    """Judge a stopped Proc; return its problems as strings (empty: fine).

    Every process fails on a sanitizer report or an assertion failure on its
    stderr, and on dying from a signal that the test did not send it.  A
    strict process (a dmtls) also fails when its exit status is not
    p.expect_status (0 unless declared; None: the test checked it itself)
    and on any level=error log line.  Regexes in p.expect_errors (see
    Proc.expect_error) excuse the lines they match, one line at a time."""
    text, rc, problems = p.log(), p.proc.returncode, []
    if rc is None:
        problems.append("still running")
    elif p.strict:
        if p.expect_status is not None and rc != p.expect_status:
            problems.append("exit status %s, expected %s (signals sent: %s)" % (
                _status_text(rc), p.expect_status,
                ", ".join(signal.Signals(s).name for s in p.signals) or "none"))
    elif rc < 0 and -rc not in p.signals:
        problems.append("killed by a signal the test did not send: exit status %s"
                        % _status_text(rc))
    problems += ["report: " + line
                 for line in unexpected_lines(text, REPORT_RX, p.expect_errors)]
    if p.strict:
        problems += ["unexpected error line: " + line
                     for line in unexpected_lines(text, ERROR_RX, p.expect_errors)]
    return problems


def _connects(family, addr):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(addr)
            return True
        except OSError:
            return False


class Proc:
    """A started process: .proc (Popen), .pid, .name, .stdout_path, .stderr_path.

    What judge() holds it to when it stops: .strict (judged as a dmtls;
    None = when argv names the dmtls binary), .expect_status (exit status
    of a strict process, default 0), .expect_errors (regexes of the error
    lines the test provokes) and .signals (the signals the test sent)."""

    def __init__(self, argv, name, tmpdir, env, strict=None, expect_status=0,
                 expect_errors=()):
        self.name = name
        self.argv = argv
        self.strict = names_dmtls(argv) if strict is None else strict
        self.expect_status = expect_status
        self.expect_errors = list(expect_errors)
        self.signals = []
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=env)
        self.pid = self.proc.pid

    def expect_error(self, *regexes):
        """Declare error lines this test provokes on purpose: each regex
        (re.search on one line) excuses the level=error lines it matches.
        Name the event and its detail, not just the level."""
        self.expect_errors.extend(regexes)
        return self

    def expect_exit(self, status):
        """Declare the exit status the process must end with (an int, as in
        Popen), or None when the test has checked it itself."""
        self.expect_status = status
        return self

    def log(self):
        """The process's stderr so far, as text."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def out(self):
        """The process's stdout so far, as text."""
        with open(self.stdout_path, "rb") as f:
            return f.read().decode(errors="replace")

    def mark(self):
        """Current length of the stderr text, to pass to wait_log(since=...)."""
        return len(self.log())

    def wait_log(self, regex, timeout=5, since=0):
        """Poll stderr (from character offset `since`) until `regex` matches
        (re.search, MULTILINE); return the match.  On timeout raise
        AssertionError with the log."""
        rx = re.compile(regex, re.MULTILINE)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            text = self.log()
            m = rx.search(text, since)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("%s: no log line matching %r within %ss; "
                                     "exit=%s; stderr:\n%s" % (self.name, regex, timeout,
                                                              self.proc.poll(), text))
            time.sleep(0.02)

    def wait(self, timeout=5):
        """Wait for the process to exit on its own; return its exit status,
        or raise AssertionError (with the log) after `timeout` seconds."""
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %ss; stderr:\n%s"
                                 % (self.name, timeout, self.log())) from None

    def kill(self, sig):
        """Send `sig` to the process if it is still running."""
        if self.proc.poll() is None:
            self.signals.append(sig)
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Send `sig`, wait up to `timeout` s, then SIGKILL; return the exit
        status (negative = killed by that signal, as in Popen)."""
        if self.proc.poll() is None:
            self.signals.append(sig)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.signals.append(signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def rss_kb(self):
        """Resident set size in KiB, from /proc/PID/status (VmRSS)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def fd_count(self):
        """Number of open file descriptors (entries of /proc/PID/fd)."""
        return len(os.listdir("/proc/%d/fd" % self.pid))


class Procs:
    """Factory for processes that are always stopped at test teardown."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.all = []

    def start(self, argv, name=None, wait_port=None, wait_unix=None, env=None, timeout=10,
              strict=None, expect_status=0, expect_errors=()):
        """Start argv (stdout/stderr to files in tmp_path) and wait until
        127.0.0.1:wait_port accepts TCP and/or the unix socket `wait_unix`
        accepts connections, polling every 20 ms for at most `timeout` s.
        Fails fast, with the process's stderr, if it exits first.  `env`
        overlays os.environ.  `strict`, `expect_status` and `expect_errors`
        say how judge() holds the process at teardown (see Proc).  Returns
        a Proc."""
        argv = [os.fspath(a) for a in argv]
        name = name or os.path.basename(argv[0])
        if any(p.name == name for p in self.all):
            name = "%s-%d" % (name, len(self.all))
        full_env = dict(os.environ, **env) if env else None
        p = Proc(argv, name, self.tmpdir, full_env, strict, expect_status,
                 expect_errors)
        self.all.append(p)
        targets = []
        if wait_port is not None:
            targets.append((socket.AF_INET, ("127.0.0.1", int(wait_port))))
        if wait_unix is not None:
            targets.append((socket.AF_UNIX, os.fspath(wait_unix)))
        deadline = time.monotonic() + scaled(timeout)
        while targets:
            if p.proc.poll() is not None:
                raise AssertionError("%s exited with %s before listening; argv=%s\n"
                                     "stderr:\n%s" % (name, p.proc.returncode, argv, p.log()))
            if _connects(*targets[0]):
                targets.pop(0)
                continue
            if time.monotonic() >= deadline:
                p.stop()
                raise AssertionError("%s not listening on %s after %ss; argv=%s\n"
                                     "stderr:\n%s" % (name, targets[0][1], timeout, argv,
                                                      p.log()))
            time.sleep(0.02)
        return p

    def stop_all(self):
        """Stop every process started here (SIGTERM, then SIGKILL after 3 s),
        then judge each (see judge()); raise AssertionError naming every
        problem of every process, with its stderr, if there is any."""
        failed = {}
        for p in self.all:
            try:
                p.stop(timeout=3)
            except Exception as e:  # judge() reports it as still running
                failed[p] = "stop failed: %r" % e
        report = []
        for p in self.all:
            problems = ([failed[p]] if p in failed else []) + judge(p)
            if problems:
                report.append("%s (argv %s):\n  %s\n  stderr %s, excerpt:\n    %s" % (
                    p.name, " ".join(p.argv), "\n  ".join(problems), p.stderr_path,
                    "\n    ".join(_excerpt(p.log()))))
        if report:
            raise AssertionError("processes judged at stop (declare what a test provokes "
                                 "with Proc.expect_error / expect_exit):\n"
                                 + "\n".join(report))


@pytest.fixture(scope="session")
def dmtls_bin():
    """Path of the dmtls binary: $DMTLS_BIN, else <repo>/dmtls; fails if missing."""
    path = dmtls_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("dmtls binary not found or not executable at %s "
                    "(build it with make, or set DMTLS_BIN)" % path, pytrace=False)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Session-wide ECDSA P-256 test PKI (see pki.PKI)."""
    return PKI(tmp_path_factory.mktemp("pki"), algo="ec")


@pytest.fixture(scope="session")
def rsa_pki(tmp_path_factory):
    """Session-wide RSA-2048 test PKI (see pki.PKI)."""
    return PKI(tmp_path_factory.mktemp("rsa-pki"), algo="rsa")


@pytest.fixture(scope="session")
def goclient(tmp_path_factory):
    """The Go TLS client of goclient/main.go, built with Debian's Go
    (test_audit_core, test_crl), once per session."""
    d = tmp_path_factory.mktemp("go")
    env = dict(os.environ, GOCACHE=str(d / "cache"), GOPATH=str(d / "path"),
               GOFLAGS="-mod=mod", GOPROXY="off", GO111MODULE="off", CGO_ENABLED="0")
    out = d / "goclient"
    subprocess.run(["go", "build", "-o", str(out), os.path.join(HERE, "goclient", "main.go")],
                   check=True, env=env, capture_output=True, timeout=300)
    return str(out)


@pytest.fixture
def port():
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def procs(tmp_path):
    """Process factory (Procs.start); everything started is stopped, then
    judged (judge()), at teardown: a problem fails the test there."""
    ps = Procs(str(tmp_path))
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture(name="run")
def run_fixture():
    """The run() helper, as a fixture."""
    return run
