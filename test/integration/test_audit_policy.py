"""Identity policy defects of issue 9 (items 6 and 7; DESIGN section 4), seen
from outside: a client presents a certificate from the trusted CA whose
subject or SANs are unusual, and a server route decides.

- a subject with more than one CN matches no CN rule, and the denial says
  so (wolfSSL reported the last CN: CN=other, CN=dm passed ["dm"]);
- names are compared whole: a 300-byte CN does not match its first 255
  bytes, and a rule longer than the 255 bytes dmtls keeps is a config error
  (it could never match);
- every OU of the subject counts for cert-allowed-ou;
- an empty DNS SAN, or one holding a NUL, never matches: no config lets such
  a certificate through (an empty rule is refused, see test_audit_config).

The certificates are made here with python3-cryptography, signed by the
session PKI's CA (openssl cannot write a CN longer than 64 bytes).
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backends import EchoServer
from conftest import free_port
from routes import conf_text, expect_config_error, start_run, write_conf
from tlsclient import tls_refused

LONG = "d" * 255            # the longest name dmtls compares
LONGER = LONG + "x" * 45    # 300 bytes, starting with LONG


# -- certificates ----------------------------------------------------------------

def _attr(oid, value):
    return x509.NameAttribute(oid, value, _validate=False)


def make_leaf(pki, tmp_path, name, subject, sans=()):
    """A client+server leaf signed by the PKI's CA, with `subject` a list of
    (oid, value) in order, one RDN each, and `sans` a list of x509
    GeneralNames.  Returns the (cert, key) paths."""
    with open(pki.key("ca"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(pki.ca, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.RelativeDistinguishedName([_attr(o, v)])
                                  for o, v in subject]))
         .issuer_name(ca.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                      False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                               ExtendedKeyUsageOID.SERVER_AUTH]),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             ca_key.public_key()), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    cpath = os.path.join(str(tmp_path), name + ".pem")
    kpath = os.path.join(str(tmp_path), name + "-key.pem")
    with open(cpath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kpath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath


CN = NameOID.COMMON_NAME
OU = NameOID.ORGANIZATIONAL_UNIT_NAME


# -- a server route with given rules ----------------------------------------------

def policy_conf(pki, port, target, rules):
    """A config of one server route p whose security group holds `rules`
    (key -> list), with no rule at the top level."""
    sec = " ".join('%s = [%s];' % (k, ", ".join('"%s"' % v for v in vs))
                   for k, vs in rules.items())
    return conf_text(pki, [("p", port, target, None)], cns=None,
                     extra_route_lines={"p": ["security = { %s };" % sec]})


def start_route(procs, dmtls_bin, pki, tmp_path, echo, rules):
    """`dmtls run` of policy_conf(); returns (proc, port)."""
    port = free_port()
    conf, _ = write_conf(os.path.join(str(tmp_path), "dmtls-%d.conf" % port),
                         policy_conf(pki, port, echo.addr, rules))
    return start_run(procs, dmtls_bin, conf, name="dmtls-%d" % port), port


def assert_allowed(d, port, pki, cert):
    why = tls_refused(port, pki, cert=cert)
    assert why is None, "refused (%s); log:\n%s" % (why, d.log())


def assert_refused(d, port, pki, cert):
    """The client is refused, by the policy (event=denied) or because
    wolfSSL cannot parse its certificate (5.9 refuses a SAN holding a NUL:
    event=handshake_failed); returns that final line."""
    since = d.mark()
    why = tls_refused(port, pki, cert=cert)
    assert why is not None, "accepted; log:\n%s" % d.log()
    return d.wait_log(r"^.*event=(denied|handshake_failed) .*$", since=since).group(0)


def assert_denied(d, port, pki, cert, reason=None):
    """The client is refused, and dmtls logs event=denied (with `reason`, a
    regex, in its reason= field); returns the denied line."""
    since = d.mark()
    why = tls_refused(port, pki, cert=cert)
    assert why is not None, "accepted; log:\n%s" % d.log()
    m = d.wait_log(r"^.*event=denied .*$", since=since)
    if reason is not None:
        d.wait_log(r'event=denied .*reason="[^"]*%s' % reason, since=since)
    return m.group(0)


# -- item 6: names widen the allow-list -------------------------------------------

def test_repeated_cn_denied_naming_multiple_cns(dmtls_bin, pki, procs, tmp_path):
    """CN=other, CN=dm on a route allowing dm: denied, the reason naming the
    two CN attributes (wolfSSL reported the last one, dm, and it passed)."""
    two = make_leaf(pki, tmp_path, "two-cn", [(CN, "other"), (CN, "dm")])
    one = make_leaf(pki, tmp_path, "one-cn", [(CN, "dm")])
    with EchoServer() as echo:
        d, port = start_route(procs, dmtls_bin, pki, tmp_path, echo,
                              {"cert-allowed-cn": ["dm"]})
        assert_allowed(d, port, pki, one)
        line = assert_denied(d, port, pki, two, reason=r"2 CN attributes")
        assert "other,dm" in line, line


def test_cn_longer_than_rule_prefix_denied(dmtls_bin, pki, procs, tmp_path):
    """A 300-byte CN starting with a 255-byte rule is denied (it was cut to
    255 bytes before the comparison, and matched); the 255-byte CN itself
    is allowed."""
    longer = make_leaf(pki, tmp_path, "cn-300", [(CN, LONGER)])
    exact = make_leaf(pki, tmp_path, "cn-255", [(CN, LONG)])
    with EchoServer() as echo:
        d, port = start_route(procs, dmtls_bin, pki, tmp_path, echo,
                              {"cert-allowed-cn": [LONG]})
        assert_allowed(d, port, pki, exact)
        assert_denied(d, port, pki, longer, reason=r"longer than 255 bytes")


def test_rule_longer_than_kept_names_is_config_error(dmtls_bin, pki, tmp_path):
    """Decided: a rule longer than the 255 bytes dmtls keeps of a name could
    never match (DESIGN 4: a longer name does not match), so a 300-byte rule,
    even one equal to a peer's 300-byte CN, is a config error naming the key
    and the limit (it used to be accepted and silently never matched)."""
    conf, text = write_conf(os.path.join(str(tmp_path), "dmtls.conf"), policy_conf(
        pki, free_port(), "127.0.0.1:%d" % free_port(), {"cert-allowed-cn": [LONGER]}))
    expect_config_error(dmtls_bin, conf, text, "cert-allowed-cn", "cert-allowed-cn", "255")


def test_every_ou_matches(dmtls_bin, pki, procs, tmp_path):
    """OU=ops, OU=dm-cluster, OU=eu: cert-allowed-ou matches any of the three
    (wolfSSL reported one OU only); an OU absent from the subject does not."""
    leaf = make_leaf(pki, tmp_path, "ous", [(OU, "ops"), (OU, "dm-cluster"), (OU, "eu"),
                                             (CN, "x")])
    with EchoServer() as echo:
        for ou in ("ops", "dm-cluster", "eu"):
            d, port = start_route(procs, dmtls_bin, pki, tmp_path, echo,
                                  {"cert-allowed-ou": [ou]})
            assert_allowed(d, port, pki, leaf)
        d, port = start_route(procs, dmtls_bin, pki, tmp_path, echo,
                              {"cert-allowed-ou": ["dm"]})
        assert_denied(d, port, pki, leaf, reason=r"; OU ops,dm-cluster,eu\)")


# -- item 7: empty names -------------------------------------------------------------

def test_empty_or_nul_dns_san_never_matches(dmtls_bin, pki, procs, tmp_path):
    """An empty DNS SAN and one holding a NUL ("w1.dm\\0.evil") are denied on
    a route allowing w1.dm, and no route lets them through: a config with
    the rule "" is refused (it was accepted, and both SANs became "" and
    matched it)."""
    empty = make_leaf(pki, tmp_path, "san-empty", [(CN, "x")], [x509.DNSName("")])
    nul = make_leaf(pki, tmp_path, "san-nul", [(CN, "x")], [x509.DNSName("w1.dm\0.evil")])
    good = make_leaf(pki, tmp_path, "san-good", [(CN, "x")], [x509.DNSName("w1.dm")])
    with EchoServer() as echo:
        d, port = start_route(procs, dmtls_bin, pki, tmp_path, echo,
                              {"cert-allowed-dns": ["w1.dm"]})
        assert_allowed(d, port, pki, good)
        assert_denied(d, port, pki, empty)
        line = assert_refused(d, port, pki, nul)

        port = free_port()
        conf, text = write_conf(os.path.join(str(tmp_path), "empty-rule.conf"),
                                policy_conf(pki, port, echo.addr, {"cert-allowed-dns": [""]}))
        expect_config_error(dmtls_bin, conf, text, "cert-allowed-dns", "cert-allowed-dns",
                            "an empty string is not a rule")
    # A denial's log line shows the NUL (it showed an empty name).
    if "event=denied" in line:
        assert 'sans="DNS:w1.dm\\\\0.evil"' in line, line
