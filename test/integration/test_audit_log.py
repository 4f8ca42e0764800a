"""Log lines and the /status JSON stay valid whatever a peer sends
(DESIGN.md section 7, issue 9 item 11).

A client with a self-signed certificate picks its own CN: quotes,
backslashes, newlines, an ANSI escape, DEL and bytes that are not UTF-8
(as a T61String, which OpenSSL loads as Latin-1 and wolfSSL hands over
byte for byte), or 3000 bytes of quotes, backslashes and two-byte
characters.  Its handshake fails (no CA signed it) and dmtls logs
handshake_failed with that CN: with --log-format json every stderr line
must parse as JSON; in logfmt the line must stay one line, the CN escaped.
"""

import datetime
import json
import os
import re
import shutil
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from backends import EchoServer, wait_until
from conftest import free_port
from test_audit_status import get
from tlsclient import tls_refused

ROUTE = "hostile-route"
EVIL_CN = b'evil"\\\n\r\t\x1b[31m\x7f\xff\xfe\xc0\xaf\x80\xed\xa0\x80\xe2\x82 end'
# What dmtls must write for EVIL_CN: logfmt keeps every byte (\xNN), JSON
# cannot, so each byte that is not UTF-8 becomes U+FFFD.
EVIL_LOGFMT = (r'cn="evil\"\\\n\r\t\u001b[31m\u007f'
               r'\xff\xfe\xc0\xaf\x80\xed\xa0\x80\xe2\x82 end"')
EVIL_JSON = 'evil"\\\n\r\t\x1b[31m\x7f' + "\ufffd" * 10 + " end"
LONG_CN = '"\\\u00e9'.encode() * 750          # 3000 bytes
LONG_TEXT = LONG_CN.decode()


# -- certificates --------------------------------------------------------------

def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag, body):
    return bytes([tag]) + _der_len(len(body)) + body


def self_signed(dirpath, name, cn, asn1_type):
    """Write NAME.pem / NAME-key.pem: a self-signed P-256 certificate whose
    subject and issuer are CN=cn (bytes, any content, as asn1_type).  The
    certificate is built with a placeholder of the same length, which is
    then replaced in the TBS bytes and signed again, because cryptography
    will not encode such names.  Returns (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    ph = "".join(chr(0x41 + (i * 7) % 26) for i in range(len(cn)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ph, _type=asn1_type,
                                            _validate=False)])
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(ph.encode()) == 2
    tbs = tbs.replace(ph.encode(), cn)
    der = cert.public_bytes(serialization.Encoding.DER)
    off = 2 + (der[1] & 0x7f if der[1] & 0x80 else 0) + len(tbs)
    alg = der[off:off + 2 + der[off + 1]]
    sig = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = _tlv(0x30, tbs + alg + _tlv(0x03, b"\x00" + sig))
    cpath = os.path.join(os.fspath(dirpath), name + ".pem")
    kpath = os.path.join(os.fspath(dirpath), name + "-key.pem")
    with open(cpath, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
    with open(kpath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{"evil": (cert, key), "long": (cert, key)}."""
    d = tmp_path_factory.mktemp("hostile")
    return {"evil": self_signed(d, "evil", EVIL_CN, _ASN1Type.T61String),
            "long": self_signed(d, "long", LONG_CN, _ASN1Type.UTF8String)}


# -- helpers -------------------------------------------------------------------

def start(procs, dmtls_bin, pki, tmp_path, fmt):
    """dmtls server route ROUTE with --log-format fmt and a status listener
    whose ssl-cert path holds a quote, a backslash and bytes that are not
    UTF-8 (text the operator chose that /status shows).  Returns (proc,
    route port, status port, that path)."""
    cert = os.path.join(os.fsencode(tmp_path), b'dm-\xff\xfe"q\\.pem')
    shutil.copyfile(pki.path("dm"), cert)
    echo = EchoServer()
    port, sport = free_port(), free_port()
    argv = [dmtls_bin, "server", "--name", ROUTE, "--listen", "127.0.0.1:%d" % port,
            "--target", echo.addr, "--ssl-ca", pki.ca, "--ssl-cert", cert,
            "--ssl-key", pki.key("dm"), "--cert-allowed-cn", "dm",
            "--status", "127.0.0.1:%d" % sport, "--log-format", fmt]
    p = procs.start(argv, name="dmtls-" + fmt)
    p.echo = echo
    p.wait_log(r"ready", timeout=10)
    return p, port, sport, cert


def raw_lines(proc):
    with open(proc.stderr_path, "rb") as f:
        return f.read().splitlines(keepends=True)


def json_lines(proc):
    """Every stderr line, each parsed strictly: UTF-8, one JSON object."""
    out = []
    for raw in raw_lines(proc):
        assert raw.endswith(b"\n"), raw
        text = raw.decode("utf-8")     # raises on bytes that are not UTF-8
        assert not re.search(r"[\x00-\x1f\x7f]", text[:-1]), repr(text)
        rec = json.loads(text)
        assert isinstance(rec, dict), text
        out.append(rec)
    return out


def refused(port, pki, cert):
    why = tls_refused(port, pki, cert=cert)
    assert why is not None, "the self-signed client was accepted"


