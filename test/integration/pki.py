"""Test PKI for the dmtls integration tests, generated with the openssl CLI.

``PKI(dirpath)`` writes into ``dirpath``:

- ``ca.pem`` / ``ca-key.pem``: the trusted CA (CN "dmtls test CA")
- ``ca2.pem`` / ``ca2-key.pem``: a second CA that nobody trusts
- ``dm``: CN dm, SAN DNS:localhost + IP:127.0.0.1, serverAuth + clientAuth
- ``other``: CN other, same SANs
- ``expired``: CN dm, valid from 10 days ago until 1 day ago
- ``untrusted``: CN dm, same SANs, signed by ca2

each leaf as ``NAME.pem`` + ``NAME-key.pem`` (PKCS#8 PEM, as written by
``openssl genpkey``).  More leaves and CAs are made on demand with
``leaf()`` and ``new_ca()``.  Signing goes through ``openssl ca`` so that
validity dates can be set explicitly (openssl 3.0's ``x509`` cannot).
"""

import datetime
import os
import subprocess
import threading

DEFAULT_SANS = ("DNS:localhost", "IP:127.0.0.1")

_CA_CONF = """\
[ ca ]
default_ca = CA_default
[ CA_default ]
database = {db}/index.txt
new_certs_dir = {db}/newcerts
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
preserve = yes
rand_serial = yes
[ policy_any ]
organizationName = optional
organizationalUnitName = optional
commonName = optional
[ req ]
distinguished_name = req_dn
[ req_dn ]
"""

