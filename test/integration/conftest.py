"""pytest fixtures for the dmtls integration tests.

Fixtures: dmtls_bin, pki, rsa_pki, port, procs, run.  Plain helpers that
tests may import (``from conftest import free_port, run``): free_port(), run().
The test folder is put on sys.path, so ``from backends import EchoServer``,
``from pki import PKI`` and ``from tlsclient import tls_connect`` work.
"""

import os
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


def free_port():
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_listening(port):
    """True when 127.0.0.1:port is in LISTEN state, read from /proc/net/tcp
    so that no probe connection reaches the listener."""
    needle = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == needle and line.split()[3] == "0A"
                   for line in f.readlines()[1:])


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


def run(argv, timeout=10, env=None, input=None):
    """Run argv to completion (bounded by `timeout`); return the
    CompletedProcess with text stdout/stderr.  `env` overlays os.environ."""
    full_env = dict(os.environ, **env) if env else None
    return subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=input)


def _connects(family, addr):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(addr)
            return True
        except OSError:
            return False


class Proc:
    """A started process: .proc (Popen), .pid, .name, .stdout_path, .stderr_path."""

    def __init__(self, argv, name, tmpdir, env):
        self.name = name
        self.argv = argv
        self.stdout_path = os.path.join(tmpdir, name + ".stdout")
        self.stderr_path = os.path.join(tmpdir, name + ".stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=env)
        self.pid = self.proc.pid

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
        deadline = time.monotonic() + timeout
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
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %ss; stderr:\n%s"
                                 % (self.name, timeout, self.log())) from None

    def kill(self, sig):
        """Send `sig` to the process if it is still running."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Send `sig`, wait up to `timeout` s, then SIGKILL; return the exit
        status (negative = killed by that signal, as in Popen)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
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

    def start(self, argv, name=None, wait_port=None, wait_unix=None, env=None, timeout=10):
        """Start argv (stdout/stderr to files in tmp_path) and wait until
        127.0.0.1:wait_port accepts TCP and/or the unix socket `wait_unix`
        accepts connections, polling every 20 ms for at most `timeout` s.
        Fails fast, with the process's stderr, if it exits first.  `env`
        overlays os.environ.  Returns a Proc."""
        argv = [os.fspath(a) for a in argv]
        name = name or os.path.basename(argv[0])
        if any(p.name == name for p in self.all):
            name = "%s-%d" % (name, len(self.all))
        full_env = dict(os.environ, **env) if env else None
        p = Proc(argv, name, self.tmpdir, full_env)
        self.all.append(p)
        targets = []
        if wait_port is not None:
            targets.append((socket.AF_INET, ("127.0.0.1", int(wait_port))))
        if wait_unix is not None:
            targets.append((socket.AF_UNIX, os.fspath(wait_unix)))
        deadline = time.monotonic() + timeout
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
        """Stop every process started here (SIGTERM, then SIGKILL)."""
        for p in self.all:
            try:
                p.stop(timeout=3)
            except Exception:
                pass


@pytest.fixture(scope="session")
def dmtls_bin():
    """Path of the dmtls binary: $DMTLS_BIN, else <repo>/dmtls; fails if missing."""
    path = os.environ.get("DMTLS_BIN") or os.path.join(REPO, "dmtls")
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


@pytest.fixture
def port():
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def procs(tmp_path):
    """Process factory (Procs.start); everything started is stopped at teardown."""
    ps = Procs(str(tmp_path))
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture(name="run")
def run_fixture():
    """The run() helper, as a fixture."""
    return run
