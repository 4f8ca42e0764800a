"""MariaDB server fixtures for the `mysql` route tests.

``MariaDB(workdir, tls=(ca, cert, key) or None)`` makes a throwaway server:
``mariadb-install-db`` into workdir/data, then ``mariadbd --no-defaults`` on
127.0.0.1:.port (an ephemeral port) and a unix socket for administration as
root.  With `tls` the server has --ssl-ca/--ssl-cert/--ssl-key and
``require_secure_transport=ON``; without, it has no TLS at all.  Every wait is
bounded; ``stop()`` sends SIGTERM, then SIGKILL.

Pytest fixtures (module scope, import them into the test module):
``mariadb`` (TLS required; server certificate = the PKI's dm leaf) and
``mariadb_plain`` (no TLS).  Accounts on both: u/pw (mysql_native_password,
all privileges).  On ``mariadb`` also: ed/edpw (ed25519), user_dm/pw
(REQUIRE SUBJECT '/CN=dm'), user_dm2/pw (REQUIRE SUBJECT '/CN=dm2'), and
database dmtest.

``mariadb_cli(port, user, password, sql, *extra)`` runs the mariadb client
against 127.0.0.1:port (by default ``--skip-ssl``) and returns the
CompletedProcess.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port, run, tcp_listening

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
CLIENT = shutil.which("mariadb") or "/usr/bin/mariadb"

START_TIMEOUT = 30


class MariaDB:
    """A throwaway MariaDB server; see the module docstring."""

    def __init__(self, workdir, tls=None, name="mariadb"):
        self.workdir = os.fspath(workdir)
        self.datadir = os.path.join(self.workdir, "data")
        self.sock = os.path.join(self.workdir, "sock")
        self.errlog = os.path.join(self.workdir, "err.log")
        self.tls = tls
        self.name = name
        self.port = None
        self.proc = None

    def log(self):
        """The server's error log so far."""
        try:
            with open(self.errlog, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self):
        """Create the data folder, start mariadbd and wait (bounded) until
        it answers on its unix socket and listens on TCP."""
        r = run([INSTALL_DB, "--no-defaults", "--datadir=" + self.datadir, "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=60)
        if r.returncode != 0:
            raise AssertionError("mariadb-install-db failed (%d):\n%s\n%s"
                                 % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        self.port = free_port()
        argv = [MARIADBD, "--no-defaults", "--datadir=" + self.datadir, "--user=root",
                "--port=%d" % self.port, "--bind-address=127.0.0.1",
                "--socket=" + self.sock, "--pid-file=" + os.path.join(self.workdir, "pid"),
                "--log-error=" + self.errlog, "--skip-name-resolve",
                "--max-connect-errors=1000000", "--max-connections=500",
                "--max-allowed-packet=256M", "--innodb-buffer-pool-size=32M",
                "--skip-log-bin", "--innodb-fast-shutdown=2"]
        if self.tls:
            ca, cert, key = (os.path.abspath(p) for p in self.tls)
            argv += ["--ssl-ca=" + ca, "--ssl-cert=" + cert, "--ssl-key=" + key,
                     "--require-secure-transport=ON"]
        else:
            argv += ["--skip-ssl", "--require-secure-transport=OFF"]
        out = open(os.path.join(self.workdir, "mariadbd.out"), "wb")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        finally:
            out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s while starting; argv=%s\nerr.log:\n%s"
                                     % (self.name, self.proc.returncode, argv,
                                        self.log()[-4000:]))
            if os.path.exists(self.sock) and self._tcp_listening():
                r = self.sql_result("SELECT 1")
                if r.returncode == 0:
                    return self
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError("%s not ready after %ss\nerr.log:\n%s"
                                     % (self.name, START_TIMEOUT, self.log()[-4000:]))
            time.sleep(0.1)

    def _tcp_listening(self):
        """True when the server listens (no probe connection: that would
        count as an aborted connect)."""
        return tcp_listening(self.port)

    def sql_result(self, sql, timeout=30):
        """Run `sql` as root over the unix socket; the CompletedProcess."""
        return run([CLIENT, "--no-defaults", "-S", self.sock, "-uroot", "-N", "-B",
                    "-e", sql], timeout=timeout)

    def sql(self, sql, timeout=30):
        """Run `sql` as root over the unix socket; return stdout, or raise
        AssertionError with the client's error."""
        r = self.sql_result(sql, timeout)
        if r.returncode != 0:
            raise AssertionError("%s: %r failed: %s" % (self.name, sql, r.stderr.strip()))
        return r.stdout

    def stop(self):
        """SIGTERM, wait up to 20 s, then SIGKILL (bounded)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def mariadb_cli(port, user, password, sql, *extra, timeout=20):
    """Run the mariadb client (plaintext unless `extra` says otherwise)
    against 127.0.0.1:port; returns the CompletedProcess (text)."""
    tls = [] if any(a.startswith("--ssl") for a in extra) else ["--skip-ssl"]
    return run([CLIENT, "--no-defaults", "-h127.0.0.1", "-P%d" % port, "-u" + user,
                "-p" + password, "--connect-timeout=10", *tls, "-N", "-B", *extra,
                "-e", sql], timeout=timeout)


def _drop_anonymous(db):
    for host in ("localhost", socket.gethostname()):
        db.sql("DROP USER IF EXISTS ''@'%s'" % host)


@pytest.fixture(scope="module")
def mariadb(pki, tmp_path_factory):
    """MariaDB with TLS required (server certificate: the PKI's dm leaf)."""
    db = MariaDB(tmp_path_factory.mktemp("mariadb-tls"),
                 tls=(pki.ca, pki.path("dm"), pki.key("dm")), name="mariadb-tls")
    try:
        db.start()
        _drop_anonymous(db)
        db.sql("CREATE USER 'u'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON *.* TO 'u'@'%';"
               "INSTALL SONAME 'auth_ed25519';"
               "CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw');"
               "CREATE USER 'user_dm'@'%' IDENTIFIED BY 'pw' REQUIRE SUBJECT '/CN=dm';"
               "CREATE USER 'user_dm2'@'%' IDENTIFIED BY 'pw' REQUIRE SUBJECT '/CN=dm2';"
               "CREATE DATABASE dmtest;")
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="module")
def mariadb_plain(tmp_path_factory):
    """MariaDB without TLS (its greeting lacks CLIENT_SSL)."""
    db = MariaDB(tmp_path_factory.mktemp("mariadb-plain"), tls=None, name="mariadb-plain")
    try:
        db.start()
        _drop_anonymous(db)
        db.sql("CREATE USER 'u'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON *.* TO 'u'@'%';")
        yield db
    finally:
        db.stop()
