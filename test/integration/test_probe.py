"""`dmtls probe ADDR` (DESIGN.md section 5).

It connects as a client route would (TLS from the first byte, or the MySQL
in-band upgrade with --mysql), prints the TLS version, cipher, ALPN, the
server's chain and the leaf's names, and one verdict per rule:

    ssl-ca: PASS|FAIL|SKIP ...      server-name: ...
    cert-allowed-cn: ...            client-cert: ...   (the server's verdict on us)
    result: PASS | result: FAIL (RULE, ...)

Exit 0 pass, 1 fail, 2 usage.  Peers: a dmtls server route, a TLS etcd
(Debian's etcd-server, run here on loopback), MariaDB with --mysql, openssl
s_server with the wrong-CA and expired leaves, plaintext servers, a closed
port.
"""

import os
import re
import shutil
import socket
import subprocess
import threading

import pytest

from backends import SinkServer, _Server, wait_until
from conftest import free_port, run, tcp_listening, wait_listening
from mysqld import mariadb, mariadb_plain  # noqa: F401 (fixtures)


def probe(dmtls_bin, addr, *args, timeout=30):
    return run([dmtls_bin, "probe", addr, *[os.fspath(a) for a in args]], timeout=timeout)


def tls_args(pki, cert="dm", ca="ca"):
    a = ["--ssl-ca", pki.path(ca)]
    if cert:
        a += ["--ssl-cert", pki.path(cert), "--ssl-key", pki.key(cert)]
    return a


def verdict(out, rule):
    m = re.search(r"^%s: (PASS|FAIL|SKIP)(.*)$" % re.escape(rule), out, re.M)
    assert m, "no %s line in:\n%s" % (rule, out)
    return m.group(1), m.group(2)


def assert_result(r, status, failed=()):
    out = r.stdout
    assert r.returncode == status, "exit %d, expected %d\n%s%s" % (r.returncode, status,
                                                                    out, r.stderr)
    if status == 0:
        assert re.search(r"^result: PASS$", out, re.M), out
    else:
        m = re.search(r"^result: FAIL \((.*)\)$", out, re.M)
        assert m and m.group(1).split(", ") == list(failed), out


def server_route(procs, dmtls_bin, pki, target, cert="dm", *extra):
    port = free_port()
    p = procs.start([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % port,
                     "--target", target, "--ssl-ca", pki.ca, "--ssl-cert", pki.path(cert),
                     "--ssl-key", pki.key(cert), "--cert-allowed-cn", "dm", *extra],
                    name="dmtls-server")
    wait_listening(port, p)
    return p, "127.0.0.1:%d" % port


def s_server(procs, pki, cert, *extra):
    port = free_port()
    p = procs.start(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
                     "-cert", pki.path(cert), "-key", pki.key(cert), "-quiet", *extra],
                    name="s_server-" + cert)
    wait_listening(port, p)
    return "127.0.0.1:%d" % port


# ---- a dmtls server route ------------------------------------------------------

def test_probe_passes_a_server_route_that_allows_its_cn(dmtls_bin, procs, pki):
    with SinkServer() as sink:
        srv, addr = server_route(procs, dmtls_bin, pki, sink.addr)
        r = probe(dmtls_bin, addr, *tls_args(pki), "--cert-allowed-cn", "dm",
                  "--server-name", "localhost")
        out = r.stdout
        assert_result(r, 0)
        assert re.search(r"^tls: TLSv1\.3 cipher=TLS13-\S+ alpn=h2$", out, re.M), out
        assert re.search(r"^chain: 1 certificate sent by the server$", out, re.M), out
        assert re.search(r'^  0: subject="CN=dm" issuer="CN=dmtls test CA"$', out, re.M), out
        assert re.search(r"^     not_after=\d{4}-\d\d-\d\dT\S+Z days_left=(29|30)$", out, re.M)
        assert re.search(r"^leaf: cn=dm sans=DNS:localhost,IP:127\.0\.0\.1$", out, re.M), out
        assert verdict(out, "ssl-ca")[0] == "PASS"
        assert verdict(out, "server-name")[0] == "PASS"
        assert verdict(out, "cert-allowed-cn") == ("PASS", " CN dm is allowed (rules: cn=dm)")
        assert verdict(out, "client-cert")[0] == "PASS"
        srv.wait_log(r"event=close route=server .*cn=dm ")
        # No application data: the backend was dialled and read nothing.
        assert sink.wait_results(1)[0]["bytes"] == 0


