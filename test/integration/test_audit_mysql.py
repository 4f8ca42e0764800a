"""`mysql` routes, from the core audit (issue 9 items 1 and 12) and the
test-suite issue (15): plaintext injected before TLS, and behaviours the
README documents that had no test.

DESIGN 2, mysql step 3: nothing the server sends in plaintext may reach the
client except the greeting itself.  Bytes that arrive after the greeting and
before the TLS handshake (an on-path party can append them) end the
connection with dmtls's ERR (1043, SQLSTATE 08S01, "dmtls (route NAME): ...")
and a log line.
"""

import re

import pymysql
import pytest

from backends import wait_until
from conftest import run
from mysqlfake import (FakeClient, FakeMySQLServer, caching_sha2_scramble, login_payload,
                       ok, packet, parse_greeting, result_set)
from test_mysql import ROUTE, pymysql_connect, query, start_route


@pytest.fixture
def fake(pki):
    """A fake caching_sha2_password server (server certificate: dm leaf)."""
    with FakeMySQLServer(pki.path("dm"), pki.key("dm"), ca=pki.ca,
                         users={"u": b"pw"}) as srv:
        yield srv


def rx_queued(remote_port):
    """Bytes waiting, unread, in the receive queues of the TCP sockets on
    127.0.0.1 whose peer is 127.0.0.1:remote_port (from /proc/net/tcp)."""
    needle = "0100007F:%04X" % remote_port
    total = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[2] == needle:
                total += int(fields[4].split(":")[1], 16)
    return total


def hexbytes(data):
    """The way dmtls names injected bytes: the first 8, in hex."""
    return " ".join("%02x" % b for b in data[:8])


def assert_injection_err(seq, payload, want_seq, data, log):
    """payload must be dmtls's ERR packet, byte for byte in its header, with
    sequence id want_seq and a message naming dmtls and the injected bytes."""
    assert payload[:1] == b"\xff", "not an ERR packet: %r\n%s" % (payload[:60], log)
    assert payload[1:3] == (1043).to_bytes(2, "little"), payload[:20]
    assert payload[3:9] == b"#08S01", payload[:20]
    assert seq == want_seq, "ERR with sequence id %d, the client expects %d" % (seq, want_seq)
    msg = payload[9:].decode()
    assert msg.startswith("dmtls (route %s): " % ROUTE), msg
    assert re.search(r"sent %d bytes? in plaintext after its greeting" % len(data), msg), msg
    assert "(%s)" % hexbytes(data) in msg, msg


def login_for(greet):
    return login_payload("u", caching_sha2_scramble(b"pw", greet["nonce"]))


FORGED = [
    ("forged OK", packet(2, ok())),
    ("forged OK and result set",
     packet(2, ok()) + b"".join(packet(i + 1, p) for i, p in enumerate(result_set(b"x")))),
    ("one stray byte", b"\x00"),
]


@pytest.mark.parametrize("label,data", FORGED, ids=[f[0] for f in FORGED])
def test_bytes_after_greeting_same_segment_refused(dmtls_bin, pki, procs, fake, label, data):
    """The server (or someone on its path) sends greeting + more bytes in one
    segment: the client gets dmtls's ERR (seq 0, before any greeting) naming
    the injected bytes, never the forged OK; dmtls logs it and the server
    never gets an SSLRequest."""
    fake.script = {"after_greeting": data}
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    with FakeClient(port) as c:
        seq, p = c.read()
        if p[:1] == b"\x0a":
            c.send(1, login_for(parse_greeting(p)))
            how, what = c.read_outcome()
            pytest.fail("dmtls forwarded the greeting; after the login the client saw "
                        "%s %r\n%s" % (how, what, d.log()))
        assert_injection_err(seq, p, 0, data, d.log())
        assert c.read_outcome(timeout=5) == ("eof", [])
    d.wait_log(r"event=conn_failed route=%s .*reason=.*sent %d bytes? in plaintext after "
               r"its greeting" % (ROUTE, len(data)))
    res = fake.wait_results(1)[0]
    assert res["sslreq"] is None, res


