"""Config file (DESIGN.md sections 5 and 6): `dmtls run -c FILE` and
`dmtls check -c FILE`.

Covered: every class of config error (syntax, unknown key with "did you
mean", wrong type, out-of-range number, duplicate route name, duplicate
listen address, missing certificate file, key/cert mismatch) gives exit 2
from `dmtls run` and exit 1 from `dmtls check`, with a message naming the
right FILE:LINE (for certificate errors, the route's line); a good file
passes `dmtls check` with one summary line per route; conf.d files add
routes, may not set anything else, and inherit the main file's top-level
security; a route's own security group overrides the top level key by key.

Readiness is taken from the `event=ready` log line, never from a probe
connection.  Config files are written so that each setting sits on its own
line, and expected line numbers are found by searching the written text.
"""

import os
import socket
import ssl
import subprocess

import pytest

import pymysql

from backends import EchoServer
from conftest import free_port, run, wait_listening
from mysqlfake import FakeMySQLServer
from routes import (line_of, loopback, route_lines, routes_block, security_lines, start_run,
                    write_conf)
from tlsclient import tls_refused

RUN_TIMEOUT = 5  # seconds a failing `dmtls run` may take before we call it hung


# -- helpers -----------------------------------------------------------------

def run_config(dmtls_bin, verb, conf):
    """`dmtls VERB -c conf`, bounded; a process that keeps running (it
    started serving instead of refusing the file) is a test failure."""
    try:
        return run([dmtls_bin, verb, "-c", conf], timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:  # the child was killed
        raise AssertionError("`dmtls %s -c %s` did not exit within %ss (%s); it "
                             "accepted the broken file" % (verb, conf, RUN_TIMEOUT, e))


# -- the broken files --------------------------------------------------------

def _broken(case, pki, tmp_path):
    """Write the config of error class `case`; return (path, expected
    FILE:LINE prefix, needles the message must also contain)."""
    conf = os.path.join(str(tmp_path), "dmtls.conf")
    top, sec_extra, sec_cns = ["log-level = \"info\";"], [], ("dm",)
    r1_extra, second = [], None
    listen1, target = loopback(), loopback()
    marker, needles = None, []

    if case == "syntax_error":
        top.append("workers = ;")
        marker, needles = "workers = ;", ["syntax error"]
    elif case == "unknown_key_ssl_ca":
        sec_extra = ['ssl_ca = "%s";' % pki.ca]
        marker, needles = "ssl_ca =", ["ssl_ca", "did you mean", "ssl-ca"]
    elif case == "unknown_key_cert_allowed_cns":
        r1_extra = ['security = {', '  cert-allowed-cns = ["dm"];', '};']
        marker, needles = "cert-allowed-cns", ["cert-allowed-cns", "did you mean",
                                               "'cert-allowed-cn'"]
    elif case == "wrong_type_workers":
        top.append('workers = "two";')
        marker, needles = 'workers = "two"', ["workers must be a whole number"]
    elif case == "wrong_type_cert_allowed_cn":
        sec_cns, sec_extra = None, ["cert-allowed-cn = 5;"]
        marker, needles = "cert-allowed-cn = 5", ["cert-allowed-cn must be a list of strings"]
    elif case == "out_of_range_workers":
        top.append("workers = 1000;")
        marker, needles = "workers = 1000", ["workers = 1000 is out of range 0..256"]
    elif case == "out_of_range_max_conns":
        r1_extra = ["max-conns = -1;"]
        marker, needles = "max-conns = -1", ["max-conns = -1 is out of range 0..1000000"]
    elif case == "duplicate_route_name":
        second = route_lines("x", loopback(), target)
        marker, needles = ('name = "x"', 2), ["duplicate route name 'x' (also at "]
    elif case == "duplicate_listen":
        second = route_lines("y", listen1, target)
        marker, needles = 'name = "y"', ["route y listens on %s, as route x does" % listen1]
    elif case == "missing_cert_file":
        missing = os.path.join(str(tmp_path), "no-such-cert.pem")
        second = route_lines("y", loopback(), target,
                             ['security = { ssl-cert = "%s"; };' % missing])
        marker, needles = 'name = "y"', ["route y: ssl-cert %s cannot be read" % missing]
    elif case == "key_cert_mismatch":
        second = route_lines("y", loopback(), target,
                             ['security = { ssl-key = "%s"; };' % pki.key("other")])
        marker, needles = 'name = "y"', ["route y: ssl-key %s does not match ssl-cert"
                                         % pki.key("other")]
    else:
        raise ValueError(case)

    routes = [route_lines("x", listen1, target, r1_extra)]
    if second is not None:
        routes.append(second)
    lines = top + security_lines(pki, cns=sec_cns, extra=sec_extra) + routes_block(*routes)
    path, text = write_conf(conf, lines)
    needle, nth = marker if isinstance(marker, tuple) else (marker, 1)
    return path, "%s:%d:" % (path, line_of(text, needle, nth)), needles


ERROR_CASES = ["syntax_error", "unknown_key_ssl_ca", "unknown_key_cert_allowed_cns",
               "wrong_type_workers", "wrong_type_cert_allowed_cn",
               "out_of_range_workers", "out_of_range_max_conns",
               "duplicate_route_name", "duplicate_listen", "missing_cert_file",
               "key_cert_mismatch"]


# -- 1. config errors ----------------------------------------------------------

@pytest.mark.parametrize("case", ERROR_CASES)
def test_run_config_error_exits_2_with_file_line(dmtls_bin, pki, tmp_path, case):
    """`dmtls run -c FILE` on a broken file exits 2 with a one-line message
    that starts at the right FILE:LINE and names what is wrong."""
    conf, where, needles = _broken(case, pki, tmp_path)
    r = run_config(dmtls_bin, "run", conf)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2, "exit %s; stderr:\n%s" % (r.returncode, r.stderr)
    assert len(lines) == 1, "expected a one-line message, got:\n%s" % r.stderr
    assert where in lines[0], "%r not in %r" % (where, lines[0])
    for n in needles:
        assert n in lines[0], "%r not in %r" % (n, lines[0])


@pytest.mark.parametrize("case", ERROR_CASES)
def test_check_config_error_exits_1_with_file_line(dmtls_bin, pki, tmp_path, case):
    """`dmtls check -c FILE` on the same broken file exits 1 and names the
    same FILE:LINE."""
    conf, where, needles = _broken(case, pki, tmp_path)
    r = run_config(dmtls_bin, "check", conf)
    out = r.stdout + r.stderr
    assert r.returncode == 1, "exit %s; output:\n%s" % (r.returncode, out)
    assert where in out, "%r not in:\n%s" % (where, out)
    for n in needles:
        assert n in out, "%r not in:\n%s" % (n, out)


def test_check_good_config_prints_route_summaries(dmtls_bin, pki, tmp_path):
    """`dmtls check -c FILE` on a good two-route file exits 0 and prints one
    line per route with cert="CN=dm" and days_left."""
    lines = security_lines(pki) + routes_block(
        route_lines("alpha", loopback(), loopback()),
        route_lines("beta", loopback(), loopback()))
    conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls.conf"), lines)
    r = run_config(dmtls_bin, "check", conf)
    assert r.returncode == 0, "exit %s\nstdout:\n%s\nstderr:\n%s" % (
        r.returncode, r.stdout, r.stderr)
    for name in ("alpha", "beta"):
        mine = [l for l in r.stdout.splitlines() if l.startswith(name + ":")]
        assert len(mine) == 1, "expected one summary line for %s:\n%s" % (name, r.stdout)
        assert 'cert="CN=dm"' in mine[0], mine[0]
        days = [int(w.split("=", 1)[1]) for w in mine[0].split()
                if w.startswith("days_left=")]
        assert days and 28 <= days[0] <= 30, mine[0]  # the dm leaf lasts 30 days


# -- 2. conf.d -----------------------------------------------------------------

def _confd(tmp_path, files):
    """Create tmp_path/conf.d with {name: lines}; return its path."""
    d = os.path.join(str(tmp_path), "conf.d")
    os.makedirs(d, exist_ok=True)
    paths = {}
    for name, lines in files.items():
        paths[name], _ = write_conf(os.path.join(d, name), lines)
    return paths


def test_confd_routes_all_serve(dmtls_bin, pki, procs, tmp_path):
    """Routes of the main file, conf.d/10-a.conf and conf.d/20-b.conf all
    serve TLS echo."""
    ports = {n: free_port() for n in ("main", "a", "b")}
    with EchoServer() as echo:
        conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls.conf"),
                             security_lines(pki) + routes_block(
                                 route_lines("main", "127.0.0.1:%d" % ports["main"],
                                             echo.addr)))
        _confd(tmp_path, {
            "10-a.conf": routes_block(route_lines("a", "127.0.0.1:%d" % ports["a"],
                                                  echo.addr)),
            "20-b.conf": routes_block(route_lines("b", "127.0.0.1:%d" % ports["b"],
                                                  echo.addr))})
        d = start_run(procs, dmtls_bin, conf)
        for name, port in ports.items():
            why = tls_refused(port, pki)
            assert why is None, "route %s (port %d): %s\nlog:\n%s" % (
                name, port, why, d.log())
        assert echo.accepted == 3