def test_probe_names_the_server_refusing_its_cn(dmtls_bin, procs, pki):
    with SinkServer() as sink:
        srv, addr = server_route(procs, dmtls_bin, pki, sink.addr)
        r = probe(dmtls_bin, addr, *tls_args(pki, cert="other"), "--cert-allowed-cn", "dm")
        assert_result(r, 1, ["client-cert"])
        v = verdict(r.stdout, "client-cert")
        assert v[0] == "FAIL" and re.search(r"refused our certificate: alert 4[26] ", v[1]), v
        assert verdict(r.stdout, "cert-allowed-cn")[0] == "PASS"   # its CN is dm
        srv.wait_log(r"event=denied route=server .*cn=other ")
        assert sink.accepted == 0


def test_probe_names_the_allow_list_when_the_server_cn_is_not_in_it(dmtls_bin, procs, pki):
    with SinkServer() as sink:
        srv, addr = server_route(procs, dmtls_bin, pki, sink.addr)
        r = probe(dmtls_bin, addr, *tls_args(pki), "--cert-allowed-cn", "master-2,dm2")
        assert_result(r, 1, ["cert-allowed-cn"])
        assert verdict(r.stdout, "cert-allowed-cn") == (
            "FAIL", " certificate identity not allowed (CN dm) (rules: cn=master-2|dm2)")


def test_probe_without_a_client_certificate_names_the_servers_refusal(dmtls_bin, procs, pki):
    with SinkServer() as sink:
        srv, addr = server_route(procs, dmtls_bin, pki, sink.addr)
        r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca)
        assert_result(r, 1, ["client-cert"])
        assert "certificate_required" in verdict(r.stdout, "client-cert")[1], r.stdout
        srv.wait_log(r'event=handshake_failed route=server .*reason="no client certificate"')


# ---- chain, name, validity: openssl s_server with the test PKI's leaves -----------

def test_probe_names_a_wrong_ca(dmtls_bin, procs, pki):
    addr = s_server(procs, pki, "untrusted")
    r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca, "--wait", "200ms")
    assert_result(r, 1, ["ssl-ca"])
    assert re.search(r'issuer="CN=dmtls untrusted CA"', r.stdout), r.stdout
    v = verdict(r.stdout, "ssl-ca")
    assert v[0] == "FAIL" and "does not lead to a CA in %s" % pki.ca in v[1], v


def test_probe_names_an_expired_certificate(dmtls_bin, procs, pki):
    addr = s_server(procs, pki, "expired")
    r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca, "--wait", "200ms")
    assert_result(r, 1, ["ssl-ca"])
    assert re.search(r"^     not_after=\S+Z EXPIRED$", r.stdout, re.M), r.stdout
    v = verdict(r.stdout, "ssl-ca")
    assert v[0] == "FAIL" and re.search(r"certificate 0 of the chain expired on \d{4}-", v[1])


def test_probe_names_a_wrong_server_name(dmtls_bin, procs, pki):
    addr = s_server(procs, pki, "dm")
    r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca, "--server-name", "wrong.example",
              "--wait", "200ms")
    assert_result(r, 1, ["server-name"])
    assert verdict(r.stdout, "server-name") == (
        "FAIL", " the leaf is not valid for wrong.example (its names: "
        "DNS:localhost,IP:127.0.0.1)")
    assert verdict(r.stdout, "ssl-ca")[0] == "PASS"


