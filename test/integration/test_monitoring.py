"""The monitoring kit (contrib/monitoring/, DESIGN.md section 7's metric
names): the alert rules pass `promtool check rules` and their test file
`promtool test rules`, the test file makes every alert fire and not fire,
the rules and the Grafana dashboard query only metrics /metrics exports (or
DESIGN 7 names not exported yet, listed in PENDING), /metrics of a dmtls
that has seen allowed, denied and failed connections passes `promtool check
metrics`, and a real Prometheus scraping dmtls reads the allowed and denied
counts the test produced.

promtool and prometheus come from Debian's package prometheus (./bootstrap
installs it).
"""

import json
import os
import re
import shutil
import urllib.parse
import urllib.request

import pytest

from backends import EchoServer, wait_until
from conftest import REPO, Procs, free_port, run
from test_crl import gencrl
from tlsclient import tls_connect, tls_refused

KIT = os.path.join(REPO, "contrib", "monitoring")
RULES = os.path.join(KIT, "dmtls-alerts.yml")
RULES_TEST = os.path.join(KIT, "dmtls-alerts.test.yml")
DASHBOARD = os.path.join(KIT, "dmtls-dashboard.json")

# DESIGN.md section 7: the metric names, the contract of the kit.
DESIGN_METRICS = {
    "dmtls_connections_total", "dmtls_active_connections", "dmtls_denials_total",
    "dmtls_handshake_failures_total", "dmtls_bytes_total", "dmtls_cert_reloads_total",
    "dmtls_cert_not_after_seconds", "dmtls_connection_duration_seconds",
    "dmtls_connect_failures_total", "dmtls_crl_next_update_seconds",
}
# DESIGN 7 names the kit uses that dmtls does not export yet (none: the
# seen fixture's routes carry a CRL, so the CRL gauge is exported too).
PENDING = set()
ALLOWED, DENIED = 3, 2
METRIC_RX = re.compile(r"\bdmtls_[a-z0-9_]+\b")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is missing: apt-get install prometheus (./bootstrap installs "
                    "it)" % name, pytrace=False)
    return path


def write_conf(path, pki, port_x, target_x, port_y, target_y, status_port, crl):
    text = "\n".join([
        'log-level = "info";',
        'status = "127.0.0.1:%d";' % status_port,
        'shutdown-timeout = "2s";',
        "security = {",
        '  ssl-ca = "%s";' % pki.ca,
        '  ssl-cert = "%s";' % pki.path("dm"),
        '  ssl-key = "%s";' % pki.key("dm"),
        '  cert-allowed-cn = ["dm"];',
        '  ssl-crl = "%s";' % crl,
        "};",
        "routes = (",
        '  { name = "x"; kind = "server"; listen = "127.0.0.1:%d"; target = "%s"; },'
        % (port_x, target_x),
        '  { name = "y"; kind = "server"; listen = "127.0.0.1:%d"; target = "%s"; '
        'connect-timeout = "2s"; }' % (port_y, target_y),
        ");", ""])
    with open(path, "w") as f:
        f.write(text)
    return path


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def family(name):
    return HISTOGRAM_SUFFIX.sub("", name) if name.endswith(
        ("_bucket", "_sum", "_count")) else name


def exported(metrics_text):
    """Metric family names of a /metrics text (its # TYPE lines)."""
    return {l.split()[2] for l in metrics_text.splitlines() if l.startswith("# TYPE ")}


@pytest.fixture(scope="module")
def seen(dmtls_bin, pki, tmp_path_factory):
    """A dmtls after ALLOWED allowed, DENIED denied and 1 failed connection
    on route x, and 1 failed (target refused) on route y; dict with the
    status port, the /metrics text and the Procs."""
    tmp = str(tmp_path_factory.mktemp("monitoring"))
    procs = Procs(tmp)
    echo = EchoServer()
    try:
        px, py, sp = free_port(), free_port(), free_port()
        crl = gencrl(pki, os.path.join(tmp, "ca.crl"))
        conf = write_conf(os.path.join(tmp, "dmtls.conf"), pki, px, echo.addr, py,
                          "127.0.0.1:%d" % free_port(), sp, crl)
        d = procs.start([dmtls_bin, "run", "-c", conf], name="dmtls-run")
        d.expect_error(r"event=conn_failed")
        d.wait_log(r"event=ready", timeout=10)
        for i in range(ALLOWED):
            s = tls_connect(px, pki)
            s.sendall(b"ping %d" % i)
            assert s.recv(64) == b"ping %d" % i
            s.close()
        for _ in range(DENIED):
            assert tls_refused(px, pki, cert="other") is not None, d.log()
        assert tls_refused(px, pki, cert="untrusted") is not None, d.log()
        s = tls_connect(py, pki)
        s.settimeout(5)
        try:
            s.recv(64)  # dmtls closes it once the target refuses
        except OSError:
            pass
        s.close()

        def counted():
            _, body = http_get("http://127.0.0.1:%d/metrics" % sp)
            return (('dmtls_connections_total{route="x",result="allowed"} %d' % ALLOWED) in body
                    and ('dmtls_connections_total{route="x",result="denied"} %d' % DENIED) in body
                    and 'dmtls_connections_total{route="x",result="failed"} 1' in body
                    and 'dmtls_connections_total{route="y",result="failed"} 1' in body
                    and 'dmtls_connect_failures_total{route="y"} 1' in body)
        wait_until(counted, 10, "every connection counted in /metrics")
        _, body = http_get("http://127.0.0.1:%d/metrics" % sp)
        yield {"status_port": sp, "metrics": body, "procs": procs, "tmp": tmp}
    finally:
        procs.stop_all()
        echo.close()


