"""`mysql` routes (DESIGN.md section 2, "mysql"; peers.md C.4-C.5).

A plaintext MySQL client talks to dmtls; dmtls reads the server's greeting,
hides CLIENT_SSL from the client, sends the server an SSLRequest built from
the client's login, upgrades the server leg to TLS (verified like a client
route), renumbers sequence ids until the auth phase ends and then relays
bytes untouched.  caching_sha2_password full authentication is mediated with
dmtls's own RSA key.  Everything dmtls itself refuses reaches the client as
an ERR packet 1043 / SQLSTATE 08S01 whose message starts
"dmtls (route NAME): ".

Two kinds of peers:
- a real MariaDB 10.11 (mysqld.py; module-scoped): one requiring TLS
  (require_secure_transport=ON, server certificate = the PKI's dm leaf) and
  one without TLS at all; clients are the mariadb CLI and PyMySQL;
- a fake MySQL server and raw client in Python (mysqlfake.py) for
  caching_sha2_password, TiDB-style full authentication and malformed
  packets.
"""

import hashlib
import os
import re
import shutil
import socket

import pymysql
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import routes
from backends import pattern, wait_until
from conftest import free_port, open_connections
from mysqld import mariadb, mariadb_cli, mariadb_plain  # noqa: F401 (fixtures)
from mysqlfake import (FakeClient, FakeMySQLServer, RecordingProxy, Ed25519Auth,
                       SERVER_CAPS, SSL, caching_sha2_scramble, err, greeting,
                       login_payload, make_nonce, native_scramble, packet, parse_err)

ROUTE = "mysql"          # the default route name of `dmtls mysql`


# ---- helpers --------------------------------------------------------------



def start_route(procs, dmtls_bin, pki, target_port, *extra, cert="dm", port=None,
                name="dmtls-mysql"):
    """Start `dmtls mysql` to 127.0.0.1:target_port trusting the test CA;
    cert: a PKI leaf name, a (cert, key) pair of paths, or None.
    Returns (Proc, listen port)."""
    port = port or free_port()
    p = routes.start_route(procs, dmtls_bin, pki, "mysql", port,
                           "127.0.0.1:%d" % target_port, *extra, cert=cert, name=name)
    return p, port


def assert_dmtls_err(err_tuple, *needles, log="", route=ROUTE):
    """err_tuple = (code, sqlstate, message) must be dmtls's own ERR."""
    code, state, msg = err_tuple
    assert (code, state) == (1043, "08S01"), "not dmtls's ERR: %r\n%s" % (err_tuple, log)
    assert msg.startswith("dmtls (route %s): " % route), "%r\n%s" % (msg, log)
    for n in needles:
        assert re.search(n, msg, re.I), "ERR message %r lacks %r\n%s" % (msg, n, log)


def pymysql_connect(port, user="u", password="pw", **kw):
    kw.setdefault("connect_timeout", 10)
    kw.setdefault("read_timeout", 30)
    kw.setdefault("write_timeout", 30)
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, **kw)


def query(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return cur.fetchall()


def ssl_status(conn):
    return dict(query(conn, "SHOW STATUS LIKE 'Ssl_%%'"))


# ---- with a real MariaDB ----------------------------------------------------

def test_mariadb_cli_through_mysql_route(dmtls_bin, pki, procs, mariadb):
    """`mariadb --skip-ssl` through dmtls runs queries and the server sees a
    TLS session (Ssl_cipher set); the same client and account straight to
    the server without TLS are refused (require_secure_transport works), but
    accepted with TLS."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    r = mariadb_cli(port, "u", "pw", "SHOW STATUS LIKE 'Ssl_cipher'; SELECT CURRENT_USER()")
    assert r.returncode == 0, "through dmtls: %s\n%s" % (r.stderr, d.log())
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Ssl_cipher\t") and lines[0].split("\t")[1].strip(), r.stdout
    assert lines[1] == "u@%", r.stdout
    d.wait_log(r"event=close route=%s .*tls=TLSv1\.3 .*reason=eof" % ROUTE)

    direct = mariadb_cli(mariadb.port, "u", "pw", "SELECT 1")
    assert direct.returncode != 0, "plaintext straight to MariaDB was accepted: %s" % direct.stdout
    assert "1045" in direct.stderr, direct.stderr
    direct_tls = mariadb_cli(mariadb.port, "u", "pw", "SELECT 1", "--ssl", "--ssl-ca=" + pki.ca)
    assert direct_tls.returncode == 0 and direct_tls.stdout.strip() == "1", direct_tls.stderr


def test_pymysql_through_mysql_route(dmtls_bin, pki, procs, mariadb):
    """PyMySQL without ssl= through dmtls: queries work and the server reports
    TLSv1.3 on the session; PyMySQL straight to the server without TLS is
    refused."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    conn = pymysql_connect(port)
    try:
        st = ssl_status(conn)
        assert st.get("Ssl_version") == "TLSv1.3", st
        assert st.get("Ssl_cipher"), st
        assert query(conn, "SELECT CURRENT_USER(), 6*7") == (("u@%", 42),)
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError) as ei:
        pymysql_connect(mariadb.port).close()
    assert ei.value.args[0] == 1045, ei.value.args


