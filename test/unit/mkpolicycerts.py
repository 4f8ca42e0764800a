#!/usr/bin/env python3
"""Write test/unit/policy_certs.h: DER certificates for test_policy.c.

Each fixture is a real, self-signed X.509 certificate whose subject or SANs
exercise one rule of DESIGN section 4 (repeated CNs, long names, NUL bytes,
empty SANs, many OUs).  The output is checked in; run this script again
(python3-cryptography) only to change the fixtures:

    python3 test/unit/mkpolicycerts.py > test/unit/policy_certs.h
"""

import datetime
import ipaddress
import sys
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

# Over-long names are the point of some fixtures.
warnings.filterwarnings("ignore", "Attribute's length")

LONG = "d" * 255        # as long as a name dmtls compares may be
LONGER = LONG + "x" * 45  # 300 bytes, starting with LONG


def attr(oid, value, typ=None):
    if typ is None:
        return x509.NameAttribute(oid, value, _validate=False)
    return x509.NameAttribute(oid, value, _type=typ, _validate=False)


def rdns(*attrs):
    """One RDN per attribute, in order."""
    return x509.Name([x509.RelativeDistinguishedName([a]) for a in attrs])


CN = NameOID.COMMON_NAME
OU = NameOID.ORGANIZATIONAL_UNIT_NAME
O = NameOID.ORGANIZATION_NAME

FIXTURES = [
    ("cert_plain", "CN=dm, OU=ops, OU=dm-cluster; DNS w1.dm, URI, IP",
     rdns(attr(OU, "ops"), attr(OU, "dm-cluster"), attr(CN, "dm")),
     [x509.DNSName("w1.dm"), x509.DNSName("localhost"),
      x509.UniformResourceIdentifier("spiffe://dm/worker"),
      x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
    ("cert_cn_upper", "CN=DM", rdns(attr(CN, "DM")), []),
    ("cert_cn_dmx", "CN=dm-x", rdns(attr(CN, "dm-x")), []),
    ("cert_cn_worker", "CN=worker", rdns(attr(CN, "worker")), []),
    ("cert_other_dns_dm", "CN=other; DNS dm",
     rdns(attr(CN, "other")), [x509.DNSName("dm")]),
    ("cert_x_uri", "CN=x; URI spiffe://dm/worker",
     rdns(attr(CN, "x")), [x509.UniformResourceIdentifier("spiffe://dm/worker")]),
    ("cert_x_dns", "CN=x; DNS w1.dm", rdns(attr(CN, "x")), [x509.DNSName("w1.dm")]),
    ("cert_x_ou", "CN=x, OU=dm-cluster",
     rdns(attr(OU, "dm-cluster"), attr(CN, "x")), []),
    ("cert_x_none", "CN=x, OU=ops; DNS w2.dm, URI spiffe://dm/x",
     rdns(attr(OU, "ops"), attr(CN, "x")),
     [x509.DNSName("w2.dm"), x509.UniformResourceIdentifier("spiffe://dm/x")]),
    ("cert_two_cn", "CN=other, CN=dm in two RDNs; DNS w1.dm",
     rdns(attr(CN, "other"), attr(CN, "dm")), [x509.DNSName("w1.dm")]),
    ("cert_two_cn_rdn", "CN=other+CN=dm in one multi-valued RDN",
     x509.Name([x509.RelativeDistinguishedName([attr(CN, "other"),
                                                attr(CN, "dm")])]), []),
    ("cert_cn_255", "a CN of 255 bytes",
     rdns(attr(CN, LONG)), []),
    ("cert_cn_300", "a CN of 300 bytes whose first 255 are cert_cn_255's",
     rdns(attr(CN, LONGER)), []),
    ("cert_cn_nul", "CN \"dm\\0x\"", rdns(attr(CN, "dm\0x")), []),
    ("cert_cn_bmp", "CN \"dm\" as a BMPString",
     rdns(attr(CN, "dm", _ASN1Type.BMPString)), []),
    ("cert_no_cn", "O=dmtls, no CN; DNS w1.dm",
     rdns(attr(O, "dmtls")), [x509.DNSName("w1.dm")]),
    ("cert_dns_empty", "CN=x; an empty DNS SAN",
     rdns(attr(CN, "x")), [x509.DNSName(""), x509.DNSName("w1.dm")]),
    ("cert_uri_empty", "CN=x; an empty URI SAN",
     rdns(attr(CN, "x")), [x509.UniformResourceIdentifier("")]),
    ("cert_uri_nul", "CN=x; URI SAN \"spiffe://dm/w\\0x\"",
     rdns(attr(CN, "x")), [x509.UniformResourceIdentifier("spiffe://dm/w\0x")]),
    ("cert_san_nul", "CN=x; DNS SAN \"w1.dm\\0.evil\"",
     rdns(attr(CN, "x")), [x509.DNSName("w1.dm\0.evil")]),
    ("cert_san_300", "CN=x; a DNS SAN of 300 bytes starting with LONG",
     rdns(attr(CN, "x")), [x509.DNSName(LONGER)]),
    ("cert_16_ou", "CN=x; 16 OUs, the last one ou15",
     rdns(*[attr(OU, "ou%d" % i) for i in range(16)], attr(CN, "x")), []),
    ("cert_17_ou", "CN=x; 17 OUs, the last one ou16",
     rdns(*[attr(OU, "ou%d" % i) for i in range(17)], attr(CN, "x")), []),
]


def make(subject, sans, key):
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(rdns(attr(CN, "policy fixture CA")))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=36500)))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def main():
    key = ec.generate_private_key(ec.SECP256R1())
    out = sys.stdout
    out.write("/*\n * policy_certs.h: DER certificates for test_policy.c,"
              " made by\n * test/unit/mkpolicycerts.py (do not edit; run it"
              " again).\n */\n")
    for name, what, subject, sans in FIXTURES:
        der = make(subject, sans, key)
        out.write("\n/* %s */\nstatic const unsigned char %s[] = {" % (what, name))
        for i, byte in enumerate(der):
            out.write(("\n\t" if i % 12 == 0 else " ") + "0x%02x," % byte)
        out.write("\n};\n")


if __name__ == "__main__":
    main()