# -- the rules -----------------------------------------------------------------

def test_promtool_check_rules():
    r = run([tool("promtool"), "check", "rules", RULES], timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_test_rules():
    r = run([tool("promtool"), "test", "rules", RULES_TEST], timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _alert_names():
    with open(RULES) as f:
        return re.findall(r"^\s*- alert:\s*(\S+)", f.read(), re.M)


def test_rules_test_fires_and_clears_every_alert():
    """For every alert, the test file has an evaluation that expects it to
    fire and one that expects it silent."""
    with open(RULES_TEST) as f:
        text = f.read()
    items = re.split(r"^\s*- eval_time:", text, flags=re.M)[1:]
    fires, silent = set(), set()
    for item in items:
        m = re.search(r"alertname:\s*(\S+)", item)
        assert m, item
        (silent if re.search(r"exp_alerts:\s*\[\]", item) else fires).add(m.group(1))
    names = set(_alert_names())
    required = {"DmtlsCertificateExpiringSoon", "DmtlsCertificateReloadsFailing",
                "DmtlsCrlNextUpdateSoon", "DmtlsDenialsAboveBaseline",
                "DmtlsHandshakeFailures", "DmtlsTargetConnectFailures", "DmtlsDown"}
    assert required <= names, required - names
    assert not names - fires, "never expected to fire: %s" % (names - fires)
    assert not names - silent, "never expected silent: %s" % (names - silent)


def test_rules_use_design_metric_names(seen):
    """Every dmtls_* name in the rules is a DESIGN 7 name, and is exported
    by /metrics or listed in PENDING."""
    with open(RULES) as f:
        names = {family(n) for n in METRIC_RX.findall(f.read())}
    assert names, "no dmtls metric in the rules"
    assert not names - DESIGN_METRICS, "not DESIGN 7 names: %s" % (names - DESIGN_METRICS)
    missing = names - exported(seen["metrics"]) - PENDING
    assert not missing, "queried but not exported: %s" % missing


# -- the dashboard ---------------------------------------------------------------

def _queries(node):
    """Every PromQL string of a Grafana dashboard: targets' expr and the
    template variables' queries."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, str):
                yield v
            else:
                yield from _queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from _queries(v)


def test_dashboard_metrics_are_exported(seen):
    """Every metric the dashboard queries is exported by /metrics (or is a
    DESIGN 7 name not implemented yet, PENDING); the panels the issue asks
    for are there."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    queries = list(_queries(dash))
    names = {family(n) for q in queries for n in METRIC_RX.findall(q)}
    have = exported(seen["metrics"])
    missing = names - have - PENDING
    assert not missing, "the dashboard queries metrics /metrics does not export: %s" % missing
    assert not names - DESIGN_METRICS, names - DESIGN_METRICS
    for want in ("dmtls_connections_total", "dmtls_denials_total",
                 "dmtls_handshake_failures_total", "dmtls_bytes_total",
                 "dmtls_connection_duration_seconds", "dmtls_cert_not_after_seconds",
                 "dmtls_cert_reloads_total"):
        assert want in names, "no panel queries %s" % want
    by_reason = [q for q in queries if "dmtls_denials_total" in q and "reason" in q]
    assert by_reason, "denials are not shown by reason"
    per_route = [q for q in queries if "dmtls_cert_reloads_total" in q and "route" in q
                 and "result" in q]
    assert per_route, "reload results are not shown per route"
    print("DESIGN 7 names not exported yet, used by the kit: %s" % sorted(names & PENDING))


# -- /metrics and a real Prometheus --------------------------------------------------

def test_metrics_pass_promtool_check_metrics(seen):
    """After allowed, denied and failed connections, /metrics passes
    `promtool check metrics` with no complaint."""
    r = run([tool("promtool"), "check", "metrics"], input=seen["metrics"], timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "exit %d\n%s%s\n/metrics:\n%s" % (r.returncode, r.stdout, r.stderr, seen["metrics"])


def test_prometheus_scrapes_allowed_and_denied_counts(seen):
    """Debian's Prometheus scraping dmtls on loopback: its HTTP query API
    returns the allowed and denied counts of route x, and up = 1."""
    prom = tool("prometheus")
    tmp = seen["tmp"]
    port = free_port()
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "rule_files:\n  - %s\n"
                "scrape_configs:\n  - job_name: dmtls\n    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % (RULES, seen["status_port"]))
    p = seen["procs"].start(
        [prom, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
         "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
        name="prometheus", wait_port=port, timeout=30)
    api = "http://127.0.0.1:%d/api/v1/query?query=" % port

    def value(q):
        try:
            _, body = http_get(api + urllib.parse.quote(q))
        except OSError:
            return None
        res = json.loads(body)["data"]["result"]
        return float(res[0]["value"][1]) if len(res) == 1 else None

    try:
        wait_until(lambda: value('up{job="dmtls"}') == 1, 30, "up == 1")
        wait_until(lambda: value('dmtls_connections_total{route="x",result="allowed"}')
                   == ALLOWED, 30, "allowed == %d in Prometheus" % ALLOWED)
        assert value('dmtls_connections_total{route="x",result="denied"}') == DENIED
        assert value('sum(dmtls_denials_total{route="x"})') == DENIED
        # The kit's rules load into it.
        _, body = http_get("http://127.0.0.1:%d/api/v1/rules" % port)
        loaded = {r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
        assert set(_alert_names()) <= loaded, loaded
    except AssertionError as e:
        raise AssertionError("%s\nprometheus stderr:\n%s" % (e, p.log()[-3000:]))
    finally:
        p.stop()