def test_confd_duplicate_listen_names_both_files(dmtls_bin, pki, tmp_path):
    """A conf.d route listening where a main-file route listens is an error
    naming both files with their lines."""
    listen = loopback()
    conf, text = write_conf(os.path.join(str(tmp_path), "dmtls.conf"),
                            security_lines(pki) + routes_block(
                                route_lines("main", listen, loopback())))
    drop_lines = ["# a drop-in"] + routes_block(route_lines("dup", listen, loopback()))
    paths = _confd(tmp_path, {"10-a.conf": drop_lines})
    drop = paths["10-a.conf"]
    r = run_config(dmtls_bin, "run", conf)
    assert r.returncode == 2, "exit %s; stderr:\n%s" % (r.returncode, r.stderr)
    drop_at = "%s:%d:" % (drop, line_of("\n".join(drop_lines), 'name = "dup"'))
    main_at = "%s:%d" % (conf, line_of(text, 'name = "main"'))
    assert drop_at in r.stderr, "%r not in:\n%s" % (drop_at, r.stderr)
    assert main_at in r.stderr, "%r not in:\n%s" % (main_at, r.stderr)
    assert listen in r.stderr, r.stderr


def test_confd_non_routes_key_refused(dmtls_bin, pki, tmp_path):
    """A conf.d file that sets workers = 2 is refused with its FILE:LINE."""
    conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls.conf"),
                         security_lines(pki) + routes_block(
                             route_lines("main", loopback(), loopback())))
    drop_lines = ["# not allowed here", "workers = 2;"] + routes_block(
        route_lines("a", loopback(), loopback()))
    drop = _confd(tmp_path, {"10-a.conf": drop_lines})["10-a.conf"]
    r = run_config(dmtls_bin, "run", conf)
    assert r.returncode == 2, "exit %s; stderr:\n%s" % (r.returncode, r.stderr)
    at = "%s:%d:" % (drop, line_of("\n".join(drop_lines), "workers = 2"))
    assert at in r.stderr, "%r not in:\n%s" % (at, r.stderr)
    assert "workers" in r.stderr, r.stderr