def test_ed25519_auth_switch_mariadb_cli(dmtls_bin, pki, procs, mariadb):
    """An ed25519 account (server default plugin mysql_native_password, so
    the server switches the client to client_ed25519) logs in through dmtls
    with the mariadb CLI, over TLS; a wrong password is refused."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    r = mariadb_cli(port, "ed", "edpw", "SELECT CURRENT_USER(); SHOW STATUS LIKE 'Ssl_version'")
    assert r.returncode == 0, "%s\n%s" % (r.stderr, d.log())
    assert r.stdout.splitlines() == ["ed@%", "Ssl_version\tTLSv1.3"], r.stdout
    bad = mariadb_cli(port, "ed", "nope", "SELECT 1")
    assert bad.returncode != 0 and "1045" in bad.stderr, (bad.stdout, bad.stderr)


def test_ed25519_auth_switch_pymysql(dmtls_bin, pki, procs, mariadb):
    """PyMySQL with a client_ed25519 handler: the greeting dmtls forwards
    offers mysql_native_password, the server's AuthSwitchRequest to
    client_ed25519 crosses dmtls (the handler runs) and the login succeeds."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    calls = []

    class Handler(Ed25519Auth):
        def authenticate(self, pkt):
            calls.append(self.con._auth_plugin_name)
            return super().authenticate(pkt)

    plugins = {b"client_ed25519": Handler, "client_ed25519": Handler}
    conn = pymysql_connect(port, "ed", "edpw", auth_plugin_map=plugins)
    try:
        assert query(conn, "SELECT CURRENT_USER()") == (("ed@%",),)
        assert ssl_status(conn).get("Ssl_version") == "TLSv1.3"
    finally:
        conn.close()
    assert calls == ["mysql_native_password"], calls


