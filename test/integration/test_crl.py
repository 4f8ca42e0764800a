"""ssl-crl: certificate revocation lists (DESIGN 4, issue 14 "CRLs").

CRLs are made with `openssl ca -gencrl` from this module's own test PKI
(revocations are written to its CA database, so they never leak into the
session PKI other tests use).  A CRL is part of the certificate set: it is
reread for every new connection, a broken one keeps the last good set, one
past its nextUpdate refuses the peers of its CA (crl_expired).
"""

import datetime
import json
import os
import re
import socket
import subprocess

import pytest

from backends import EchoServer
from conftest import free_port
from mysqlfake import FakeClient, FakeMySQLServer
from pki import PKI
from routes import (conf_text, expect_config_error, final_line, http_get, replace_file,
                    start_route, start_run)
from tlsclient import tls_refused

REVOKED = r"certificate revoked \(serial [0-9A-F]+\)"


@pytest.fixture(scope="module")
def cpki(tmp_path_factory):
    """A PKI of this module's own: leaves dm (allowed) and gone (CN dm,
    revoked in the CA database; in a CRL only when one is generated)."""
    p = PKI(tmp_path_factory.mktemp("crl-pki"), algo="ec")
    p.leaf("gone", "dm")
    ca_cmd(p, "ca", "-revoke", p.path("gone"))
    return p


def ca_cmd(pki, ca, *args):
    """openssl ca with CA `ca`'s config and key; returns the result."""
    state = os.path.join(pki.dir, ".state", ca)
    r = subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(state, "ca.cnf"),
                        "-cert", pki.path(ca), "-keyfile", pki.key(ca)] + list(args),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


def utc(delta):
    t = datetime.datetime.now(datetime.timezone.utc) + delta
    return t.strftime("%Y%m%d%H%M%SZ")


def gencrl(pki, out, ca="ca", next_update=datetime.timedelta(days=30),
           last_update=datetime.timedelta(hours=-1), der=False):
    """Write CA `ca`'s CRL (every serial its database has revoked) to out,
    PEM or DER; returns out."""
    pem = out + ".tmp.pem"
    ca_cmd(pki, ca, "-gencrl", "-out", pem, "-crl_lastupdate", utc(last_update),
           "-crl_nextupdate", utc(next_update))
    if der:
        subprocess.run(["openssl", "crl", "-in", pem, "-outform", "DER", "-out", out],
                       check=True, timeout=30)
    else:
        os.replace(pem, out)
    return out


def serial_of(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                       capture_output=True, text=True, check=True, timeout=30)
    return r.stdout.strip().split("=", 1)[1].upper()


def unrevoke(pki, name):
    """Mark leaf `name` valid again in the CA database (openssl has no
    command to lift a revocation); returns the database's old text."""
    db = os.path.join(pki.dir, ".state", "ca", "index.txt")
    serial = serial_of(pki.path(name))
    old = open(db).read()
    lines = []
    for line in old.splitlines():
        f = line.split("\t")
        if f[3].upper() == serial:
            f[0], f[2] = "V", ""
        lines.append("\t".join(f))
    with open(db, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return old


def server(procs, dmtls_bin, pki, echo, *crls, extra=()):
    port = free_port()
    args = []
    for c in crls:
        args += ["--ssl-crl", c]
    d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr, *args, *extra,
                    allowed="dm", name="dmtls")
    return d, port


