"""Every allow rule on the command line and in config files (issue 14,
DESIGN sections 4 to 6): cert-allowed-cn, -dns, -uri and -ou, on a server
route (a Python client presents the leaf) and on a client route (dmtls
verifies a Python TLS server's leaf), given as repeatable, comma-list
flags and as config keys.

- names are compared whole and exactly; every OU of the subject counts (a
  leaf with two OUs matches on its second);
- URI SANs are compared up to 2048 bytes, the bound of a SPIFFE ID: a
  2000-byte SPIFFE ID matches exactly, one that differs by its last byte
  does not, and a rule longer than 2048 bytes is an error (it could never
  match), as a CN, DNS or OU rule longer than 255 bytes is;
- the denial log line names the presented names and the rule set;
- an empty rule or list item is a usage error naming the flag, on every
  command that takes rules (server, client, mysql, check, probe).
"""

import os
import re
import socket

import pytest

from backends import EchoServer, TLSServer
from conftest import free_port, run
from routes import (conf_text, expect_config_error, expect_usage_error,
                    loopback, start_route, start_run, write_conf)
from test_client_route import refused_plaintext_client, settle
from tlsclient import tls_refused

SPIFFE = "spiffe://trust.domain/ns/x/sa/y"
SPIFFE_PREFIX = "spiffe://trust.domain/ns/x/sa/"
LONG_URI = SPIFFE_PREFIX + "y" * (2000 - len(SPIFFE_PREFIX))  # 2000 bytes
RUN_TIMEOUT = 20

# Leaves: (name, cn, sans, ous).  rules-KIND-ok holds the name of the rule of
# KIND (KINDS), rules-KIND-no a name that differs; no CN is another's rule.
LEAVES = [
    ("rules-cn-ok", "svc-a", (), None),
    ("rules-cn-no", "svc-a2", (), None),
    ("rules-dns-ok", "nobody", ("DNS:b.dm.test", "DNS:a.dm.test"), None),
    ("rules-dns-no", "nobody", ("DNS:a.dm.test.evil", "DNS:a.dm.tes"), None),
    ("rules-uri-ok", "nobody", ("URI:" + SPIFFE,), None),
    ("rules-uri-no", "nobody", ("URI:" + SPIFFE[:-1] + "z",), None),
    ("rules-ou-ok", "nobody", (), ("eng", "dm-cluster")),
    ("rules-ou-no", "nobody", (), ("eng", "dm-cluster2")),
    ("rules-long-ok", "nobody", ("URI:" + LONG_URI,), None),
    ("rules-long-no", "nobody", ("URI:" + LONG_URI[:-1] + "z",), None),
]

# kind -> (rule, what the denial line shows of the denied leaf, a regex)
KINDS = {
    "cn": ("svc-a", r"cn=svc-a2 "),
    "dns": ("a.dm.test", r'sans="?(DNS:a\.dm\.tes,DNS:a\.dm\.test\.evil|'
            r'DNS:a\.dm\.test\.evil,DNS:a\.dm\.tes)"? '),
    "uri": (SPIFFE, r'sans="?URI:spiffe://trust\.domain/ns/x/sa/z"? '),
    "ou": ("dm-cluster", r"cn=nobody "),
}
REASONS = {
    "ou": r"certificate identity not allowed \(CN nobody; OU eng,dm-cluster2\)",
}


def denial(kind):
    """The regex of the denied leaf's line: presented names, the rule set
    (see rule_flags), the reason."""
    rule, shows = KINDS[kind]
    return r'%s.*allowed="%s=no-such-%s\|%s" .*reason="%s' % (
        shows, kind, kind, re.escape(rule),
        REASONS.get(kind, r"certificate identity not allowed"))


@pytest.fixture(scope="module")
def leaves(pki):
    """The leaves of LEAVES in the session PKI: name -> (cert, key)."""
    return {name: pki.leaf(name, cn, sans=sans, ou=ous)
            for name, cn, sans, ous in LEAVES}


def rule_flags(kind, rule):
    """The flag of one rule, as a comma list: a rule no leaf matches,
    then the rule."""
    return ["--cert-allowed-%s" % kind, "no-such-%s,%s" % (kind, rule)]


def rule_conf(pki, kind, rule, routes, kind_of_route="server"):
    """A config of `routes` [(name, listen, target)] whose top-level
    security allows only `rule` of `kind` (among one rule that never
    matches)."""
    text = conf_text(pki, [(n, l, t, None) for n, l, t in routes], cns=None)
    line = 'cert-allowed-%s = ["no-such-%s", "%s"];' % (kind, kind, rule)
    text = text.replace("security = {\n", "security = {\n  %s\n" % line, 1)
    if kind_of_route != "server":
        text = text.replace('kind = "server";', 'kind = "%s";' % kind_of_route)
    return text


def start_conf(procs, dmtls_bin, tmp_path, text, name):
    conf, _ = write_conf(os.path.join(str(tmp_path), name + ".conf"), text)
    return start_run(procs, dmtls_bin, conf, name=name)