def test_wrong_password_gets_server_error_unchanged(dmtls_bin, pki, procs, mariadb):
    """A wrong password through dmtls gets the server's own ERR 1045 (same
    code, SQLSTATE and text as straight to the server over TLS), not one of
    dmtls's."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    direct = mariadb_cli(mariadb.port, "u", "wrong", "SELECT 1", "--ssl", "--ssl-ca=" + pki.ca)
    via = mariadb_cli(port, "u", "wrong", "SELECT 1")
    assert via.returncode != 0
    assert via.stderr.strip().startswith("ERROR 1045 (28000): Access denied for user 'u'@"), \
        via.stderr
    assert via.stderr == direct.stderr, (via.stderr, direct.stderr)
    assert "dmtls" not in via.stderr
    with pytest.raises(pymysql.err.OperationalError) as ei:
        pymysql_connect(port, "u", "wrong")
    assert ei.value.args[0] == 1045 and "dmtls" not in ei.value.args[1], ei.value.args


def test_64mib_blob_roundtrip(dmtls_bin, pki, procs, mariadb):
    """A 64 MiB blob inserted through dmtls and selected back is byte-exact
    (the server's SHA2 of it matches too)."""
    size = 64 << 20
    blob = pattern(size, "mysql-64mib")
    digest = hashlib.sha256(blob).hexdigest()
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    conn = pymysql_connect(port, database="dmtest", max_allowed_packet=256 << 20,
                           read_timeout=60, write_timeout=60)
    try:
        query(conn, "CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=MyISAM")
        esc = (blob.replace(b"\\", b"\\\\").replace(b"'", b"\\'")
               .replace(b"\0", b"\\0").replace(b"\x1a", b"\\Z"))
        conn.query(b"INSERT INTO blobs VALUES (1, _binary'" + esc + b"')")
        del esc
        assert query(conn, "SELECT LENGTH(b), SHA2(b, 256) FROM blobs WHERE id = 1") == \
            ((size, digest),)
        got = query(conn, "SELECT b FROM blobs WHERE id = 1")[0][0]
        assert len(got) == size
        assert hashlib.sha256(got).hexdigest() == digest
        query(conn, "DROP TABLE blobs")
    finally:
        conn.close()


def test_200_short_connections_no_fd_leak(dmtls_bin, pki, procs, mariadb):
    """200 sequential connect / query / close through dmtls all work, and
    dmtls's open file descriptors come back to the baseline afterwards."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port)
    warm = pymysql_connect(port)
    query(warm, "SELECT 1")
    warm.close()
    d.wait_log(r"event=close route=%s " % ROUTE)
    wait_until(lambda: not open_connections(d.pid), 10, "dmtls to hold no connection")
    baseline = d.fd_count()
    for i in range(200):
        conn = pymysql_connect(port)
        try:
            assert query(conn, "SELECT %s", i) == ((i,),)
        finally:
            conn.close()
    wait_until(lambda: len(re.findall(r"event=close route=%s " % ROUTE, d.log())) >= 201,
               10, "201 close lines")
    try:
        wait_until(lambda: d.fd_count() <= baseline, 5, "fd count back to baseline")
    except AssertionError:
        raise AssertionError("dmtls has %d fds, baseline %d: %s" % (
            d.fd_count(), baseline, sorted(os.readlink("/proc/%d/fd/%s" % (d.pid, f))
                                           for f in os.listdir("/proc/%d/fd" % d.pid))))
    assert d.proc.poll() is None


def test_server_without_tls_gets_clear_err(dmtls_bin, pki, procs, mariadb_plain):
    """Target = a MariaDB without TLS: the client gets ERR 1043 naming dmtls
    and TLS, and neither the user name nor the password ever reaches the
    server (recorded by a relay between dmtls and the server)."""
    with RecordingProxy(mariadb_plain.port) as rec:
        d, port = start_route(procs, dmtls_bin, pki, rec.port)
        with FakeClient(port) as c:
            how, what = c.read_outcome()
        assert how == "err", (how, what, d.log())
        assert_dmtls_err(what, r"\bTLS\b", log=d.log())
        r = mariadb_cli(port, "leaky_user", "leaky_secret_pw", "SELECT 1")
        assert r.returncode != 0
        assert re.search(r"ERROR 1043 \(08S01\).*dmtls \(route %s\): .*TLS" % ROUTE,
                         r.stderr), r.stderr
        d.wait_log(r"event=\w+ route=%s .*reason=.*TLS" % ROUTE)
        assert rec.connections == 2
        assert rec.to_client[4:5] == b"\x0a", "the relay saw no greeting: %r" % rec.to_client[:40]
        sent = bytes(rec.to_server)
        assert b"leaky_user" not in sent and b"leaky_secret_pw" not in sent, sent
        assert sent == b"", "dmtls sent the TLS-less server %r" % sent[:200]


def test_server_cn_not_allowed_clear_err(dmtls_bin, pki, procs, mariadb):
    """--cert-allowed-cn other while the server's leaf is CN dm: the client
    gets dmtls's ERR 1043 saying the identity is not allowed, then EOF."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port, "--cert-allowed-cn", "other")
    with FakeClient(port) as c:
        g = c.read_greeting()
        c.send(1, c.login_payload("u", native_scramble(b"pw", g["nonce"]),
                                  b"mysql_native_password"))
        how, what = c.read_outcome()
        assert how == "err", (how, what, d.log())
        assert_dmtls_err(what, r"not allowed", log=d.log())
        assert c.read_outcome(timeout=5)[0] == "eof"
    d.wait_log(r"event=(denied|handshake_failed|conn_failed) route=%s .*cn=dm " % ROUTE)
    r = mariadb_cli(port, "u", "pw", "SELECT 1")
    assert r.returncode != 0 and "ERROR 1043 (08S01)" in r.stderr and "dmtls" in r.stderr, \
        r.stderr


def test_server_name_mismatch_clear_err(dmtls_bin, pki, procs, mariadb):
    """--server-name db.example while the server's SANs are localhost and
    127.0.0.1: the client gets dmtls's ERR 1043 about the certificate, then
    EOF; --server-name localhost works."""
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port, "--server-name", "db.example")
    with FakeClient(port) as c:
        g = c.read_greeting()
        c.send(1, c.login_payload("u", native_scramble(b"pw", g["nonce"]),
                                  b"mysql_native_password"))
        how, what = c.read_outcome()
        assert how == "err", (how, what, d.log())
        assert_dmtls_err(what, r"certificate", r"name", log=d.log())
        assert c.read_outcome(timeout=5)[0] == "eof"
    ok, ok_port = start_route(procs, dmtls_bin, pki, mariadb.port, "--server-name", "localhost",
                              name="dmtls-mysql-ok")
    r = mariadb_cli(ok_port, "u", "pw", "SELECT 1")
    assert r.returncode == 0 and r.stdout.strip() == "1", (r.stderr, ok.log())