def test_revoked_client_refused_on_server_route(dmtls_bin, cpki, procs, tmp_path):
    """A client whose leaf is in the CRL is refused with certificate_revoked
    (Python sees "certificate revoked"), logged event=denied with the serial
    and counted as a revocation denial; a client not in it is served."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    status = free_port()
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl, extra=("--status",
                                                                  "127.0.0.1:%d" % status))
        why, peer = tls_refused(port, cpki, cert="gone", with_peer=True)
        assert why is not None and "certificate revoked" in why, why
        rec = final_line(d, peer)
        assert rec["event"] == "denied", rec
        assert re.fullmatch(REVOKED, rec["reason"]), rec
        assert serial_of(cpki.path("gone")).lstrip("0") in rec["reason"], rec
        assert tls_refused(port, cpki, cert="dm") is None
        assert echo.accepted == 1
        _, _, m = http_get(status, "/metrics")
        assert 'dmtls_denials_total{route="server",reason="revoked"} 1' in m, m
        assert 'dmtls_connections_total{route="server",result="denied"} 1' in m, m


def test_go_client_sees_revoked_certificate(dmtls_bin, cpki, procs, tmp_path, goclient):
    """Go 1.19 (as DM is built) reports the alert as "revoked certificate"."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl)
        r = subprocess.run([goclient, "127.0.0.1:%d" % port, cpki.ca, cpki.path("gone"),
                            cpki.key("gone"), "localhost"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "revoked certificate" in r.stdout, (r.stdout, d.log())
        assert echo.accepted == 0


def test_der_crl_and_several_files(dmtls_bin, cpki, procs, tmp_path):
    """A DER CRL works like a PEM one, and --ssl-crl repeats (a CRL of a
    second CA of ssl-ca beside it)."""
    cpki.new_ca("ca3", cn="dmtls crl test CA 3")
    cas = cpki.bundle("cas-13", "ca", "ca3")
    der = gencrl(cpki, str(tmp_path / "ca.der"), der=True)
    crl3 = gencrl(cpki, str(tmp_path / "ca3.crl"), ca="ca3")
    with EchoServer() as echo:
        port = free_port()
        d = start_route(procs, dmtls_bin, cpki, "server", port, echo.addr, "--ssl-crl", der,
                        "--ssl-crl", crl3, ca=cas, allowed="dm", name="dmtls")
        assert tls_refused(port, cpki, cert="gone") is not None
        d.wait_log(REVOKED)
        assert tls_refused(port, cpki, cert="dm") is None


def test_new_crl_takes_effect_on_next_connection(dmtls_bin, cpki, procs, tmp_path):
    """A CRL that no longer lists the serial, put in place with rename,
    lets that client in on its next connection, without a reload; listing
    it again refuses it again."""
    crl = str(tmp_path / "ca.crl")
    gencrl(cpki, crl)
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl)
        assert tls_refused(port, cpki, cert="gone") is not None
        db = os.path.join(cpki.dir, ".state", "ca", "index.txt")
        old = unrevoke(cpki, "gone")
        try:
            gencrl(cpki, crl + ".new")
            os.replace(crl + ".new", crl)
            assert tls_refused(port, cpki, cert="gone") is None, d.log()
        finally:
            with open(db, "w") as fh:
                fh.write(old)
        gencrl(cpki, crl + ".new")
        os.replace(crl + ".new", crl)
        assert tls_refused(port, cpki, cert="gone") is not None
        assert len(re.findall(r"event=cert_reloaded", d.log())) == 2, d.log()


def test_half_written_crl_keeps_last_good(dmtls_bin, cpki, procs, tmp_path):
    """A CRL cut in half keeps the last good set (the revoked client stays
    refused, others are served), is logged once naming the file, however
    many connections meet it, and counted as a reload error."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    good = open(crl, "rb").read()
    status = free_port()
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl,
                         extra=("--status", "127.0.0.1:%d" % status))
        replace_file(crl, good[:len(good) // 2])
        for _ in range(3):
            assert tls_refused(port, cpki, cert="gone") is not None
            assert tls_refused(port, cpki, cert="dm") is None
        fails = re.findall(r"^.*event=cert_reload_failed.*$", d.log(), re.M)
        assert len(fails) == 1, d.log()
        assert "key=ssl-crl" in fails[0] and crl in fails[0], fails[0]
        assert "cut short" in fails[0] or "half-written" in fails[0], fails[0]
        _, _, m = http_get(status, "/metrics")
        assert re.search(r'dmtls_cert_reloads_total\{route="server",result="error"\} '
                         r'([6-9]|\d\d)', m), m


def test_expired_crl_refuses_with_its_reason(dmtls_bin, cpki, procs, tmp_path):
    """A CRL past its nextUpdate fails closed: even a client it does not
    list is refused, with reason crl_expired (logged and counted)."""
    crl = gencrl(cpki, str(tmp_path / "old.crl"),
                 last_update=datetime.timedelta(days=-10),
                 next_update=datetime.timedelta(days=-1))
    status = free_port()
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl,
                         extra=("--status", "127.0.0.1:%d" % status))
        why, peer = tls_refused(port, cpki, cert="dm", with_peer=True)
        assert why is not None
        rec = final_line(d, peer)
        assert rec["event"] == "denied" and rec["reason"].startswith("crl_expired"), rec
        assert echo.accepted == 0
        _, _, m = http_get(status, "/metrics")
        assert 'dmtls_denials_total{route="server",reason="crl_expired"} 1' in m, m
        d.wait_log(r"event=crl_expired .*%s" % re.escape(crl))


def test_crl_of_another_ca_is_an_error_at_start(dmtls_bin, cpki, tmp_path):
    """A CRL signed by a CA that is not in ssl-ca stops the start (exit 2)
    with a message naming the file and the cause."""
    crl = gencrl(cpki, str(tmp_path / "ca2.crl"), ca="ca2")
    r = subprocess.run([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % free_port(),
                        "--target", "127.0.0.1:9", "--ssl-ca", cpki.ca, "--ssl-cert",
                        cpki.path("dm"), "--ssl-key", cpki.key("dm"), "--ssl-crl", crl],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "ssl-crl %s" % crl in r.stderr, r.stderr
    assert "none of the CAs in ssl-ca" in r.stderr, r.stderr


def test_revoked_server_refused_on_client_route(dmtls_bin, cpki, procs, tmp_path):
    """A client route whose server presents a revoked leaf refuses the
    connection (event=denied, reason revoked) and sends nothing to it."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    sport, cport = free_port(), free_port()
    with EchoServer() as echo:
        procs.start([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % sport,
                     "--target", echo.addr, "--ssl-ca", cpki.ca, "--ssl-cert",
                     cpki.path("gone"), "--ssl-key", cpki.key("gone")],
                    name="server", wait_port=sport)
        c = start_route(procs, dmtls_bin, cpki, "client", cport, "127.0.0.1:%d" % sport,
                        "--ssl-crl", crl, allowed="dm", name="client")
        with socket.create_connection(("127.0.0.1", cport), timeout=10) as s:
            s.sendall(b"hello")
            try:
                got = s.recv(16)
            except ConnectionResetError:
                got = b""
            assert got == b""
        c.wait_log(r"event=denied route=client .*reason=\"%s\"" % REVOKED)
        assert echo.accepted == 0


def test_revoked_server_refused_on_mysql_route(dmtls_bin, cpki, procs, tmp_path):
    """A mysql route whose server presents a revoked leaf answers the
    MySQL client with dmtls's ERR naming the revocation."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    with FakeMySQLServer(cpki.path("gone"), cpki.key("gone"), ca=cpki.ca,
                         users={"u": b"pw"}) as fake:
        fake.expect_error(r".*")
        port = free_port()
        d = start_route(procs, dmtls_bin, cpki, "mysql", port, "127.0.0.1:%d" % fake.port,
                        "--ssl-crl", crl, allowed="dm", name="mysql")
        with FakeClient(port) as c:
            c.read_greeting()
            c.send(1, c.login_payload("u", b"\0" * 20, b"mysql_native_password"))
            how, what = c.read_outcome()
        assert how == "err", (how, what, d.log())
        assert "dmtls" in str(what) and "revoked" in str(what), what
        d.wait_log(r"event=denied route=mysql .*reason=\"%s\"" % REVOKED)


def test_check_prints_next_update_and_warns(dmtls_bin, cpki, tmp_path):
    """dmtls check prints each CRL's issuer, entries and nextUpdate, and
    warns when nextUpdate is within 7 days (not when it is further)."""
    soon = gencrl(cpki, str(tmp_path / "soon.crl"), next_update=datetime.timedelta(days=3))
    late = gencrl(cpki, str(tmp_path / "late.crl"), next_update=datetime.timedelta(days=20))
    base = [dmtls_bin, "check", "server", "--listen", "127.0.0.1:%d" % free_port(),
            "--target", "127.0.0.1:9", "--ssl-ca", cpki.ca, "--ssl-cert", cpki.path("dm"),
            "--ssl-key", cpki.key("dm"), "--cert-allowed-cn", "dm", "--ssl-crl"]
    r = subprocess.run(base + [soon], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert re.search(r'crl %s issuer="CN=dmtls test CA" entries=1 next_update=20\d\d-'
                     % re.escape(soon), r.stdout), r.stdout
    assert re.search(r"warning: .*ssl-crl %s reaches its nextUpdate within 7 days"
                     % re.escape(soon), r.stdout), r.stdout
    r = subprocess.run(base + [late], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "next_update=" in r.stdout and "warning: server: ssl-crl" not in r.stdout, r.stdout


def test_metrics_and_status_fields(dmtls_bin, cpki, procs, tmp_path):
    """/metrics has dmtls_crl_next_update_seconds{file} and /status lists
    each CRL with issuer, thisUpdate, nextUpdate and its number of entries;
    set in the config file's security group."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"), next_update=datetime.timedelta(days=9))
    status = free_port()
    with EchoServer() as echo:
        port = free_port()
        conf = tmp_path / "dmtls.conf"
        conf.write_text(conf_text(cpki, [("api", port, echo.addr, None)],
                                  status_port=status)
                        .replace('cert-allowed-cn = ["dm"];',
                                 'cert-allowed-cn = ["dm"];\n  ssl-crl = ["%s"];' % crl, 1))
        start_run(procs, dmtls_bin, str(conf))
        assert tls_refused(port, cpki, cert="gone") is not None
        _, _, m = http_get(status, "/metrics")
        got = re.search(r'^dmtls_crl_next_update_seconds\{route="api",file="%s"\} (\d+)$'
                        % re.escape(crl), m, re.M)
        assert got, m
        nu = int(got.group(1))
        want = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=9)
        assert abs(nu - want.timestamp()) < 120, (nu, want)
        _, _, body = http_get(status, "/status")
        cert = json.loads(body)["routes"][0]["certificate"]
        assert cert["files"]["ssl-crl"] == [crl], cert
        (c,) = cert["crls"]
        assert c["file"] == crl and c["issuer"] == "CN=dmtls test CA", c
        assert c["entries"] == 1 and c["expired"] is False, c
        assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", c["this_update"]), c
        assert c["next_update"] == datetime.datetime.fromtimestamp(
            nu, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), c