def wait_failed_lines(proc, n, parse):
    return wait_until(lambda: (lambda v: v if len(v) >= n else None)(
        [r for r in parse(proc) if r.get("event") == "handshake_failed"]),
        5, "%d handshake_failed lines; log:\n%s" % (n, proc.log()))


_LOGFMT_PAIR = re.compile(rb'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)(?: |$)')
_LOGFMT_BODY = re.compile(rb'(?:[^"\\]|\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|["\\nrt]))*')
_LOGFMT_ESC = re.compile(rb'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|["\\nrt])')


def _unescape(m):
    e = m.group(1)
    if e[:1] == b"x":
        return bytes([int(e[1:], 16)])
    if e[:1] == b"u":
        return chr(int(e[1:], 16)).encode()
    return {b'"': b'"', b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"t": b"\t"}[e]


def logfmt_lines(proc):
    """Every stderr line parsed strictly as logfmt: pairs separated by one
    space covering the whole line, values bare or quoted with the escapes
    dmtls writes; values decoded to bytes (keys to str)."""
    out = []
    for raw in raw_lines(proc):
        assert raw.endswith(b"\n"), raw
        line = raw[:-1]
        text = line.decode("utf-8")    # raises on bytes that are not UTF-8
        assert not re.search("[\x00-\x1f\x7f-\x9f]", text), line
        rec, pos = {}, 0
        while pos < len(line):
            m = _LOGFMT_PAIR.match(line, pos)
            assert m, "not logfmt at %d: %r" % (pos, line)
            v = m.group(2)
            if v.startswith(b'"'):
                body = v[1:-1]
                assert _LOGFMT_BODY.fullmatch(body), v
                v = _LOGFMT_ESC.sub(_unescape, body)
            rec[m.group(1).decode()] = v
            pos = m.end()
        rec["event"] = rec.get("event", b"").decode()
        out.append(rec)
    return out


# -- tests ---------------------------------------------------------------------

def test_json_log_hostile_cn_stays_json(procs, dmtls_bin, pki, tmp_path, hostile):
    """--log-format json: after peers with hostile CNs every stderr line is
    one JSON object; the handshake_failed lines name the route and carry
    the CN, bytes that are not UTF-8 as U+FFFD."""
    p, port, sport, _ = start(procs, dmtls_bin, pki, tmp_path, "json")
    try:
        refused(port, pki, hostile["evil"])
        refused(port, pki, hostile["long"])
        failed = wait_failed_lines(p, 2, json_lines)
    finally:
        p.echo.close()
    assert all(r.get("route") == ROUTE for r in failed), failed
    cns = [r.get("cn") for r in failed]
    assert EVIL_JSON in cns, cns
    long_cn = [c for c in cns if c != EVIL_JSON][0]
    if long_cn is not None:
        # wolfSSL or dmtls may keep only a prefix; what is kept is exact,
        # but for a character cut in two (U+FFFD) or the cut mark.
        kept = re.sub("(\ufffd|\\.\\.\\.)$", "", long_cn)
        assert len(kept) > 50 and LONG_TEXT.startswith(kept), long_cn[:200]
    json_lines(p)


def test_logfmt_log_hostile_cn_one_line(procs, dmtls_bin, pki, tmp_path, hostile):
    """logfmt: the handshake_failed line of each hostile peer stays one
    line, one logfmt record, and shows the CN escaped byte for byte."""
    p, port, _, _ = start(procs, dmtls_bin, pki, tmp_path, "text")
    try:
        refused(port, pki, hostile["evil"])
        refused(port, pki, hostile["long"])
        failed = wait_failed_lines(p, 2, logfmt_lines)
    finally:
        p.echo.close()
    assert all(r.get("route") == ROUTE.encode() for r in failed), failed
    line = [l for l in raw_lines(p) if b"event=handshake_failed" in l and b"evil" in l]
    assert len(line) == 1 and EVIL_LOGFMT.encode() in line[0], line
    cns = [r.get("cn") for r in failed]
    assert EVIL_CN in cns, cns
    long_cn = [c for c in cns if c != EVIL_CN][0]
    if long_cn is not None:
        kept = re.sub(rb"\.\.\.$", b"", long_cn)
        assert len(kept) > 50 and LONG_CN.startswith(kept), long_cn[:200]


def test_status_json_valid_with_hostile_text(procs, dmtls_bin, pki, tmp_path, hostile):
    """/status after a hostile peer, with an ssl-cert path holding a quote,
    a backslash and bytes that are not UTF-8: strict UTF-8 JSON, the path
    shown with U+FFFD for the bytes JSON cannot carry."""
    p, port, sport, cert = start(procs, dmtls_bin, pki, tmp_path, "json")
    try:
        refused(port, pki, hostile["evil"])
        p.wait_log(r'"event":"handshake_failed"')
        code, _, body = get(sport, "/status")
    finally:
        p.echo.close()
    assert code == 200
    st = json.loads(body.decode("utf-8"))
    route = [r for r in st["routes"] if r["name"] == ROUTE][0]
    want = cert.decode("utf-8", "replace")
    assert route["certificate"]["files"]["ssl-cert"] == want, route["certificate"]