def test_client_cert_rotation_next_login(dmtls_bin, pki, procs, mariadb, tmp_path):
    """REQUIRE SUBJECT accounts: with the dm leaf in --ssl-cert/--ssl-key,
    user_dm logs in and user_dm2 does not; after the files are replaced
    (os.replace) by a CN dm2 leaf of the same CA, the next login works as
    user_dm2 and no longer as user_dm, without restarting dmtls."""
    dm2_cert, dm2_key = pki.leaf("mysql-dm2", "dm2")
    cert, key = str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem")
    shutil.copyfile(pki.path("dm"), cert)
    shutil.copyfile(pki.key("dm"), key)
    d, port = start_route(procs, dmtls_bin, pki, mariadb.port, cert=(cert, key))

    def login(user):
        return mariadb_cli(port, user, "pw", "SELECT CURRENT_USER()")

    r = login("user_dm")
    assert r.returncode == 0 and r.stdout.strip() == "user_dm@%", (r.stderr, d.log())
    r = login("user_dm2")
    assert r.returncode != 0 and "1045" in r.stderr, (r.stdout, r.stderr)

    for src, dst in ((dm2_key, key), (dm2_cert, cert)):
        tmp = dst + ".new"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    r = login("user_dm2")
    assert r.returncode == 0 and r.stdout.strip() == "user_dm2@%", (r.stderr, d.log())
    r = login("user_dm")
    assert r.returncode != 0 and "1045" in r.stderr, (r.stdout, r.stderr)


def test_config_file_mysql_routes(dmtls_bin, pki, procs, mariadb, mariadb_plain, tmp_path):
    """`kind = "mysql"` routes in a config file (`dmtls run -c`): one to the
    TLS MariaDB (cert-allowed-cn dm, server-name localhost) carries a login
    over TLS and logs under its name; one to the TLS-less MariaDB refuses
    with an ERR naming that route."""
    p1, p2 = free_port(), free_port()
    conf = tmp_path / "dmtls.conf"
    conf.write_text("""
security = {
  ssl-ca = "%(ca)s"; ssl-cert = "%(cert)s"; ssl-key = "%(key)s";
  cert-allowed-cn = ["dm"];
};
routes = (
  { name = "upstream"; kind = "mysql"; listen = "127.0.0.1:%(p1)d";
    target = "127.0.0.1:%(t1)d"; security = { server-name = "localhost"; }; },
  { name = "no-tls"; kind = "mysql"; listen = "127.0.0.1:%(p2)d";
    target = "127.0.0.1:%(t2)d"; }
);
""" % {"ca": pki.ca, "cert": pki.path("dm"), "key": pki.key("dm"), "p1": p1, "p2": p2,
       "t1": mariadb.port, "t2": mariadb_plain.port})
    d = routes.start_run(procs, dmtls_bin, conf)
    r = mariadb_cli(p1, "u", "pw", "SHOW STATUS LIKE 'Ssl_version'")
    assert r.returncode == 0 and r.stdout.strip() == "Ssl_version\tTLSv1.3", (r.stderr, d.log())
    d.wait_log(r"event=close route=upstream .*cn=dm .*tls=TLSv1\.3")
    with FakeClient(p2) as c:
        how, what = c.read_outcome()
    assert how == "err", (how, what, d.log())
    assert_dmtls_err(what, r"\bTLS\b", log=d.log(), route="no-tls")


# ---- with the fake MySQL server ---------------------------------------------

@pytest.fixture
def fake(pki):
    """A fake caching_sha2_password server (server certificate: dm leaf)."""
    with FakeMySQLServer(pki.path("dm"), pki.key("dm"), ca=pki.ca,
                         users={"u": b"pw"}) as srv:
        yield srv