def test_peer_of_a_ca_without_crl_is_refused(dmtls_bin, cpki, procs, tmp_path):
    """ssl-ca holds two CAs, ssl-crl the CRL of one: a peer of the other is
    refused (reason crl_missing), as OpenSSL's CRL check does."""
    cpki.new_ca("ca4", cn="dmtls crl test CA 4")
    cpki.leaf("of4", "dm", ca="ca4")
    cas = cpki.bundle("cas-14", "ca", "ca4")
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    with EchoServer() as echo:
        port = free_port()
        d = start_route(procs, dmtls_bin, cpki, "server", port, echo.addr, "--ssl-crl", crl,
                        ca=cas, allowed="dm", name="dmtls")
        why, peer = tls_refused(port, cpki, cert="of4", with_peer=True)
        assert why is not None
        rec = final_line(d, peer)
        assert rec["event"] == "denied" and rec["reason"].startswith("crl_missing"), rec
        assert tls_refused(port, cpki, cert="dm") is None


def test_config_ssl_crl_forms(dmtls_bin, cpki, procs, tmp_path):
    """ssl-crl takes a string or a list; a route's ssl-crl = [] drops the
    inherited one; "" names no file and is an error with FILE:LINE."""
    crl = gencrl(cpki, str(tmp_path / "ca.crl"))
    with EchoServer() as echo:
        p1, p2 = free_port(), free_port()
        conf = tmp_path / "dmtls.conf"
        conf.write_text(conf_text(cpki, [("on", p1, echo.addr, None), ("off", p2, echo.addr, None)],
                                  extra_route_lines={"off": ["security = { ssl-crl = []; };"]})
                        .replace('cert-allowed-cn = ["dm"];',
                                 'cert-allowed-cn = ["dm"];\n  ssl-crl = "%s";' % crl, 1))
        start_run(procs, dmtls_bin, str(conf))
        assert tls_refused(p1, cpki, cert="gone") is not None
        assert tls_refused(p2, cpki, cert="gone") is None
    bad = tmp_path / "bad.conf"
    text = conf_text(cpki, [("on", free_port(), "127.0.0.1:9", None)]).replace(
        'cert-allowed-cn = ["dm"];', 'cert-allowed-cn = ["dm"];\n  ssl-crl = ["%s", ""];' % crl, 1)
    bad.write_text(text)
    expect_config_error(dmtls_bin, str(bad), text, "ssl-crl", "ssl-crl", "names no file")


def test_crl_in_its_own_folder_is_reread_under_the_sandbox(dmtls_bin, cpki, procs, tmp_path):
    """The sandbox confines reading to the folders of the route's files
    (route_conf_files): a CRL kept in a folder of its own is one of them,
    so a new CRL put there is read on the next connection, not refused by
    Landlock with the last good set kept."""
    crldir = tmp_path / "crl-only"
    crldir.mkdir()
    crl = str(crldir / "ca.crl")
    db = os.path.join(cpki.dir, ".state", "ca", "index.txt")
    old = unrevoke(cpki, "gone")
    try:
        gencrl(cpki, crl)
    finally:
        with open(db, "w") as fh:
            fh.write(old)
    with EchoServer() as echo:
        d, port = server(procs, dmtls_bin, cpki, echo, crl)
        assert tls_refused(port, cpki, cert="gone") is None, d.log()
        gencrl(cpki, crl + ".new")
        os.replace(crl + ".new", crl)
        assert tls_refused(port, cpki, cert="gone") is not None, d.log()
        d.wait_log(REVOKED)