_CA_EXT = """\
[ ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXT = """\
[ ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, {ku}
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def _asn1_time(t):
    """Format a datetime (naive = UTC) or pass a string through, for openssl ca."""
    if isinstance(t, str):
        return t
    if t.tzinfo is not None:
        t = t.astimezone(datetime.timezone.utc)
    return t.strftime("%Y%m%d%H%M%SZ")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class PKI:
    """A CA plus named leaves in one folder; see the module docstring."""

    def __init__(self, dirpath, algo="ec"):
        """Create the default PKI (ca, ca2, dm, other, expired, untrusted) in dirpath."""
        if algo not in ("ec", "rsa"):
            raise ValueError("algo must be 'ec' or 'rsa'")
        self.dir = os.fspath(dirpath)
        self.algo = algo
        self._lock = threading.RLock()
        os.makedirs(self.dir, exist_ok=True)
        self.ca = self.new_ca("ca", cn="dmtls test CA")
        self.new_ca("ca2", cn="dmtls untrusted CA")
        self.leaf("dm", "dm")
        self.leaf("other", "other")
        now = _now()
        self.leaf("expired", "dm", not_before=now - datetime.timedelta(days=10),
                  not_after=now - datetime.timedelta(days=1))
        self.leaf("untrusted", "dm", ca="ca2")

    # -- paths -------------------------------------------------------------

    def path(self, name):
        """Path of the certificate NAME.pem."""
        return os.path.join(self.dir, name + ".pem")

    def key(self, name):
        """Path of the private key NAME-key.pem."""
        return os.path.join(self.dir, name + "-key.pem")

    # -- generation --------------------------------------------------------

    def _openssl(self, *args):
        r = subprocess.run(("openssl",) + args, capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))
        return r

    def _genkey(self, path, algo):
        if algo == "ec":
            opts = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        elif algo == "rsa":
            opts = ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
        elif algo == "ed25519":
            opts = ("-algorithm", "ED25519")
        else:
            raise ValueError("unknown key algorithm %r" % algo)
        self._openssl("genpkey", *opts, "-out", path)
        os.chmod(path, 0o600)

    def _subject(self, cn, ou):
        parts = []
        for o in ([ou] if isinstance(ou, str) else ou or ()):
            parts.append("/OU=" + o)
        if cn:
            parts.append("/CN=" + cn)
        return "".join(parts) or "/O=dmtls test"

    def _sign(self, name, subject, ext, ca, not_before, not_after):
        """CSR for NAME-key.pem, signed by CA (or self-signed when ca is None)."""
        state = os.path.join(self.dir, ".state", ca or name)
        if ca is None:
            os.makedirs(os.path.join(state, "newcerts"), exist_ok=True)
            open(os.path.join(state, "index.txt"), "w").close()
            with open(os.path.join(state, "ca.cnf"), "w") as f:
                f.write(_CA_CONF.format(db=state))
        conf = os.path.join(state, "ca.cnf")
        csr = os.path.join(state, name + ".csr")
        extfile = os.path.join(state, name + ".ext")
        with open(extfile, "w") as f:
            f.write(ext)
        self._openssl("req", "-new", "-config", conf, "-key", self.key(name),
                      "-subj", subject, "-out", csr)
        signer = (("-selfsign", "-keyfile", self.key(name)) if ca is None else
                  ("-cert", self.path(ca), "-keyfile", self.key(ca)))
        self._openssl("ca", "-batch", "-notext", "-config", conf, *signer,
                      "-in", csr, "-out", self.path(name),
                      "-startdate", _asn1_time(not_before),
                      "-enddate", _asn1_time(not_after),
                      "-extfile", extfile, "-extensions", "ext")
        return self.path(name)

    def new_ca(self, name, cn=None, parent=None, days=3650):
        """Create CA NAME (NAME.pem, NAME-key.pem); self-signed, or an
        intermediate signed by CA `parent`.  Returns the certificate path."""
        with self._lock:
            self._genkey(self.key(name), self.algo)
            if parent is not None:
                # an intermediate also signs leaves: give it its own state dir
                state = os.path.join(self.dir, ".state", name)
                os.makedirs(os.path.join(state, "newcerts"), exist_ok=True)
                open(os.path.join(state, "index.txt"), "w").close()
                with open(os.path.join(state, "ca.cnf"), "w") as f:
                    f.write(_CA_CONF.format(db=state))
            now = _now()
            return self._sign(name, "/CN=" + (cn or name), _CA_EXT, parent,
                              now - datetime.timedelta(days=1),
                              now + datetime.timedelta(days=days))

    def leaf(self, name, cn, sans=DEFAULT_SANS, ca="ca", days=30, algo=None,
             not_after=None, not_before=None, ou=None):
        """Create (or replace) leaf NAME signed by CA `ca`; returns (cert, key).

        cn: Subject CN (None for no CN); sans: e.g. ("DNS:x", "IP:1.2.3.4",
        "URI:spiffe://td/x"), empty for no SAN extension; algo: "ec", "rsa" or
        "ed25519" (default: the PKI's); not_before / not_after: datetimes
        (naive = UTC) or openssl "YYYYMMDDHHMMSSZ" strings, defaulting to
        1 hour ago / now + days; ou: optional Subject OU, or a list of
        OUs (one RDN each, in order, before the CN).
        """
        algo = algo or self.algo
        ku = "digitalSignature, keyEncipherment" if algo == "rsa" else "digitalSignature"
        ext = _LEAF_EXT.format(ku=ku)
        if sans:
            ext += "subjectAltName = " + ", ".join(sans) + "\n"
        now = _now()
        if not_before is None:
            not_before = now - datetime.timedelta(hours=1)
        if not_after is None:
            not_after = now + datetime.timedelta(days=days)
        with self._lock:
            self._genkey(self.key(name), algo)
            self._sign(name, self._subject(cn, ou), ext, ca, not_before, not_after)
        return self.path(name), self.key(name)

    def bundle(self, name, *members):
        """Write NAME.pem as the concatenation of the members' certificates
        (e.g. a CA bundle ``bundle("cas", "ca", "ca3")``); returns its path."""
        data = b"".join(open(self.path(m), "rb").read() for m in members)
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)