def test_caching_sha2_fast_auth_pymysql(dmtls_bin, pki, procs, fake):
    """Fast auth: the scramble crosses dmtls untouched (the fake server checks
    it against the greeting's nonce), 01 03 + OK come back, a query works;
    the SSLRequest the server saw carries the client's flags plus CLIENT_SSL
    and the login arrives as seq 2 over TLS."""
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    conn = pymysql_connect(port)
    try:
        assert conn.get_server_info() == "8.0.36-fake"
        assert not conn.server_capabilities & SSL, "dmtls did not hide CLIENT_SSL"
        assert query(conn, "SELECT 'hello'") == (("u|SELECT 'hello'",),)
    finally:
        conn.close()
    res = fake.wait_results(1)[0]
    assert fake.errors == [], fake.errors
    assert res["auth"] == "ok" and res["full_auth_payload"] is None, res
    assert res["tls"] == "TLSv1.3" and res["client_cn"] == "dm", res
    assert res["login_seq"] == 2 and res["sslreq_seq"] == 1
    assert res["login"]["user"] == "u" and res["login"]["plugin"] == "caching_sha2_password"
    assert res["sslreq"][:4] == (res["login"]["caps"] | SSL).to_bytes(4, "little")
    assert res["sslreq"][4:32] == bytes(conn_sslreq_tail(res)), res["sslreq"]


def conn_sslreq_tail(res):
    """Bytes 4..31 the SSLRequest should carry: the login's max packet size,
    charset and 23 zero bytes."""
    lg = res["login"]
    return lg["max_packet"].to_bytes(4, "little") + bytes([lg["charset"]]) + b"\0" * 23


def test_caching_sha2_full_auth_key_request(dmtls_bin, pki, procs, fake):
    """Full auth (01 04): PyMySQL, on what it thinks is plaintext, asks for
    the public key; dmtls answers with its own RSA key, decrypts the
    password and the server receives exactly "pw\\0" over TLS."""
    fake.mode = "full"
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    conn = pymysql_connect(port)
    try:
        assert query(conn, "SELECT 1") == (("u|SELECT 1",),)
        key = serialization.load_pem_public_key(conn.server_public_key)
        assert isinstance(key, rsa.RSAPublicKey)
    finally:
        conn.close()
    res = fake.wait_results(1)[0]
    assert fake.errors == [], fake.errors
    assert res["full_auth_payload"] == b"pw\0", res
    assert res["auth"] == "ok"


def test_caching_sha2_full_auth_mariadb_cli(dmtls_bin, pki, procs, fake):
    """The same full authentication with the mariadb CLI (Connector/C's
    caching_sha2_password plugin): the server gets the cleartext password."""
    fake.mode = "full"
    fake.users["cli"] = b"cli-secret"
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    r = mariadb_cli(port, "cli", "cli-secret", "SELECT 1", "--default-auth=caching_sha2_password")
    assert r.returncode == 0 and r.stdout.strip() == "cli|SELECT 1", (r.stderr, d.log())
    res = fake.wait_results(1)[0]
    assert fake.errors == [], fake.errors
    assert res["full_auth_payload"] == b"cli-secret\0", res


def test_auth_switch_to_caching_sha2_uses_new_nonce(dmtls_bin, pki, procs, fake):
    """The server greets with mysql_native_password, then switches to
    caching_sha2_password with a fresh nonce and asks for full auth: dmtls
    undoes the RSA password's XOR with the switch's nonce, so the server
    gets the right cleartext."""
    fake.mode = "full"
    fake.plugin = b"mysql_native_password"
    fake.switch_to = b"caching_sha2_password"
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    conn = pymysql_connect(port)
    try:
        assert query(conn, "SELECT 2") == (("u|SELECT 2",),)
    finally:
        conn.close()
    res = fake.wait_results(1)[0]
    assert fake.errors == [], fake.errors
    assert res["full_auth_payload"] == b"pw\0", res


def test_preconfigured_server_key_gets_clear_err(dmtls_bin, pki, procs, fake):
    """A client that encrypts the password with a server key it already has
    (PyMySQL server_public_key=, some other RSA key) gets dmtls's ERR 1043
    telling it to let the client request the key; the server never gets a
    password."""
    fake.mode = "full"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other.public_bytes(serialization.Encoding.PEM,
                             serialization.PublicFormat.SubjectPublicKeyInfo)
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    with pytest.raises(pymysql.err.MySQLError) as ei:
        pymysql_connect(port, server_public_key=pem).close()
    code, msg = ei.value.args[0], ei.value.args[1]
    assert code == 1043, (ei.value.args, d.log())
    assert msg.startswith("dmtls (route %s): " % ROUTE), msg
    assert re.search(r"request (the|its|the server's) (public )?key", msg), msg
    res = fake.wait_results(1)[0]
    assert res["full_auth_payload"] is None and res["auth"] is None, res