def test_probe_checks_single_label_and_ip_server_names(dmtls_bin, procs, pki):
    """server-name is judged on the leaf's SANs as a client route judges it:
    a single label such as DM's master-1 and an IP address are names like
    any other (wolfSSL 5.9's own check refused both)."""
    pki.leaf("master-1", "dm", sans=("DNS:master-1", "IP:127.0.0.1"))
    addr = s_server(procs, pki, "master-1")
    for name in ("master-1", "127.0.0.1"):
        r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca, "--server-name", name)
        assert_result(r, 0)
        assert re.search(r"^server-name: PASS the leaf is valid for %s$" % re.escape(name),
                         r.stdout, re.M), r.stdout
    r = probe(dmtls_bin, addr, "--ssl-ca", pki.ca, "--server-name", "master-2")
    assert_result(r, 1, ["server-name"])
    assert "the leaf is not valid for master-2 (its names: DNS:master-1" in r.stdout, r.stdout


# ---- servers that offer no TLS, a closed port -----------------------------------

class BannerServer(_Server):
    """Plaintext: read what the client sends, answer like an HTTP server."""

    def handle(self, conn):
        conn.settimeout(5)
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")


def test_probe_names_a_server_that_offers_no_tls(dmtls_bin, pki):
    with BannerServer() as srv:
        r = probe(dmtls_bin, srv.addr, "--ssl-ca", pki.ca)
        assert_result(r, 1, ["handshake"])
        assert re.search(r"^handshake: FAIL ", r.stdout, re.M), r.stdout
        assert re.search(r'^hint: the server does not speak TLS here: it sent "HTTP/1\.0 ',
                         r.stdout, re.M), r.stdout


def test_probe_times_out_on_a_silent_server(dmtls_bin, pki):
    with SinkServer() as srv:
        r = probe(dmtls_bin, srv.addr, "--ssl-ca", pki.ca, "--handshake-timeout", "500ms")
        assert_result(r, 1, ["handshake"])
        assert "handshake: FAIL no answer within 500ms" in r.stdout, r.stdout


def test_probe_names_a_closed_port(dmtls_bin, pki):
    port = free_port()
    r = probe(dmtls_bin, "127.0.0.1:%d" % port, "--ssl-ca", pki.ca)
    assert_result(r, 1, ["connect"])
    assert "connect: FAIL 127.0.0.1:%d: Connection refused" % port in r.stdout, r.stdout


@pytest.mark.parametrize("args, needle", [
    ((), "give the address"),
    (("127.0.0.1:1", "--ssl-cert", "x.pem"), "--ssl-cert and --ssl-key go together"),
    (("127.0.0.1:1", "--mysql", "--alpn", "h2"), "--alpn is not used with --mysql"),
    (("127.0.0.1:1", "--bogus"), "unknown option --bogus"),
    (("127.0.0.1:1", "--ssl-ca", "/nonexistent/ca.pem"), "/nonexistent/ca.pem"),
    (("127.0.0.1:1", "--cert-allowed-cn", ""), "empty string is not a rule"),
    (("127.0.0.1:1", "--wait", "0"), "--wait 0"),
    (("nocolon",), "expected HOST:PORT"),
])
def test_probe_usage_errors_exit_2(dmtls_bin, args, needle):
    r = run([dmtls_bin, "probe", *args])
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert needle in r.stderr, (args, r.stderr)


# ---- MariaDB with --mysql ---------------------------------------------------------

def test_probe_mysql_upgrades_like_a_mysql_route(dmtls_bin, mariadb, pki):  # noqa: F811
    before = mariadb.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split()[1]
    r = probe(dmtls_bin, "127.0.0.1:%d" % mariadb.port, "--mysql", "--ssl-ca", pki.ca,
              "--cert-allowed-cn", "dm", "--server-name", "localhost", "--wait", "300ms")
    assert_result(r, 0)
    assert re.search(r"^mysql: greeting from \S*MariaDB\S* \(plugin \S+\) offers TLS; sent an "
                     r"SSLRequest, no login$", r.stdout, re.M), r.stdout
    assert re.search(r"^tls: TLSv1\.[23] cipher=\S+ alpn=none$", r.stdout, re.M), r.stdout
    assert verdict(r.stdout, "cert-allowed-cn")[0] == "PASS"
    after = mariadb.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split()[1]
    assert int(after) == int(before) + 2   # the probe's, and this SHOW's
    # Nobody logged in: the probe's connection ended in the handshake phase.
    log = mariadb.log()
    assert "Access denied" not in log


