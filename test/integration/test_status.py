"""Status listener (DESIGN.md section 7): GET /healthz, /metrics (Prometheus
text format) and /status (JSON) on `status = "127.0.0.1:PORT";` of the config
file, or `--status` of a command-line route.

A module-scoped dmtls (`traffic`) serves one route, x, to which exactly
3 allowed connections (with known byte counts) and 2 denied ones (CN other)
are made; the tests read the /metrics snapshot taken once the 5 connections
have logged their end.  No probe connection ever reaches the route:
readiness comes from the `event=ready` log line.
"""

import datetime
import json
import os
import re
import shutil
import ssl

import pytest

from backends import EchoServer, pattern, wait_until
from conftest import Procs, free_port
from routes import (conf_text, final_lines, http_get, replace_file, start_route, start_run,
                    tls_echo, write_conf)
from tlsclient import tls_connect, tls_refused

ALLOWED_SIZES = (1000, 20000, 300000)  # bytes echoed by the 3 allowed connections
DENIED = 2
# failed handshakes: (reason counted, client certificate)
FAILED = [("no_client_cert", None), ("verify", "untrusted"), ("verify", "expired")]
ENDED = len(ALLOWED_SIZES) + DENIED + len(FAILED)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?,?\})? (%s)(?: -?\d+)?$"
                    % (_NAME, _LABEL, _LABEL, _VALUE))
COMMENT = re.compile(r"^# (HELP|TYPE) (%s) (.*)$" % _NAME)


# -- helpers -----------------------------------------------------------------

def status_conf(path, pki, port, target, status_port, cert="dm", workers=None):
    """Route x on port -> target with a status listener (CN dm allowed)."""
    return write_conf(path, conf_text(pki, [("x", port, target, None)], status_port=status_port,
                                      top=["workers = %d;" % workers] if workers else (),
                                      cert=cert))[0]