def test_tidb_style_always_full_auth(dmtls_bin, pki, procs, fake):
    """A server that asks for full authentication on every login (as TiDB
    does): five logins in a row through one dmtls all succeed and the server
    receives each password in clear over TLS; a wrong one is the server's
    own ERR."""
    fake.mode = "full"
    fake.users.update({"a": b"alpha", "b": b"bravo-\xc3\xa9"})
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    logins = [("u", b"pw"), ("a", b"alpha"), ("b", b"bravo-\xc3\xa9"), ("u", b"pw"),
              ("a", b"alpha")]
    for user, pw in logins:
        conn = pymysql_connect(port, user, pw)
        try:
            assert query(conn, "SELECT 3") == (("%s|SELECT 3" % user,),)
        finally:
            conn.close()
    res = fake.wait_results(len(logins))
    assert fake.errors == [], fake.errors
    # the fake server records a login when its connection ends: any order
    got = sorted((r["login"]["user"], r["full_auth_payload"]) for r in res)
    assert got == sorted((user, pw + b"\0") for user, pw in logins), res
    with pytest.raises(pymysql.err.OperationalError) as ei:
        pymysql_connect(port, "a", "wrong")
    assert ei.value.args == (1045, "Access denied for user 'a' (fake, full)"), ei.value.args


# ---- malformed packets ------------------------------------------------------

def _greet(nonce=None, caps=SERVER_CAPS):
    return greeting(nonce or make_nonce(), caps=caps)


BIG = b"\xff\xff\xff"

# Every case below names the cause dmtls must give in its ERR 1043 (a regex
# searched in the message after "dmtls (route mysql): ").
TIMEOUT = r"^handshake timeout after 2000ms$"
NOT_MYSQL = r"^127\.0\.0\.1:\d+ does not speak the MySQL protocol \(its first bytes"
NOT_V10 = r"^the server's greeting is not a MySQL protocol 10 handshake$"
SRV_CLOSED = r"^server closed the connection during login$"
CLI_CLOSED = r"^client closed the connection during login$"
MALFORMED_LOGIN = r"^malformed login packet from the client$"
KEY_UNKNOWN = r"^the client encrypted its password with a server public key it already had"

# What the fake server sends instead of its greeting: (label, bytes, then, cause).
SERVER_GREETING_CASES = [
    ("truncated greeting, then close", packet(0, _greet())[:30], "close", SRV_CLOSED),
    ("truncated greeting, then stall", packet(0, _greet())[:30], "stall", TIMEOUT),
    ("length 0xffffff", BIG + b"\x00" + b"\x0a" * 4000, "close", NOT_MYSQL),
    ("length 16381 (just over the login limit)", b"\xfd\x3f\x00\x00" + b"\x0a" * 16381,
     "close", NOT_MYSQL),
    ("empty packet", packet(0, b""), "close", NOT_V10),
    ("not protocol 10", packet(0, b"\x09" + pattern(89, "greeting")), "close", NOT_V10),
    ("version without NUL", packet(0, b"\x0a" + b"8" * 200), "close", NOT_V10),
    ("cut after the low capability flags", packet(0, _greet()[:28]), "close",
     r"^the server speaks a pre-4\.1 protocol$"),
    ("auth data length 255", packet(0, _greet()[:33] + b"\xff" + _greet()[34:]), "close",
     NOT_V10),
    ("http response", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "close",
     NOT_MYSQL),
]