def test_probe_without_mysql_recognises_a_mysql_greeting(dmtls_bin, mariadb, pki):  # noqa: F811
    r = probe(dmtls_bin, "127.0.0.1:%d" % mariadb.port, "--ssl-ca", pki.ca)
    assert_result(r, 1, ["handshake"])
    assert "hint: that is a MySQL greeting; probe it with --mysql" in r.stdout, r.stdout


def test_probe_mysql_names_a_server_without_tls(dmtls_bin, mariadb_plain, pki):  # noqa: F811
    r = probe(dmtls_bin, "127.0.0.1:%d" % mariadb_plain.port, "--mysql", "--ssl-ca", pki.ca)
    assert_result(r, 1, ["mysql"])
    assert re.search(r"^mysql: FAIL server \S+ \(127\.0\.0\.1:\d+\) does not support TLS: "
                     r"its greeting lacks CLIENT_SSL", r.stdout, re.M), r.stdout


def test_probe_mysql_on_a_tls_port_says_so(dmtls_bin, procs, pki):
    addr = s_server(procs, pki, "dm")
    r = probe(dmtls_bin, addr, "--mysql", "--ssl-ca", pki.ca, "--handshake-timeout", "500ms")
    assert_result(r, 1, ["mysql"])
    assert "no greeting within the handshake timeout" in r.stdout, r.stdout


# ---- a TLS etcd ---------------------------------------------------------------------

@pytest.fixture
def etcd_tls(procs, pki, tmp_path):
    """One etcd member (Debian's etcd-server) serving its client API over
    mutual TLS on loopback: certificate the PKI's dm leaf, clients must
    present a certificate from the test CA."""
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.fail("etcd not found: ./bootstrap installs etcd-server", pytrace=False)
    cport, pport = free_port(), free_port()
    p = procs.start([etcd, "--name", "probe", "--data-dir", tmp_path / "etcd",
                     "--listen-client-urls", "https://127.0.0.1:%d" % cport,
                     "--advertise-client-urls", "https://127.0.0.1:%d" % cport,
                     "--listen-peer-urls", "http://127.0.0.1:%d" % pport,
                     "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pport,
                     "--initial-cluster", "probe=http://127.0.0.1:%d" % pport,
                     "--cert-file", pki.path("dm"), "--key-file", pki.key("dm"),
                     "--trusted-ca-file", pki.ca, "--client-cert-auth",
                     "--logger", "zap", "--log-outputs", "stderr"], name="etcd")
    wait_until(lambda: tcp_listening(cport) or p.proc.poll() is not None, 30,
               "etcd listening")
    assert p.proc.poll() is None, p.log()
    return "127.0.0.1:%d" % cport


def test_probe_passes_a_tls_etcd(dmtls_bin, etcd_tls, pki):
    r = probe(dmtls_bin, etcd_tls, *tls_args(pki), "--cert-allowed-cn", "dm",
              "--server-name", "localhost", "--wait", "500ms")
    assert_result(r, 0)
    assert re.search(r"^tls: TLSv1\.3 cipher=\S+ alpn=h2$", r.stdout, re.M), r.stdout
    assert re.search(r"^leaf: cn=dm ", r.stdout, re.M), r.stdout


def test_probe_names_a_tls_etcd_refusing_no_certificate(dmtls_bin, etcd_tls, pki):
    r = probe(dmtls_bin, etcd_tls, "--ssl-ca", pki.ca, "--wait", "2s")
    assert_result(r, 1, ["client-cert"])
    assert re.search(r"alert \d+ (certificate_required|bad_certificate)",
                     verdict(r.stdout, "client-cert")[1]), r.stdout


def test_probe_names_a_tls_etcd_refusing_a_foreign_certificate(dmtls_bin, etcd_tls, pki):
    r = probe(dmtls_bin, etcd_tls, "--ssl-ca", pki.ca, "--ssl-cert", pki.path("untrusted"),
              "--ssl-key", pki.key("untrusted"), "--wait", "2s")
    assert_result(r, 1, ["client-cert"])
    assert "refused our certificate" in verdict(r.stdout, "client-cert")[1], r.stdout
