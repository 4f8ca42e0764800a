"""`dmtls certs init` and `dmtls certs issue` (DESIGN.md section 5).

The files are judged by other tools than wolfSSL: openssl (verify, x509
-text), a dmtls server and client route, Python's ssl, Go's crypto/tls
(Debian's Go, a tiny client built in the test with no module to download)
and curl.
"""

import datetime
import grp
import os
import re
import shutil
import ssl
import stat

import pytest

from backends import EchoServer, TLSServer
from conftest import free_port, run, wait_listening

GO = shutil.which("go")


def certs(dmtls_bin, *args, timeout=60):
    return run([dmtls_bin, "certs", *[os.fspath(a) for a in args]], timeout=timeout)


def init(dmtls_bin, d, *args):
    r = certs(dmtls_bin, "init", d, *args)
    assert r.returncode == 0, r.stderr
    return r


def x509_text(path):
    r = run(["openssl", "x509", "-in", path, "-noout", "-text"])
    assert r.returncode == 0, r.stderr
    return r.stdout


def not_after(path):
    r = run(["openssl", "x509", "-in", path, "-noout", "-enddate"])
    when = r.stdout.strip().split("=", 1)[1]
    return datetime.datetime.strptime(when, "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=datetime.timezone.utc)


def days_from_now(path):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (not_after(path) - now).total_seconds() / 86400


def sans(text):
    m = re.search(r"X509v3 Subject Alternative Name:.*\n\s*(.*)\n", text)
    return [s.strip() for s in m.group(1).split(",")] if m else []


# ---- the files ---------------------------------------------------------------

def test_init_writes_a_ca_and_a_dm_leaf_that_openssl_verifies(dmtls_bin, tmp_path):
    d = tmp_path / "pki" / "sub"          # created with its parents
    r = init(dmtls_bin, d)
    assert sorted(os.listdir(d)) == ["ca-key.pem", "ca.pem", "dm-key.pem", "dm.pem"]
    assert re.search(r"for testing only", r.stdout), r.stdout
    v = run(["openssl", "verify", "-CAfile", d / "ca.pem", d / "dm.pem"])
    assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    # The leaf verifies for both of its purposes.
    for purpose in ("sslserver", "sslclient"):
        v = run(["openssl", "verify", "-purpose", purpose, "-CAfile", d / "ca.pem",
                 d / "dm.pem"])
        assert v.returncode == 0, (purpose, v.stdout, v.stderr)


def test_init_leaf_has_cn_dm_the_default_sans_eku_and_p256(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path, "--dns", "master-1", "--ip", "10.0.0.7")
    t = x509_text(tmp_path / "dm.pem")
    assert re.search(r"Subject: CN = dm\n", t), t
    assert re.search(r"Issuer: O = dmtls test PKI, CN = dmtls test CA\n", t), t
    assert sans(t) == ["DNS:localhost", "DNS:master-1", "IP Address:127.0.0.1",
                       "IP Address:0:0:0:0:0:0:0:1", "IP Address:10.0.0.7"], t
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in t, t
    assert "Public-Key: (256 bit)" in t and "NIST CURVE: P-256" in t, t
    assert "CA:TRUE" not in t
    assert 364 < days_from_now(tmp_path / "dm.pem") <= 365.01


def test_init_ca_is_a_ca_that_outlives_its_leaves(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    t = x509_text(tmp_path / "ca.pem")
    assert re.search(r"Basic Constraints: critical\n\s*CA:TRUE", t), t
    assert re.search(r"Key Usage: critical\n\s*Certificate Sign, CRL Sign", t), t
    assert re.search(r"Subject: O = dmtls test PKI, CN = dmtls test CA\n", t), t
    assert days_from_now(tmp_path / "ca.pem") > 3649


def test_init_cn_flag_names_the_leaf_dm_pem_still(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path, "--cn", "dm-test")
    assert re.search(r"Subject: CN = dm-test\n", x509_text(tmp_path / "dm.pem"))


def test_keys_are_mode_0600(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    certs(dmtls_bin, "issue", tmp_path, "--name", "w1", "--cn", "dm")
    for f in ("ca-key.pem", "dm-key.pem", "w1-key.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o600, f
    for f in ("ca.pem", "dm.pem", "w1.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o644, f


def test_group_flag_makes_keys_0640_and_owned_by_the_group(dmtls_bin, tmp_path):
    g = next(n for n in ("nogroup", "daemon", "adm") if _has_group(n))
    gid = grp.getgrnam(g).gr_gid
    init(dmtls_bin, tmp_path, "--group", g)
    certs(dmtls_bin, "issue", tmp_path, "--name", "w1", "--cn", "dm", "--group", g)
    for f in ("ca-key.pem", "dm-key.pem", "w1-key.pem"):
        st = os.stat(tmp_path / f)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, gid), f


def _has_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_unknown_group_is_a_usage_error_naming_it(dmtls_bin, tmp_path):
    r = certs(dmtls_bin, "init", tmp_path, "--group", "no-such-group-dmtls")
    assert r.returncode == 2 and "no-such-group-dmtls" in r.stderr, r.stderr
    assert not os.listdir(tmp_path)


def test_init_refuses_to_overwrite_and_names_the_file(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    r = certs(dmtls_bin, "init", tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "%s already exists" % (tmp_path / "ca.pem") in r.stderr, r.stderr
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before


def test_init_refuses_when_only_the_leaf_key_exists(dmtls_bin, tmp_path):
    (tmp_path / "dm-key.pem").write_text("mine\n")
    r = certs(dmtls_bin, "init", tmp_path)
    assert r.returncode == 1 and str(tmp_path / "dm-key.pem") in r.stderr, r.stderr
    assert os.listdir(tmp_path) == ["dm-key.pem"]
    assert (tmp_path / "dm-key.pem").read_text() == "mine\n"


def test_issue_refuses_to_overwrite_and_names_the_file(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    assert certs(dmtls_bin, "issue", tmp_path, "--name", "w1", "--cn", "a").returncode == 0
    old = (tmp_path / "w1.pem").read_bytes()
    r = certs(dmtls_bin, "issue", tmp_path, "--name", "w1", "--cn", "b")
    assert r.returncode == 1 and "%s already exists" % (tmp_path / "w1.pem") in r.stderr
    assert (tmp_path / "w1.pem").read_bytes() == old


def test_issue_without_a_ca_says_to_run_init(dmtls_bin, tmp_path):
    r = certs(dmtls_bin, "issue", tmp_path, "--name", "w1", "--cn", "dm")
    assert r.returncode == 1 and "certs init" in r.stderr, r.stderr
    assert not os.listdir(tmp_path)


def test_issue_writes_exactly_the_names_given_signed_by_the_ca(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    r = certs(dmtls_bin, "issue", tmp_path, "--name", "worker-1", "--cn", "worker",
              "--dns", "worker-1", "--ip", "10.0.0.5", "--uri", "spiffe://test/w1")
    assert r.returncode == 0 and "for testing only" in r.stdout, r.stderr
    t = x509_text(tmp_path / "worker-1.pem")
    assert re.search(r"Subject: CN = worker\n", t), t
    assert sans(t) == ["DNS:worker-1", "IP Address:10.0.0.5", "URI:spiffe://test/w1"], t
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in t
    v = run(["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "worker-1.pem"])
    assert v.returncode == 0, v.stdout + v.stderr


def test_issue_without_names_gets_the_one_host_defaults(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    certs(dmtls_bin, "issue", tmp_path, "--name", "other", "--cn", "other")
    assert sans(x509_text(tmp_path / "other.pem")) == [
        "DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"]


def test_rsa_flag_makes_rsa_2048_keys(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path, "--rsa")
    for f in ("ca.pem", "dm.pem"):
        t = x509_text(tmp_path / f)
        assert "rsaEncryption" in t and "Public-Key: (2048 bit)" in t, f
        assert "sha256WithRSAEncryption" in t, f
    assert "Digital Signature, Key Encipherment" in x509_text(tmp_path / "dm.pem")
    k = run(["openssl", "pkey", "-in", tmp_path / "dm-key.pem", "-noout", "-text"])
    assert "Private-Key: (2048 bit" in k.stdout, k.stdout[:200]


def test_issue_rsa_leaf_under_an_ecdsa_ca(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path)
    certs(dmtls_bin, "issue", tmp_path, "--name", "r", "--cn", "dm", "--rsa")
    t = x509_text(tmp_path / "r.pem")
    assert "Public-Key: (2048 bit)" in t and "ecdsa-with-SHA256" in t, t
    v = run(["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "r.pem"])
    assert v.returncode == 0, v.stdout + v.stderr


def test_days_flag_sets_the_leaf_validity(dmtls_bin, tmp_path):
    init(dmtls_bin, tmp_path, "--days", "10")
    assert 9.9 < days_from_now(tmp_path / "dm.pem") <= 10.01
    assert days_from_now(tmp_path / "ca.pem") > 3649
    certs(dmtls_bin, "issue", tmp_path, "--name", "w", "--cn", "dm", "--days", "3")
    assert 2.9 < days_from_now(tmp_path / "w.pem") <= 3.01


@pytest.mark.parametrize("args, needle", [
    (("init", "{d}", "--days", "0"), "--days 0"),
    (("init", "{d}", "--ip", "300.1.1.1"), "--ip 300.1.1.1"),
    (("init", "{d}", "--dns", "a b"), "--dns a b"),
    (("init", "{d}", "--cn", "x" * 64), "--cn"),
    (("init", "{d}", "--name", "x"), "--name is for dmtls certs issue"),
    (("init",), "give the folder"),
    (("issue", "{d}", "--cn", "dm"), "--name is required"),
    (("issue", "{d}", "--name", "w"), "--cn is required"),
    (("issue", "{d}", "--name", "../w", "--cn", "dm"), "--name ../w"),
    (("issue", "{d}", "--name", "ca", "--cn", "dm"), "--name ca"),
    (("init", "{d}", "--bogus"), "unknown option --bogus"),
    (("sign", "{d}"), "unknown subcommand sign"),
])
def test_usage_errors_exit_2_and_name_the_flag(dmtls_bin, tmp_path, args, needle):
    d = tmp_path / "pki"
    r = certs(dmtls_bin, *[a.format(d=d) for a in args])
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert needle in r.stderr, (args, r.stderr)
    assert not d.exists() or not os.listdir(d)


# ---- the files in use ----------------------------------------------------------

@pytest.fixture(scope="module", params=["ec", "rsa"])
def dpki(request, tmp_path_factory, dmtls_bin):
    """A PKI made by dmtls certs: dm (init) and other (issue)."""
    d = tmp_path_factory.mktemp("dmtls-certs-" + request.param)
    extra = ["--rsa"] if request.param == "rsa" else []
    init(dmtls_bin, d, *extra)
    r = certs(dmtls_bin, "issue", d, "--name", "other", "--cn", "other", *extra)
    assert r.returncode == 0, r.stderr
    return d


def server_route(procs, dmtls_bin, d, target, *extra):
    port = free_port()
    p = procs.start([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % port,
                     "--target", target, "--ssl-ca", d / "ca.pem", "--ssl-cert", d / "dm.pem",
                     "--ssl-key", d / "dm-key.pem", "--cert-allowed-cn", "dm", *extra],
                    name="dmtls-server")
    wait_listening(port, p)
    return p, port


def echo_through(port, data=b"ping\n"):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                return got
            got += b


def test_server_and_client_routes_use_them(dmtls_bin, procs, dpki):
    with EchoServer() as echo:
        srv, sport = server_route(procs, dmtls_bin, dpki, echo.addr)
        cport = free_port()
        cli = procs.start([dmtls_bin, "client", "--listen", "127.0.0.1:%d" % cport,
                           "--target", "127.0.0.1:%d" % sport, "--server-name", "localhost",
                           "--ssl-ca", dpki / "ca.pem", "--ssl-cert", dpki / "dm.pem",
                           "--ssl-key", dpki / "dm-key.pem", "--cert-allowed-cn", "dm"],
                          name="dmtls-client")
        wait_listening(cport, cli)
        assert echo_through(cport) == b"ping\n"
        srv.wait_log(r"event=close route=server .*cn=dm ")
        # A leaf issued with CN other is refused by the same server route.
        bport = free_port()
        bad = procs.start([dmtls_bin, "client", "--listen", "127.0.0.1:%d" % bport,
                           "--target", "127.0.0.1:%d" % sport, "--ssl-ca", dpki / "ca.pem",
                           "--ssl-cert", dpki / "other.pem", "--ssl-key",
                           dpki / "other-key.pem"], name="dmtls-client-other")
        wait_listening(bport, bad)
        # Refused by the server after the client route's handshake (TLS
        # 1.3): its alert ends the stream, and the plaintext client sees
        # that as an abort, not as an empty answer.
        try:
            got = echo_through(bport)
        except ConnectionResetError:
            got = None
        assert got is None, got
        srv.wait_log(r"event=denied route=server .*cn=other ")


def test_python_ssl_accepts_them(dmtls_bin, procs, dpki):
    import socket
    with EchoServer() as echo:
        srv, sport = server_route(procs, dmtls_bin, dpki, echo.addr)
        ctx = ssl.create_default_context(cafile=str(dpki / "ca.pem"))
        ctx.load_cert_chain(str(dpki / "dm.pem"), str(dpki / "dm-key.pem"))
        for host in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", sport), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    s.sendall(b"py")
                    assert s.recv(10) == b"py"
                    assert s.getpeercert()["subject"] == ((("commonName", "dm"),),)
    # And Python's ssl as a server with them, requiring a client
    # certificate: a dmtls client route and the server accept each other.
    with TLSServer(str(dpki / "dm.pem"), str(dpki / "dm-key.pem"), str(dpki / "ca.pem")) as ts:
        cport = free_port()
        cli = procs.start([dmtls_bin, "client", "--listen", "127.0.0.1:%d" % cport,
                           "--target", ts.addr, "--server-name", "localhost",
                           "--ssl-ca", dpki / "ca.pem", "--ssl-cert", dpki / "dm.pem",
                           "--ssl-key", dpki / "dm-key.pem", "--cert-allowed-cn", "dm"],
                          name="dmtls-client")
        wait_listening(cport, cli)
        assert echo_through(cport, b"hello") == b"hello"
        assert ts.peer_cns == ["dm"]


GO_CLIENT = r"""
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
)

// usage: client ADDR CA CERT KEY SERVERNAME
func main() {
	pair, err := tls.LoadX509KeyPair(os.Args[3], os.Args[4])
	if err != nil {
		fmt.Println("LoadX509KeyPair:", err)
		os.Exit(1)
	}
	pem, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Println("no CA in", os.Args[2])
		os.Exit(1)
	}
	c, err := tls.Dial("tcp", os.Args[1], &tls.Config{RootCAs: roots,
		Certificates: []tls.Certificate{pair}, ServerName: os.Args[5]})
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	st := c.ConnectionState()
	leaf := st.PeerCertificates[0]
	if _, err := c.Write([]byte("go")); err != nil {
		fmt.Println("write:", err)
		os.Exit(1)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	fmt.Printf("ok %s cn=%s alpn=%q echo=%s\n", tls.CipherSuiteName(st.CipherSuite),
		leaf.Subject.CommonName, st.NegotiatedProtocol, buf)
}
"""


@pytest.fixture(scope="module")
def go_client(tmp_path_factory):
    """A Go crypto/tls client, built with Debian's Go: its own GOCACHE and
    GOPATH, GOPROXY=off (nothing to download; the standard library only)."""
    if GO is None:
        pytest.fail("go not found: ./bootstrap installs golang-go", pytrace=False)
    d = tmp_path_factory.mktemp("goclient")
    (d / "main.go").write_text(GO_CLIENT)
    env = {"GOCACHE": str(d / "cache"), "GOPATH": str(d / "gopath"), "GOPROXY": "off",
           "GOFLAGS": "-mod=mod", "GO111MODULE": "off", "CGO_ENABLED": "0",
           "HOME": str(d)}
    r = run([GO, "build", "-o", str(d / "client"), str(d / "main.go")], timeout=300,
            env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "client"


def test_go_crypto_tls_accepts_them(dmtls_bin, procs, dpki, go_client):
    with EchoServer() as echo:
        srv, sport = server_route(procs, dmtls_bin, dpki, echo.addr)
        for name in ("localhost", "127.0.0.1"):
            r = run([go_client, "127.0.0.1:%d" % sport, dpki / "ca.pem", dpki / "dm.pem",
                     dpki / "dm-key.pem", name], timeout=30)
            assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
            assert "cn=dm" in r.stdout and "echo=go" in r.stdout, r.stdout
        # Go presenting the CN=other leaf: the route refuses it.
        r = run([go_client, "127.0.0.1:%d" % sport, dpki / "ca.pem", dpki / "other.pem",
                 dpki / "other-key.pem", "localhost"], timeout=30)
        assert r.returncode == 1, r.stdout
        srv.wait_log(r"event=denied route=server .*cn=other ")


def test_curl_accepts_them(dmtls_bin, procs, dpki, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("through dmtls certs\n")
    hport = free_port()
    web = procs.start(["python3", "-m", "http.server", str(hport), "--bind", "127.0.0.1",
                       "--directory", tmp_path / "www"], name="http", wait_port=hport)
    assert web
    srv, sport = server_route(procs, dmtls_bin, dpki, "127.0.0.1:%d" % hport)
    r = run(["curl", "-sS", "--http1.1", "--max-time", "10", "--cacert", dpki / "ca.pem",
             "--cert", dpki / "dm.pem", "--key", dpki / "dm-key.pem",
             "https://localhost:%d/" % sport], timeout=20)
    assert r.returncode == 0 and r.stdout == "through dmtls certs\n", r.stderr
    r = run(["curl", "-sS", "--http1.1", "--max-time", "10", "--cacert", dpki / "ca.pem",
             "--cert", dpki / "dm.pem", "--key", dpki / "dm-key.pem",
             "https://127.0.0.1:%d/" % sport], timeout=20)
    assert r.returncode == 0 and r.stdout == "through dmtls certs\n", r.stderr