# What the client sends instead of its login: (label, bytes, then, cause).
_NO_NUL = pattern(5000, "login").replace(b"\0", b"\1")
_LOGIN_OK = login_payload("u", b"\x01" * 32)
CLIENT_LOGIN_CASES = [
    ("truncated login, then close", packet(1, _LOGIN_OK)[:20], "close", CLI_CLOSED),
    ("truncated login, then stall", packet(1, _LOGIN_OK)[:20], "stall", TIMEOUT),
    ("length 0xffffff", BIG + b"\x01" + b"A" * 5000, "close",
     r"^client sent a 16777215-byte packet during login; at most 16380 are accepted"),
    ("length 16381", b"\xfd\x3f\x00\x01" + b"A" * 16381, "close",
     r"^client sent a 16381-byte packet during login; at most 16380 are accepted"),
    ("empty packet", packet(1, b""), "close", MALFORMED_LOGIN),
    ("shorter than 32 bytes", packet(1, _LOGIN_OK[:20]), "close", MALFORMED_LOGIN),
    ("no CLIENT_PROTOCOL_41", packet(1, b"\x05\x80\x00\x00" + _LOGIN_OK[4:]), "close",
     MALFORMED_LOGIN),
    ("an SSLRequest", packet(1, (int.from_bytes(_LOGIN_OK[:4], "little") | SSL)
                         .to_bytes(4, "little") + _LOGIN_OK[4:32]), "close",
     r"^the client asked for TLS; connect to dmtls without TLS \(ssl-mode=DISABLED\)"),
    ("user without NUL", packet(1, _LOGIN_OK[:32] + b"u" * 300), "close", MALFORMED_LOGIN),
    ("auth length 2^64-1", packet(1, _LOGIN_OK[:32] + b"u\0" + b"\xfe" + b"\xff" * 8),
     "close", MALFORMED_LOGIN),
    ("garbage without NUL", packet(1, _NO_NUL), "close", MALFORMED_LOGIN),
]

# What the fake server sends over TLS instead of its first auth reply.
SERVER_AUTH_CASES = [
    ("length 0xffffff", BIG + b"\x03" + b"\x01" * 3000, "close",
     r"^server sent a 16777215-byte packet during login; at most 16380 are accepted"),
    ("empty packet", packet(3, b""), "close", r"^empty packet from the server during login$"),
    ("auth switch without NUL", packet(3, b"\xfecaching_sha2_password"), "close",
     r"^malformed auth switch request$"),
    ("truncated packet, then close", packet(3, b"\x01\x04")[:3], "close", SRV_CLOSED),
    ("truncated packet, then stall", packet(3, b"\x01" + b"x" * 100)[:50], "stall", TIMEOUT),
    # Forwarded as it is (dmtls does not judge auth data), then the close.
    ("unknown status byte", packet(3, b"\x42" + pattern(200, "auth")), "close", SRV_CLOSED),
    ("garbage", b"\xde\xad\xbe\xef" * 750, "close",
     r"^server sent a 12496350-byte packet during login; at most 16380 are accepted"),
]

# What the fake server sends in clear instead of the TLS handshake.
SERVER_TLS_CASES = [
    ("a MySQL OK instead of TLS", packet(2, b"\x00\x00\x00\x02\x00\x00\x00"), "close",
     r"^unknown type in record hdr$"),
    ("garbage instead of TLS", pattern(600, "tls"), "close", r"^record layer length error$"),
    ("nothing, then stall", b"", "stall", TIMEOUT),
]

# What the client sends after the server's 01 04 (full auth).
CLIENT_AUTH_CASES = [
    ("256 bytes no key decrypts", packet(3, pattern(256, "rsa")), "close", KEY_UNKNOWN),
    ("length 0xffffff", BIG + b"\x03" + b"A" * 3000, "close",
     r"^client sent a 16777215-byte packet during login; at most 16380 are accepted"),
    ("empty packet", packet(3, b""), "close", r"^the client sent an empty password packet$"),
    ("short binary without NUL", packet(3, b"\x07\x08\x09"), "close",
     r"^the client sent an encrypted password dmtls cannot read; let the client request"),
    ("truncated, then stall", packet(3, b"pw\0")[:5], "stall", TIMEOUT),
    ("key request, then 256 bytes of garbage",
     packet(3, b"\x02") + packet(5, pattern(256, "rsa2")), "close", KEY_UNKNOWN),
]


def _outcome_ok(how, what, cause):
    """dmtls answered with its own ERR 1043 / 08S01 whose message gives
    `cause` (a regex); anything else (EOF, a reset, another error) fails."""
    if how != "err":
        return False
    code, state, msg = what
    prefix = "dmtls (route %s): " % ROUTE
    return ((code, state) == (1043, "08S01") and msg.startswith(prefix) and
            re.search(cause, msg[len(prefix):]) is not None)