def check_server_route(d, port, pki, leaves, kind, ok, no, shows):
    """The ok leaf passes, the no leaf is denied with a line that shows
    `shows` (a regex)."""
    why = tls_refused(port, pki, cert=leaves[ok])
    assert why is None, "%s refused (%s); log:\n%s" % (ok, why, d.log())
    since = d.mark()
    why = tls_refused(port, pki, cert=leaves[no])
    assert why is not None, "%s accepted; log:\n%s" % (no, d.log())
    d.wait_log(r"event=denied route=\S+ .*%s" % shows, since=since)


# -- server routes ---------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_server_route_rule_flag(dmtls_bin, pki, procs, leaves, kind):
    """dmtls server --cert-allowed-KIND: the leaf that holds the name
    passes, the one whose name differs is denied, naming what it showed."""
    rule, shows = KINDS[kind][0], denial(kind)
    port = free_port()
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        *rule_flags(kind, rule), name="dmtls-" + kind)
        check_server_route(d, port, pki, leaves, kind, "rules-%s-ok" % kind,
                           "rules-%s-no" % kind, shows)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_server_route_rule_config_key(dmtls_bin, pki, procs, leaves, tmp_path, kind):
    """The same rules as cert-allowed-KIND keys of a config file."""
    rule, shows = KINDS[kind][0], denial(kind)
    port = free_port()
    with EchoServer() as echo:
        d = start_conf(procs, dmtls_bin, tmp_path,
                       rule_conf(pki, kind, rule, [("p", port, echo.addr)]),
                       "dmtls-" + kind)
        check_server_route(d, port, pki, leaves, kind, "rules-%s-ok" % kind,
                           "rules-%s-no" % kind, shows)


def test_repeated_rule_flags_add_up(dmtls_bin, pki, procs, leaves):
    """Rule flags repeat and kinds OR: one route allowing an OU and a URI
    (two flags each) lets both leaves in and neither denied leaf."""
    port = free_port()
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "-cert-allowed-ou", "x", "--cert-allowed-ou", "dm-cluster",
                        "--cert-allowed-uri", "spiffe://other", "-cert-allowed-uri", SPIFFE)
        for leaf in ("rules-ou-ok", "rules-uri-ok"):
            assert tls_refused(port, pki, cert=leaves[leaf]) is None, d.log()
        for leaf in ("rules-ou-no", "rules-uri-no", "rules-cn-ok"):
            assert tls_refused(port, pki, cert=leaves[leaf]) is not None, d.log()
        d.wait_log(r'event=denied .*allowed="%s"' % re.escape(
            "uri=spiffe://other|%s ou=x|dm-cluster" % SPIFFE))


@pytest.mark.parametrize("given", ["flag", "config"])
def test_2000_byte_spiffe_uri_matches_exactly(dmtls_bin, pki, procs, leaves, tmp_path,
                                              given):
    """A 2000-byte SPIFFE ID (they may be up to 2048 bytes) matches a rule
    of the same 2000 bytes; one that differs by its last byte is denied.
    URIs longer than 255 bytes used never to match (and such a rule was a
    config error)."""
    port = free_port()
    with EchoServer() as echo:
        if given == "flag":
            d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                            "--cert-allowed-uri", LONG_URI)
        else:
            d = start_conf(procs, dmtls_bin, tmp_path, rule_conf(
                pki, "uri", LONG_URI, [("p", port, echo.addr)]), "dmtls-long")
        why = tls_refused(port, pki, cert=leaves["rules-long-ok"])
        assert why is None, "refused (%s); log:\n%s" % (why, d.log())
        since = d.mark()
        assert tls_refused(port, pki, cert=leaves["rules-long-no"]) is not None, d.log()
        d.wait_log(r'event=denied .*sans="?URI:spiffe://trust\.domain/ns/x/sa/y', since=since)


# -- client routes ---------------------------------------------------------------

def check_client_route(d, port, srv, leaves, ok, no, shows):
    """Through the client route at port: the TLS server presenting the ok
    leaf echoes; presenting the no leaf, it is refused, the plaintext
    client gets EOF and nothing, and the denial shows `shows`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"ping")
        got = b""
        while len(got) < 4:
            data = c.recv(64)
            if not data:
                break
            got += data
    assert got == b"ping", "got %r; log:\n%s" % (got, d.log())
    srv.ctx.load_cert_chain(*leaves[no])     # the next handshakes show it
    since = d.mark()
    got, how = refused_plaintext_client(port)
    assert (got, how) == (b"", "eof"), (got, how, d.log())
    d.wait_log(r"event=denied route=\S+ .*%s" % shows, since=since)
    settle(srv)
    assert [r["bytes"] for r in srv.results] == [4], srv.results


def tls_server(leaves, ok):
    srv = TLSServer(*leaves[ok], ca=None)
    return srv.expect_error(r"^handshake: .*ALERT_BAD_CERTIFICATE")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_client_route_rule_flag(dmtls_bin, pki, procs, leaves, kind):
    """dmtls client --cert-allowed-KIND checks the server's leaf."""
    rule, shows = KINDS[kind][0], denial(kind)
    port = free_port()
    with tls_server(leaves, "rules-%s-ok" % kind) as srv:
        d = start_route(procs, dmtls_bin, pki, "client", port, srv.addr,
                        *rule_flags(kind, rule), name="dmtls-" + kind)
        check_client_route(d, port, srv, leaves, "rules-%s-ok" % kind,
                           "rules-%s-no" % kind, shows)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_client_route_rule_config_key(dmtls_bin, pki, procs, leaves, tmp_path, kind):
    """The same rules as config keys of a client route."""
    rule, shows = KINDS[kind][0], denial(kind)
    port = free_port()
    with tls_server(leaves, "rules-%s-ok" % kind) as srv:
        d = start_conf(procs, dmtls_bin, tmp_path,
                       rule_conf(pki, kind, rule, [("c", port, srv.addr)], "client"),
                       "dmtls-" + kind)
        check_client_route(d, port, srv, leaves, "rules-%s-ok" % kind,
                           "rules-%s-no" % kind, shows)


