"""Command line (DESIGN.md section 5): start-up errors exit 2 quickly with a
one-line message naming the flag; single-dash long options work like DM's Go
flags; `dmtls check` validates a route's certificates (exit 0 / 1 / 2);
`dmtls version` reports the wolfSSL build.
"""

import os
import re
import socket

import pytest

import routes
from backends import EchoServer
from conftest import free_port, run, wait_listening
from tlsclient import tls_refused

def route_args(pki, port=None, ca=None, cert=None, key=None, listen=True):
    """Flags of a valid server route, with overrides."""
    args = []
    if listen:
        args += ["--listen", "127.0.0.1:%d" % (port or free_port())]
    args += ["--target", "127.0.0.1:%d" % free_port(),
             "--ssl-ca", ca or pki.ca,
             "--ssl-cert", cert or pki.path("dm"),
             "--ssl-key", key or pki.key("dm"),
             "--cert-allowed-cn", "dm"]
    return args


def expect_usage_error(dmtls_bin, args, *needles):
    """`dmtls server ARGS` must exit 2 quickly with one line holding every
    needle (routes.expect_usage_error)."""
    return routes.expect_usage_error(dmtls_bin, ["server", *args], *needles)


def truncated_ca(pki, tmp_path):
    """A CA file whose only PEM block is cut in the middle."""
    path = os.path.join(str(tmp_path), "truncated-ca.pem")
    with open(pki.ca, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return path


# -- start-up errors ---------------------------------------------------------

def test_startup_missing_ca_file(dmtls_bin, pki, tmp_path):
    """--ssl-ca naming a file that does not exist."""
    missing = os.path.join(str(tmp_path), "nonexistent-ca.pem")
    expect_usage_error(dmtls_bin, route_args(pki, ca=missing), "--ssl-ca", missing)


def test_startup_key_cert_mismatch(dmtls_bin, pki):
    """--ssl-key of another pair than --ssl-cert."""
    expect_usage_error(dmtls_bin, route_args(pki, key=pki.key("other")),
                       "--ssl-key", pki.key("other"))


def test_startup_garbage_ca(dmtls_bin, pki, tmp_path):
    """--ssl-ca naming a file of garbage (no PEM certificate)."""
    path = os.path.join(str(tmp_path), "garbage-ca.pem")
    with open(path, "wb") as f:
        f.write(b"this is not a certificate\n" * 4)
    expect_usage_error(dmtls_bin, route_args(pki, ca=path), "--ssl-ca", path)


def test_startup_ca_is_directory(dmtls_bin, pki, tmp_path):
    """--ssl-ca naming a directory (unreadable as a file)."""
    path = os.path.join(str(tmp_path), "ca-dir")
    os.mkdir(path)
    expect_usage_error(dmtls_bin, route_args(pki, ca=path), "--ssl-ca", path)


def test_startup_truncated_ca(dmtls_bin, pki, tmp_path):
    """--ssl-ca naming a half-written PEM file."""
    path = truncated_ca(pki, tmp_path)
    expect_usage_error(dmtls_bin, route_args(pki, ca=path), "--ssl-ca", path)


def test_startup_bad_listen_address(dmtls_bin, pki):
    """--listen with a port number out of range."""
    args = route_args(pki, listen=False) + ["--listen", "127.0.0.1:99999"]
    expect_usage_error(dmtls_bin, args, "--listen", "127.0.0.1:99999")


def test_startup_listen_port_in_use(dmtls_bin, pki):
    """--listen on a port another socket already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        line = expect_usage_error(dmtls_bin, route_args(pki, port=busy),
                                  "--listen", "127.0.0.1:%d" % busy)
        assert "in use" in line, line


def test_startup_bad_duration(dmtls_bin, pki):
    """--handshake-timeout that is not a duration."""
    args = route_args(pki) + ["--handshake-timeout", "10x"]
    expect_usage_error(dmtls_bin, args, "--handshake-timeout", "10x")


def test_startup_unknown_flag(dmtls_bin, pki):
    """An option dmtls does not know."""
    expect_usage_error(dmtls_bin, route_args(pki) + ["--foo"], "--foo")


def test_startup_missing_listen(dmtls_bin, pki):
    """A server route without --listen."""
    expect_usage_error(dmtls_bin, route_args(pki, listen=False), "--listen")


# -- single-dash long options ------------------------------------------------

def test_single_dash_long_options(dmtls_bin, pki, procs, port):
    """Go-style single-dash flags (-listen, -ssl-ca, ...) start a working
    server route that enforces -cert-allowed-cn."""
    with EchoServer() as echo:
        argv = [dmtls_bin, "server", "-listen", "127.0.0.1:%d" % port,
                "-target", echo.addr, "-ssl-ca", pki.ca, "-ssl-cert", pki.path("dm"),
                "-ssl-key", pki.key("dm"), "-cert-allowed-cn", "dm",
                "-handshake-timeout", "5s"]
        d = procs.start(argv, name="dmtls-single-dash")
        wait_listening(port, d)
        assert routes.tls_echo(port, pki, b"single dash") == b"single dash", d.log()
        d.wait_log(r"^.*event=close route=server .*cn=dm\b.*$")
        assert tls_refused(port, pki, cert="other") is not None


# -- dmtls check -------------------------------------------------------------

def test_check_valid_server_route(dmtls_bin, pki):
    """`dmtls check server ...` on a valid setup exits 0 and prints the
    certificate subject CN=dm and days_left."""
    r = run([dmtls_bin, "check", "server", *route_args(pki)], timeout=10)
    assert r.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, r.stdout, r.stderr)
    m = re.search(r'cert="?CN=dm\b.*\bdays_left=(-?\d+)', r.stdout)
    assert m, r.stdout
    assert 28 <= int(m.group(1)) <= 30, m.group(0)  # the dm leaf is valid for 30 days


@pytest.mark.parametrize("broken", ["mismatched_key", "truncated_ca"])
def test_check_broken_setup_exits_1(dmtls_bin, pki, tmp_path, broken):
    """`dmtls check server ...` exits 1 when the key does not match the
    certificate, or when the CA file is truncated, naming the flag."""
    if broken == "mismatched_key":
        args, flag = route_args(pki, key=pki.key("other")), "--ssl-key"
    else:
        args, flag = route_args(pki, ca=truncated_ca(pki, tmp_path)), "--ssl-ca"
    r = run([dmtls_bin, "check", "server", *args], timeout=10)
    assert r.returncode == 1, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, r.stdout, r.stderr)
    assert flag in r.stdout + r.stderr, r.stdout + r.stderr


# -- version -----------------------------------------------------------------

def test_version_mentions_wolfssl_and_aesni(dmtls_bin):
    """`dmtls version` exits 0 and names wolfSSL and the AES-NI status."""
    r = run([dmtls_bin, "version"], timeout=5)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert re.search(r"wolfSSL \d+\.\d+", out), out
    assert "AES-NI" in out, out


def test_check_warns_when_cert_does_not_chain_to_ca(dmtls_bin, pki):
    """A certificate from another CA is valid (peers may trust that CA) but
    `check` warns that it does not chain to ssl-ca; the dm leaf does not get
    that warning."""
    r = run([dmtls_bin, "check", "server",
             *route_args(pki, cert=pki.path("untrusted"),
                         key=pki.key("untrusted"))], timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"warning: .*does not chain to ssl-ca", r.stdout), r.stdout
    assert "event=cert_not_from_ca" in r.stderr, r.stderr
    r = run([dmtls_bin, "check", "server", *route_args(pki)], timeout=10)
    assert "does not chain" not in r.stdout + r.stderr, r.stdout + r.stderr