get = http_get


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        labels = {}
        if m.group(2):
            for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)):
                labels[lm.group(1)] = lm.group(2)
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def sample(metrics, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in metrics, "no sample %s%r; have:\n%s" % (
        name, labels, "\n".join("%s %r" % (n, dict(l)) for n, l in metrics))
    return metrics[key]


def total(metrics, name, **labels):
    """Sum of every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, l), v in metrics.items() if n == name and want <= set(l))


def metrics_of(status_port):
    code, _, body = get(status_port, "/metrics")
    assert code == 200, body
    return parse_metrics(body)


@pytest.fixture(scope="module")
def traffic(dmtls_bin, pki, tmp_path_factory):
    """dmtls run (one worker) with route x and a status listener, after
    2 denied connections (CN other), 3 failed handshakes (no client
    certificate, one from an untrusted CA, an expired one) and 3 allowed
    ones, in that order; dict with proc, port, status_port, metrics (the
    /metrics text once all 8 have logged their end), bytes (echoed total),
    ended.
    With one worker, every line the earlier connections log is written
    before the last one's final line: a duplicate final line of any of them
    would be in the log by then."""
    tmp = tmp_path_factory.mktemp("status")
    procs = Procs(str(tmp))
    echo = EchoServer()
    try:
        port, status_port = free_port(), free_port()
        conf = status_conf(os.path.join(str(tmp), "dmtls.conf"), pki, port, echo.addr,
                           status_port, workers=1)
        d = start_run(procs, dmtls_bin, conf)
        for _ in range(DENIED):
            why = tls_refused(port, pki, cert="other")
            assert why is not None, "CN other was accepted; log:\n" + d.log()
        for reason, cert in FAILED:
            why = tls_refused(port, pki, cert=cert)
            assert why is not None, "client cert %s was accepted; log:\n%s" % (cert, d.log())
        for i, n in enumerate(ALLOWED_SIZES):
            data = pattern(n, "status-%d" % i)
            assert tls_echo(port, pki, data) == data
        wait_until(lambda: len(final_lines(d)) >= ENDED, 10,
                   "%d end-of-connection log lines; log:\n%s" % (ENDED, d.log()))
        code, _, body = get(status_port, "/metrics")
        assert code == 200, body
        yield {"proc": d, "port": port, "status_port": status_port, "metrics": body,
               "bytes": sum(ALLOWED_SIZES), "ended": len(final_lines(d)), "conf": conf}
    finally:
        procs.stop_all()
        echo.close()


# -- /metrics ------------------------------------------------------------------

def test_metrics_connections_allowed_and_denied(traffic):
    """dmtls_connections_total{route="x",result="allowed"} 3, denied 2 and
    failed 3 after 3 allowed, 2 denied and 3 failed connections, each of
    which logged exactly one end-of-connection line."""
    assert traffic["ended"] == ENDED, "end-of-connection lines:\n" + "\n".join(
        final_lines(traffic["proc"]))
    m = parse_metrics(traffic["metrics"])
    assert sample(m, "dmtls_connections_total", route="x", result="allowed") == 3
    assert sample(m, "dmtls_connections_total", route="x", result="denied") == 2
    assert sample(m, "dmtls_connections_total", route="x", result="failed") == 3


def test_metrics_handshake_failures_by_reason(traffic):
    """dmtls_handshake_failures_total counts the client without a
    certificate under no_client_cert and the two whose chains fail (another
    CA, expired) under verify, and nothing else; no target connect failed."""
    m = parse_metrics(traffic["metrics"])
    got = {r: sample(m, "dmtls_handshake_failures_total", route="x", reason=r)
           for r in ("verify", "no_client_cert", "timeout", "other")}
    assert got == {"verify": 2, "no_client_cert": 1, "timeout": 0, "other": 0}, got
    assert sample(m, "dmtls_connect_failures_total", route="x") == 0


def test_metrics_denials_total(traffic):
    """dmtls_denials_total for route x sums to 2 (both were CN denials)."""
    m = parse_metrics(traffic["metrics"])
    assert total(m, "dmtls_denials_total", route="x") == 2, traffic["metrics"]


def test_metrics_bytes_match_traffic(traffic):
    """dmtls_bytes_total in and out both equal the bytes echoed (1000 +
    20000 + 300000)."""
    m = parse_metrics(traffic["metrics"])
    assert sample(m, "dmtls_bytes_total", route="x", direction="in") == traffic["bytes"]
    assert sample(m, "dmtls_bytes_total", route="x", direction="out") == traffic["bytes"]


def test_metrics_duration_histogram(traffic):
    """dmtls_connection_duration_seconds: _count equals the 8 ended
    connections, buckets are cumulative and +Inf equals _count."""
    m = parse_metrics(traffic["metrics"])
    count = sample(m, "dmtls_connection_duration_seconds_count", route="x")
    assert count == ENDED
    buckets = sorted(((float(dict(l)["le"]), v) for (n, l), v in m.items()
                      if n == "dmtls_connection_duration_seconds_bucket"
                      and dict(l).get("route") == "x"))
    assert buckets and buckets[-1][0] == float("inf"), buckets
    values = [v for _, v in buckets]
    assert values == sorted(values), "buckets not cumulative: %r" % buckets
    assert values[-1] == count
    assert sample(m, "dmtls_connection_duration_seconds_sum", route="x") >= 0


def test_metrics_active_connections_gauge(traffic, pki):
    """dmtls_active_connections{route="x"} is 0 when idle, 1 while one
    connection is open, and 0 again after it closed."""
    sp = traffic["status_port"]

    def active():
        return sample(parse_metrics(get(sp, "/metrics")[2]),
                      "dmtls_active_connections", route="x")

    assert active() == 0
    s = tls_connect(traffic["port"], pki)
    try:
        s.sendall(b"open")
        assert s.recv(16) == b"open"
        assert active() == 1
    finally:
        s.close()
    wait_until(lambda: active() == 0, 5, "active connections back to 0")


def test_metrics_text_format(traffic):
    """Every non-comment line is `name{labels} value`; every metric family
    has HELP and TYPE lines before its samples; the families of DESIGN.md
    section 7 are all there, labelled with route."""
    text = traffic["metrics"]
    helps, types, seen = {}, {}, set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            m = COMMENT.match(line)
            assert m, "bad comment line: %r" % line
            (helps if m.group(1) == "HELP" else types)[m.group(2)] = m.group(3)
            continue
        m = SAMPLE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        name = m.group(1)
        family = name
        if name not in types:
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(family) == "histogram", "no TYPE before %r" % line
        assert family in helps, "no HELP before %r" % line
        assert 'route="' in (m.group(2) or ""), "sample without route label: %r" % line
        seen.add(family)
    for family, kind in (("dmtls_connections_total", "counter"),
                         ("dmtls_active_connections", "gauge"),
                         ("dmtls_denials_total", "counter"),
                         ("dmtls_handshake_failures_total", "counter"),
                         ("dmtls_connect_failures_total", "counter"),
                         ("dmtls_bytes_total", "counter"),
                         ("dmtls_cert_reloads_total", "counter"),
                         ("dmtls_cert_not_after_seconds", "gauge"),
                         ("dmtls_connection_duration_seconds", "histogram")):
        assert types.get(family) == kind, "%s: TYPE %r" % (family, types.get(family))
        assert family in seen, "no samples of %s" % family


# -- /healthz, /status, errors -------------------------------------------------

def test_healthz_ok(traffic):
    """GET /healthz answers 200 "ok"."""
    code, _, body = get(traffic["status_port"], "/healthz")
    assert code == 200, body
    assert body.strip() == "ok", body


def test_status_json_certificate(traffic, pki):
    """GET /status is JSON whose routes[0] is x with certificate subject
    "CN=dm", the dm leaf's not_after, a 64-hex digest, its SANs, and a
    last_reload record; the top-level reload record says ok."""
    code, headers, body = get(traffic["status_port"], "/status")
    assert code == 200, body
    st = json.loads(body)
    route = st["routes"][0]
    assert route["name"] == "x"
    cert = route["certificate"]
    assert cert["subject"] == "CN=dm", cert
    want = ssl._ssl._test_decode_cert(pki.path("dm"))["notAfter"]  # 'Dec 28 04:07:36 2026 GMT'
    want_dt = datetime.datetime.strptime(want, "%b %d %H:%M:%S %Y %Z")
    got_dt = datetime.datetime.strptime(cert["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    assert got_dt == want_dt, (cert["not_after"], want)
    assert re.fullmatch(r"[0-9a-f]{64}", cert["digest"]), cert["digest"]
    sans = json.dumps(cert["sans"])
    assert "localhost" in sans and "127.0.0.1" in sans, cert["sans"]
    last = cert.get("last_reload", route.get("last_reload"))
    assert last is not None and last["ok"] is True, route
    assert st["reload"]["ok"] is True, st["reload"]


def test_post_metrics_405(traffic):
    """POST /metrics answers 405 Method Not Allowed."""
    code, headers, _ = get(traffic["status_port"], "/metrics", method="POST")
    assert code == 405


def test_unknown_path_404(traffic):
    """GET /nope answers 404."""
    code, _, _ = get(traffic["status_port"], "/nope")
    assert code == 404


def test_healthz_503_expired_certificate(dmtls_bin, pki, procs, tmp_path):
    """With an expired leaf as its own ssl-cert, dmtls starts (it may not
    refuse to run) and /healthz answers 503 naming the route and that the
    certificate expired."""
    port, status_port = free_port(), free_port()
    conf = status_conf(os.path.join(str(tmp_path), "dmtls.conf"), pki, port,
                       "127.0.0.1:%d" % free_port(), status_port, cert="expired")
    d = start_run(procs, dmtls_bin, conf)
    code, _, body = get(status_port, "/healthz")
    assert code == 503, "healthz %s %r; log:\n%s" % (code, body, d.log())
    assert body == "route x: certificate %s expired\n" % pki.path("expired"), body


def test_status_flag_on_command_line_route(dmtls_bin, pki, procs):
    """`dmtls server ... --status 127.0.0.1:PORT` serves /healthz and a
    /metrics that names the route."""
    port, status_port = free_port(), free_port()
    start_route(procs, dmtls_bin, pki, "server", port, "127.0.0.1:%d" % free_port(),
                "--name", "cli", "--status", "127.0.0.1:%d" % status_port, allowed="dm")
    code, _, body = get(status_port, "/healthz")
    assert code == 200 and body.strip() == "ok", (code, body)
    m = metrics_of(status_port)
    assert sample(m, "dmtls_connections_total", route="cli", result="allowed") == 0


def test_status_last_reload_recovers_when_files_are_fixed(dmtls_bin, pki, procs, tmp_path):
    """A broken key shows in /status as last_reload ok=false with the file
    named, and the last good set keeps serving; putting the original bytes
    back (the set still in use) turns it ok again, and a second break of
    the same kind is logged again.  dmtls_cert_reloads_total counts each
    connection that met the broken state as an error, and a new valid set
    as one more ok (the set built at start is the first)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    shutil.copy(pki.path("dm"), cert)
    shutil.copy(pki.key("dm"), key)
    port, status_port = free_port(), free_port()
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr, "--name", "x",
                        "--status", "127.0.0.1:%d" % status_port, cert=(str(cert), str(key)),
                        allowed="dm")

        def last():
            code, _, body = get(status_port, "/status")
            assert code == 200
            return json.loads(body)["routes"][0]["certificate"]["last_reload"]

        def reloads():
            m = metrics_of(status_port)
            return {r: sample(m, "dmtls_cert_reloads_total", route="x", result=r)
                    for r in ("ok", "error")}

        assert reloads() == {"ok": 1, "error": 0}
        for round_ in (1, 2):
            open(key, "w").close()                      # empty key
            assert tls_refused(port, pki) is None       # a connection rereads
            st = last()
            assert st["ok"] is False and str(key) in st["error"], st
            wait_until(lambda: d.log().count("event=cert_reload_failed") == round_,
                       5, "cert_reload_failed logged %d time(s)" % round_)
            assert reloads() == {"ok": 1, "error": round_}
            shutil.copy(pki.key("dm"), key)             # fixed: the set in use
            assert tls_refused(port, pki) is None
            st = last()
            assert st["ok"] is True and st["error"] == "", st
        new_cert, new_key = pki.leaf("status-reload-new", "dm")
        replace_file(key, open(new_key, "rb").read())
        replace_file(cert, open(new_cert, "rb").read())
        assert tls_refused(port, pki) is None
        assert reloads() == {"ok": 2, "error": 2}