# -- dmtls check -------------------------------------------------------------------

def server_flags(pki):
    return ["--listen", loopback(), "--target", loopback(), "--ssl-ca", pki.ca,
            "--ssl-cert", pki.path("dm"), "--ssl-key", pki.key("dm")]


@pytest.mark.parametrize("kind", ["server", "client", "mysql"])
def test_check_accepts_every_rule_flag(dmtls_bin, pki, kind):
    """dmtls check server|client|mysql takes the new flags and prints them
    in the route's identity."""
    r = run([dmtls_bin, "check", kind, *server_flags(pki),
             "--cert-allowed-uri", SPIFFE, "--cert-allowed-dns", "a.dm.test,b.dm.test",
             "-cert-allowed-ou", "dm-cluster"], timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'identity="dns=a.dm.test|b.dm.test uri=%s ou=dm-cluster"' % SPIFFE in r.stdout, \
        r.stdout


# -- usage and config errors -------------------------------------------------------

RULE_FLAGS = ["--cert-allowed-dns", "--cert-allowed-uri", "--cert-allowed-ou"]


@pytest.mark.parametrize("command", ["server", "client", "mysql", "check server"])
@pytest.mark.parametrize("flag", RULE_FLAGS)
@pytest.mark.parametrize("value", ["", "a,,b", ",a"])
def test_empty_rule_flag_is_usage_error(dmtls_bin, pki, command, flag, value):
    """An empty rule or list item is exit 2 naming the flag."""
    msg = expect_usage_error(dmtls_bin, [*command.split(), *server_flags(pki), flag, value],
                             flag)
    assert "empty" in msg, msg


@pytest.mark.parametrize("flag", RULE_FLAGS)
def test_empty_rule_flag_is_usage_error_for_probe(dmtls_bin, pki, flag):
    msg = expect_usage_error(dmtls_bin, ["probe", loopback(), "--ssl-ca", pki.ca, flag, "a,"],
                             "dmtls probe:", flag)
    assert "empty" in msg, msg


@pytest.mark.parametrize("flag,value,limit", [
    ("--cert-allowed-uri", SPIFFE_PREFIX + "u" * (2049 - len(SPIFFE_PREFIX)), "2048"),
    ("--cert-allowed-dns", "d" * 256, "255"),
    ("--cert-allowed-ou", "o" * 256, "255"),
])
def test_rule_longer_than_compared_names_is_usage_error(dmtls_bin, pki, flag, value, limit):
    """A rule longer than any name that is compared could never match: exit
    2 naming the flag and the limit; one byte less is a rule."""
    expect_usage_error(dmtls_bin, ["server", *server_flags(pki), flag, "ok," + value],
                       flag, limit)
    r = run([dmtls_bin, "check", "server", *server_flags(pki), flag, value[:-1]],
            timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_uri_rule_longer_than_2048_is_config_error(dmtls_bin, pki, tmp_path):
    """cert-allowed-uri: 2048 bytes is a rule, 2049 a FILE:LINE error."""
    long = "u" * 2049
    text = rule_conf(pki, "uri", long, [("p", loopback(), loopback())])
    conf, text = write_conf(tmp_path / "dmtls.conf", text)
    msg = expect_config_error(dmtls_bin, conf, text, long, "cert-allowed-uri")
    assert "2048" in msg, msg
    text = rule_conf(pki, "uri", long[:-1], [("p", loopback(), loopback())])
    conf, _ = write_conf(tmp_path / "dmtls-ok.conf", text)
    r = run([dmtls_bin, "check", "-c", conf], timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_names_every_rule_flag(dmtls_bin):
    """dmtls --help and the --help of each route kind name the four flags."""
    for argv in (["--help"], ["server", "--help"], ["client", "--help"],
                 ["mysql", "--help"]):
        r = run([dmtls_bin, *argv], timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        for flag in ["--cert-allowed-cn"] + RULE_FLAGS:
            assert flag in r.stdout, (argv, flag, r.stdout)
