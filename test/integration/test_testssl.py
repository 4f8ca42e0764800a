"""A TLS audit of a server route by testssl.sh (issue 10, "Adversarial
tests": testssl.sh against a server route).

Debian 12's testssl.sh 3.0.8 scans a dmtls server route and its flat JSON
(--jsonfile) is judged finding by finding:

- protocols: SSLv2, SSLv3, TLS 1.0 and 1.1 not offered; TLS 1.2 and 1.3 are;
- ciphers per protocol (-E): only TLS 1.2 and 1.3 suites, each one AEAD
  (GCM, CCM or ChaCha20-Poly1305), and at least one for each of the two;
- server defaults (-S), forward secrecy (-f) and every vulnerability check
  of -U but BREACH: each is present and none is flagged;
- no finding anywhere above OK/INFO but the two excused below.

The route is the mutual-TLS route as deployed (verify-client on).
testssl 3.0.8 cannot present a client certificate (--mtls arrived in 3.2),
which only matters to its client-initiated renegotiation check: that one
(-R) runs against a second route with `verify-client = false`, which
differs from the first in nothing but the verify mode (certset.c sets the
same versions, ciphers and groups on both).  BREACH (-B) is left out: it
is about HTTP compression in the application behind the route, and dmtls
relays bytes, it does not speak HTTP.  Client simulation (-c), HTTP
headers (-h) and the standard cipher categories (-s, subsumed by -E) are
skipped as slow and irrelevant.  The whole module takes about 50 s.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from backends import EchoServer
from conftest import scaled
from routes import conf_text, echo_once, start_run, write_conf
from tlsclient import tls_connect

TESTSSL_TIMEOUT = scaled(300)  # seconds one scan may take before the test fails
BASE_ARGS = ["--quiet", "--color", "0", "--warnings", "off", "-n", "none",
             "--ip", "127.0.0.1", "--connect-timeout", "%d" % scaled(10),
             "--openssl-timeout", "%d" % scaled(10)]
# testssl's own waits for a reply (its defaults), scaled like ours: under
# valgrind (make check-valgrind) dmtls answers many times slower.
TESTSSL_ENV = {"HEADER_MAXSLEEP": "%d" % scaled(5), "MAX_WAITSOCK": "%d" % scaled(10),
               "CCS_MAX_WAITSOCK": "%d" % scaled(5),
               "HEARTBLEED_MAX_WAITSOCK": "%d" % scaled(8)}
# Everything -U runs but -R (second test) and -B (BREACH: HTTP only).
VULN_ARGS = ["-H", "-I", "-T", "-BB", "-C", "-O", "-Z", "-W", "-A", "-L", "-F",
             "-J", "-D", "-4"]
VULN_IDS = ("heartbleed", "CCS", "ticketbleed", "ROBOT", "CRIME_TLS", "POODLE_SSL",
            "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST",
            "LUCKY13", "RC4")
GOOD = {"OK", "INFO", "DEBUG"}
# Findings that are not about dmtls, each with its reason.
EXCUSED = {
    # testssl's own OpenSSL lacks the GOST engine: a note about the scanner.
    "engine_problem": "scanner's local openssl",
    # The certificate names no CRL or OCSP URI: its content is the
    # operator's (the test PKI's); DM's PKIs have none either, and dmtls
    # checks revocation from ssl-crl files, not URIs in certificates.
    "cert_revocation": "test PKI certificate content",
}
AEAD_RX = re.compile(r"_GCM_|_CCM(?:_8)?(?:_|$)|_CHACHA20_POLY1305_")


def _testssl_bin():
    path = shutil.which("testssl") or shutil.which("testssl.sh")
    if path is None:
        pytest.fail("testssl is missing: apt-get install testssl.sh (./bootstrap "
                    "installs it)", pytrace=False)
    return path


def _testssl_version(path):
    out = subprocess.run([path, "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"testssl\S*\s+(\d+\.\d+\S*)", re.sub(r"\x1b\[[0-9;]*m", "", out))
    return m.group(1) if m else "unknown"


def scan(tmp_path, port, name, *checks, ca=None):
    """Run testssl with `checks` against 127.0.0.1:port; return its findings
    (a list of dicts: id, severity, finding) and the seconds it took."""
    path = _testssl_bin()
    jsonfile = os.path.join(tmp_path, name + ".json")
    argv = [path] + BASE_ARGS + (["--add-ca", ca] if ca else []) + list(checks) + [
        "--jsonfile", jsonfile, "127.0.0.1:%d" % port]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=TESTSSL_TIMEOUT,
                       cwd=tmp_path, env=dict(os.environ, **TESTSSL_ENV))
    took = time.monotonic() - t0
    with open(os.path.join(tmp_path, name + ".out"), "w") as f:
        f.write(r.stdout + r.stderr)
    assert os.path.exists(jsonfile), "testssl wrote no JSON (status %d):\n%s%s" % (
        r.returncode, r.stdout[-3000:], r.stderr[-2000:])
    with open(jsonfile) as f:
        findings = json.load(f)
    print("testssl %s, %s: %.0f s, %d findings" % (_testssl_version(path), name, took,
                                                   len(findings)))
    return findings, took


def flagged(findings):
    """Findings above OK/INFO that no EXCUSED entry covers, as text lines."""
    return ["%s %s: %s" % (f["id"], f["severity"], f["finding"]) for f in findings
            if f["severity"] not in GOOD and f["id"] not in EXCUSED]


def by_id(findings):
    return {f["id"]: f for f in findings}


def audit_conf(tmp_path, pki, port, target, verify_client=True):
    """A config with one server route (listen port -> target) presenting a
    leaf valid for a year (testssl flags one that expires within 60 days)."""
    if not os.path.exists(pki.path("testssl")):
        pki.leaf("testssl", "dm", days=365)
    extra = {} if verify_client else {"audit": ["security = { verify-client = false; };"]}
    return write_conf(tmp_path / "audit.conf",
                      conf_text(pki, [("audit", port, target, None)], cert="testssl",
                                extra_route_lines=extra))[0]


def test_testssl_mtls_route_protocols_ciphers_vulnerabilities(dmtls_bin, pki, procs,
                                                              port, tmp_path):
    """testssl on the mutual-TLS server route: TLS 1.2 and 1.3 only, AEAD
    ciphers only, nothing flagged by its server-default, forward-secrecy and
    vulnerability checks."""
    with EchoServer() as backend:
        d = start_run(procs, dmtls_bin, audit_conf(tmp_path, pki, port, backend.addr))
        findings, _ = scan(str(tmp_path), port, "mtls", "-p", "-E", "-S", "-f",
                           *VULN_ARGS, ca=pki.ca)
        # the route still works for a real client after the scan
        with tls_connect(port, pki) as s:
            assert echo_once(s, b"after testssl") == b"after testssl"
    f = by_id(findings)
    assert "scanTime" in f and "scanProblem" not in f, findings

    for pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert f[pid]["finding"] == "not offered", f[pid]
    assert f["TLS1_2"]["finding"] == "offered", f["TLS1_2"]
    assert f["TLS1_3"]["finding"].startswith("offered"), f["TLS1_3"]

    ciphers = [x for x in findings if x["id"].startswith("cipher-")]
    protos = set()
    for c in ciphers:
        proto = c["id"].split("_x")[0][len("cipher-"):]
        iana = c["finding"].split()[-1]
        assert proto in ("tls1_2", "tls1_3"), "cipher below TLS 1.2: %s" % c
        assert AEAD_RX.search(iana), "cipher without AEAD: %s" % c
        protos.add(proto)
    assert protos == {"tls1_2", "tls1_3"}, ciphers

    for vid in VULN_IDS:
        assert vid in f, "no %s finding: the check did not run" % vid
    assert f["PFS"]["severity"] == "OK", f["PFS"]
    # the route asked testssl for a client certificate (testssl's own
    # "certificate-based authentication" verdict races with the alert)
    d.wait_log(r'event=handshake_failed .*reason="no client certificate"')
    assert f["cert_chain_of_trust"]["severity"] == "OK", f["cert_chain_of_trust"]
    assert flagged(findings) == []


def test_testssl_no_client_initiated_renegotiation(dmtls_bin, pki, procs, port,
                                                   tmp_path):
    """testssl's renegotiation checks (-R), which need a full handshake, on a
    route with verify-client = false: secure renegotiation (RFC 5746) and
    no client-initiated renegotiation."""
    with EchoServer() as backend:
        # testssl drops connections without close_notify once the handshake
        # is done; dmtls resets the plaintext side then (relay.c
        # read_failed: a truncated stream must not look complete).
        backend.expect_error(r"ConnectionResetError")
        d = start_run(procs, dmtls_bin, audit_conf(tmp_path, pki, port, backend.addr,
                                                   verify_client=False))
        d.wait_log(r"event=no_client_auth")
        findings, _ = scan(str(tmp_path), port, "renego", "-R")
    f = by_id(findings)
    assert f["secure_renego"]["severity"] == "OK", f["secure_renego"]
    assert f["secure_client_renego"]["severity"] == "OK", f["secure_client_renego"]
    assert flagged(findings) == []