def test_confd_route_inherits_main_security(dmtls_bin, pki, procs, tmp_path):
    """A conf.d route with no security group of its own uses the main
    file's top-level ssl-* files and cert-allowed-cn = ["dm"]: CN dm is
    served, CN other refused."""
    port = free_port()
    with EchoServer() as echo:
        conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls.conf"),
                             security_lines(pki, cns=("dm",)) + routes_block(
                                 route_lines("main", loopback(), echo.addr)))
        _confd(tmp_path, {"10-a.conf": routes_block(
            route_lines("a", "127.0.0.1:%d" % port, echo.addr))})
        d = start_run(procs, dmtls_bin, conf)
        why = tls_refused(port, pki, cert="dm")
        assert why is None, "CN dm refused on the conf.d route: %s\nlog:\n%s" % (
            why, d.log())
        why = tls_refused(port, pki, cert="other")
        assert why is not None, "CN other served on the conf.d route\nlog:\n" + d.log()
        d.wait_log(r"event=denied route=a\b.*cn=other")


def test_route_security_overrides_top_level_key_by_key(dmtls_bin, pki, procs, tmp_path):
    """Top-level cert-allowed-cn = ["dm"], route security cert-allowed-cn =
    ["other"]: that route serves CN other and refuses CN dm, while its
    ssl-ca / ssl-cert / ssl-key still come from the top level (the server
    presents CN=dm, verified against the test CA)."""
    port = free_port()
    with EchoServer() as echo:
        conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls.conf"),
                             security_lines(pki, cns=("dm",)) + routes_block(
                                 route_lines("ovr", "127.0.0.1:%d" % port, echo.addr,
                                             ['security = { cert-allowed-cn = ["other"]; };'])))
        d = start_run(procs, dmtls_bin, conf)
        why = tls_refused(port, pki, cert="other")
        assert why is None, "CN other refused: %s\nlog:\n%s" % (why, d.log())
        why = tls_refused(port, pki, cert="dm")
        assert why is not None, "CN dm served despite the override\nlog:\n" + d.log()
        d.wait_log(r"event=denied route=ovr\b.*cn=dm\b")
        # the certificate the route presents is the top-level ssl-cert
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.ca)
        ctx.load_cert_chain(pki.path("other"), pki.key("other"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                subject = dict(x[0] for x in s.getpeercert()["subject"])
        assert subject.get("commonName") == "dm", subject


def test_alpn_on_mysql_route_refused(dmtls_bin, pki, tmp_path):
    """A mysql route has no ALPN: an alpn list there is an error at its line."""
    conf, text = write_conf(tmp_path / "dmtls.conf", security_lines(pki) + [
        "routes = (",
        '  { name = "db"; kind = "mysql"; listen = "%s";' % loopback(),
        '    target = "127.0.0.1:3306";',
        '    alpn = ["h2"]; }',
        ");"])
    r = run_config(dmtls_bin, "run", conf)
    assert r.returncode == 2, r.stderr
    assert "%s:%d: alpn is not used on mysql routes; remove it" % (
        conf, line_of(text, "alpn")) in r.stderr, r.stderr


def _login(port, user):
    """Log in through the mysql route at port (password pw), run a query."""
    conn = pymysql.connect(host="127.0.0.1", port=port, user=user, password="pw",
                           connect_timeout=10, read_timeout=10, write_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == (("%s|SELECT 1" % user,),)
    finally:
        conn.close()


def test_empty_ssl_cert_clears_inherited_one(dmtls_bin, pki, procs, tmp_path):
    """`ssl-cert = ""; ssl-key = "";` in a mysql route's security group
    drops the top-level client certificate (a database whose CA does not
    trust it would refuse the handshake): on the wire that route presents
    no certificate to the database while a sibling route without them
    presents CN=dm; `check` shows no cert= field for it.  A server route
    cannot do without one: the same lines there are an error at its line."""
    drop = ['security = { ssl-cert = ""; ssl-key = ""; };']
    with FakeMySQLServer(pki.path("dm"), pki.key("dm"), ca=pki.ca,
                         users={"bare": b"pw", "inherits": b"pw"}) as db:
        ports = {"bare": free_port(), "inherits": free_port()}
        conf, text = write_conf(tmp_path / "dmtls.conf", security_lines(pki) + routes_block(
            route_lines("bare", ports["bare"], db.addr, drop, kind="mysql"),
            route_lines("inherits", ports["inherits"], db.addr, kind="mysql")))
        r = run_config(dmtls_bin, "check", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = {l.split(":")[0]: l for l in r.stdout.splitlines() if not l.startswith("warn")}
        assert "cert=" not in lines["bare"], lines["bare"]
        assert 'cert="CN=dm"' in lines["inherits"], lines["inherits"]

        d = procs.start([dmtls_bin, "run", "-c", conf], name="dmtls-run")
        for p in ports.values():
            wait_listening(p, d)
        for user, p in ports.items():  # the user names the route it took
            _login(p, user)
        res = db.wait_results(2)
        cns = {r["login"]["user"]: (r["tls"], r["client_cn"]) for r in res}
        assert cns == {"bare": ("TLSv1.3", None), "inherits": ("TLSv1.3", "dm")}, res

    conf, text = write_conf(tmp_path / "server.conf", security_lines(pki) + routes_block(
        route_lines("srv", loopback(), loopback(), drop)))
    r = run_config(dmtls_bin, "run", conf)
    assert r.returncode == 2, r.stderr
    assert "%s:%d: route srv needs ssl-cert and ssl-key" % (
        conf, line_of(text, 'name = "srv"')) in r.stderr, r.stderr