def test_garbage_and_truncated_packets_never_crash(dmtls_bin, pki, procs, fake):
    """Truncated, oversized (length > 16 KiB, 0xffffff), empty and garbage
    packets at each phase - server greeting, client login, TLS upgrade,
    server auth reply, client auth reply - make dmtls send the client its
    ERR 1043 naming the cause (also when the client itself misbehaved: a
    bare close is a failure); dmtls keeps running, the fake server meets no
    error of its own, and a normal login works afterwards."""
    d, port = start_route(procs, dmtls_bin, pki, fake.port, "--handshake-timeout", "2s")
    failures = []

    def check(phase, label, how, what, cause):
        if d.proc.poll() is not None:
            raise AssertionError("dmtls died (exit %s) after %s / %s; log:\n%s"
                                 % (d.proc.returncode, phase, label, d.log()))
        if not _outcome_ok(how, what, cause):
            failures.append("%s / %s: client saw %s %r, wanted dmtls's ERR matching %r"
                            % (phase, label, how, what, cause))

    def settle():
        """Let the fake server finish the connections it accepted."""
        wait_until(lambda: len(fake.results) >= fake.accepted, 10,
                   "the fake server to finish its connections")

    def run_case(phase, label, data, then, cause, client_script):
        settle()
        with FakeClient(port, timeout=20) as c:
            try:
                client_script(c, data, then)
                # the 2 s handshake deadline answers the stalled cases
                how, what = c.read_outcome(timeout=15)
            except (EOFError, ConnectionError) as e:
                how, what = "eof before the outcome", repr(e)
        check(phase, label, how, what, cause)

    def just_wait(c, data, then):
        pass

    def send_garbage(c, data, then):
        c.read_greeting()
        c.send_raw(data)
        if then == "close":
            c.sock.shutdown(socket.SHUT_WR)

    def login(c, data, then):
        g = c.read_greeting()
        c.send(1, c.login_payload("u", caching_sha2_scramble(b"pw", g["nonce"])))

    def login_then_garbage(c, data, then):
        g = c.read_greeting()
        c.send(1, c.login_payload("u", caching_sha2_scramble(b"pw", g["nonce"])))
        seq, p = c.read()
        assert p == b"\x01\x04", p
        c.send_raw(data)
        if then == "close":
            c.sock.shutdown(socket.SHUT_WR)

    for label, data, then, cause in SERVER_GREETING_CASES:
        fake.script = {"greeting": data, "then": then}
        run_case("server greeting", label, data, then, cause, just_wait)
    fake.script = {"greeting": packet(0, err(1040, "Too many connections", "08004"))}
    with FakeClient(port) as c:
        how, what = c.read_outcome()
    assert (how, what) == ("err", (1040, "08004", "Too many connections")), \
        "a server ERR instead of a greeting must reach the client unchanged: %r %r" % (how, what)

    fake.script = {}
    for label, data, then, cause in CLIENT_LOGIN_CASES:
        settle()
        n = len(fake.results)
        run_case("client login", label, data, then, cause, send_garbage)
        res = fake.wait_results(n + 1)[n]
        if res["sslreq"] is not None or res["login"] is not None:
            failures.append("client login / %s: the server got %r" % (label, res))

    for label, data, then, cause in SERVER_TLS_CASES:
        fake.script = {"after_sslreq": data, "then": then}
        run_case("TLS upgrade", label, data, then, cause, login)

    for label, data, then, cause in SERVER_AUTH_CASES:
        fake.script = {"auth": data, "then": then}
        run_case("server auth", label, data, then, cause, login)

    fake.script = {}
    fake.mode = "full"
    for label, data, then, cause in CLIENT_AUTH_CASES:
        settle()
        n = len(fake.results)
        run_case("client auth", label, data, then, cause, login_then_garbage)
        res = fake.wait_results(n + 1)[n]
        if res["auth"] == "ok":
            failures.append("client auth / %s: the server accepted %r" % (label, res))

    assert d.proc.poll() is None, "dmtls exited: %s\n%s" % (d.proc.returncode, d.log())
    conn = pymysql_connect(port)
    try:
        assert query(conn, "SELECT 4") == (("u|SELECT 4",),)
    finally:
        conn.close()
    assert not failures, "\n".join(failures) + "\n\ndmtls log:\n" + d.log()


def test_server_unreachable_gets_clear_err(dmtls_bin, pki, procs):
    """Nothing listens at the target: the client, still waiting for the
    greeting, gets ERR 1043 (sequence id 0) naming dmtls and the refused
    connect, not a bare close."""
    d, port = start_route(procs, dmtls_bin, pki, free_port())
    with FakeClient(port) as c:
        seq, p = c.read()
        assert p[:1] == b"\xff" and seq == 0, (seq, p, d.log())
        assert_dmtls_err(parse_err(p), r"connect to 127\.0\.0\.1:\d+: Connection refused",
                         log=d.log())
        assert c.read_outcome(timeout=5) == ("eof", [])
    d.wait_log(r"event=conn_failed route=%s .*Connection refused" % ROUTE)