@pytest.mark.parametrize("label,data", FORGED, ids=[f[0] for f in FORGED])
def test_bytes_before_sslrequest_refused(dmtls_bin, pki, procs, fake, label, data):
    """The greeting, then (a separate segment, while dmtls waits for the
    client's login) more plaintext from the server side: when the login
    comes, the client gets dmtls's ERR (seq 2, where it expects the server's
    answer) naming the injected bytes, and no SSLRequest leaves dmtls."""
    fake.script = {"inject": data}
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    with FakeClient(port) as c:
        greet = c.read_greeting()
        fake.inject_go.set()
        assert fake.injected.wait(10), "the fake server did not inject"
        wait_until(lambda: rx_queued(fake.port) >= len(data), 10,
                   "the injected bytes in dmtls's receive queue")
        c.send(1, login_for(greet))
        seq, p = c.read()
        assert_injection_err(seq, p, 2, data, d.log())
        assert c.read_outcome(timeout=5) == ("eof", [])
    d.wait_log(r"event=conn_failed route=%s .*reason=.*sent %d bytes? in plaintext after "
               r"its greeting" % (ROUTE, len(data)))
    res = fake.wait_results(1)[0]
    assert res["sslreq"] is None, res


def test_normal_login_after_refused_injection(dmtls_bin, pki, procs, fake):
    """After an injection was refused, the same dmtls logs a client in
    normally through a well-behaved server (the check does not trip on a
    greeting alone)."""
    fake.script = {"after_greeting": b"\x00"}
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    with FakeClient(port) as c:
        assert c.read()[1][:1] == b"\xff"
    fake.script = {}
    conn = pymysql_connect(port)
    try:
        assert query(conn, "SELECT 5") == (("u|SELECT 5",),)
    finally:
        conn.close()
    res = fake.wait_results(2)[1]
    assert res["auth"] == "ok" and res["tls"] == "TLSv1.3", res


def test_sha256_password_after_auth_switch(dmtls_bin, pki, procs, fake):
    """README: `sha256_password` works like caching_sha2 full auth after an
    auth switch.  The server switches PyMySQL (plaintext to dmtls) to
    sha256_password with a fresh nonce; PyMySQL asks for the public key,
    dmtls answers with its own, decrypts the password (undoing the XOR with
    the switch's nonce) and the server receives exactly "pw\\0" over TLS,
    with the sequence ids it expects; a wrong password is the server's ERR."""
    fake.switch_to = b"sha256_password"
    d, port = start_route(procs, dmtls_bin, pki, fake.port)
    conn = pymysql_connect(port)
    try:
        assert query(conn, "SELECT 6") == (("u|SELECT 6",),)
        assert conn.server_public_key.startswith(b"-----BEGIN PUBLIC KEY-----"), \
            conn.server_public_key
    finally:
        conn.close()
    res = fake.wait_results(1)[0]
    assert res["full_auth_payload"] == b"pw\0", res
    assert res["auth"] == "ok" and res["tls"] == "TLSv1.3", res
    with pytest.raises(pymysql.err.OperationalError) as ei:
        pymysql_connect(port, "u", "wrong")
    assert ei.value.args == (1045, "Access denied for user 'u' (fake, sha256)"), ei.value.args
    assert fake.wait_results(2)[1]["full_auth_payload"] == b"wrong\0"


@pytest.mark.parametrize("argv", [["--alpn", "h2"], ["--alpn=mysql"]])
@pytest.mark.parametrize("cmd", [[], ["check"]])
def test_alpn_refused_on_mysql_route(dmtls_bin, pki, cmd, argv):
    """README: mysql routes do not use ALPN and refuse `--alpn`: `dmtls
    mysql` and `dmtls check mysql` exit 2 with a usage error naming the
    flag."""
    r = run([dmtls_bin] + cmd + ["mysql", "--listen", "127.0.0.1:1", "--target",
                                 "127.0.0.1:2", "--ssl-ca", pki.ca] + argv)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"^dmtls (check )?mysql: --alpn is not used on mysql routes$",
                     r.stderr, re.M), r.stderr
