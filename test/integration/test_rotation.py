"""Certificate rotation: ssl-ca, ssl-cert and ssl-key are reread for every new
connection (DESIGN.md section 3).

Each test copies the files it rotates from the session PKI into its own
tmp_path and rotates them there the way deployment tools do: write a temporary
file beside the target, then os.replace() it over the target.  Extra leaves and
CAs get names unique to the test so the shared PKI is never disturbed.
"""

import os
import re
import shutil
import socket
import ssl

from backends import EchoServer, TLSServer, wait_until
from routes import echo_once, final_lines, replace_file, start_route
from tlsclient import tls_connect, tls_refused


# -- helpers -----------------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()


def der(path):
    """DER bytes of the first certificate in the PEM file at path."""
    return ssl.PEM_cert_to_DER_cert(read(path).decode())


def copy_set(tmp_path, ca, cert, key):
    """Copy a CA/cert/key triple into tmp_path; return the three new paths."""
    out = []
    for src, name in ((ca, "ca.pem"), (cert, "cert.pem"), (key, "key.pem")):
        dst = os.path.join(str(tmp_path), name)
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def rotating(procs, dmtls_bin, pki, kind, port, target, ca, cert, key, *extra):
    """A route whose three files are the copies the test rotates."""
    return start_route(procs, dmtls_bin, pki, kind, port, target, *extra, ca=ca,
                       cert=(cert, key))


def count(proc, regex, since=0):
    return len(re.findall(regex, proc.log()[since:], re.MULTILINE))


# -- server routes -----------------------------------------------------------

def test_server_cert_rotation_next_connection(dmtls_bin, pki, procs, tmp_path, port):
    """Renaming a new server certificate+key over the old ones: the very next
    TLS connection is served with the new certificate, while a connection
    opened before the swap keeps working."""
    ca, cert, key = copy_set(tmp_path, pki.ca, pki.path("dm"), pki.key("dm"))
    new_cert, new_key = pki.leaf("rot-srv-new", "rotated-server")
    with EchoServer() as echo:
        d = rotating(procs, dmtls_bin, pki, "server", port, echo.addr, ca, cert, key,
                        "--cert-allowed-cn", "dm")
        old = tls_connect(port, pki)
        try:
            assert old.getpeercert(binary_form=True) == der(pki.path("dm"))
            assert echo_once(old, b"before swap") == b"before swap"

            mark = d.mark()
            replace_file(key, read(new_key))
            replace_file(cert, read(new_cert))

            new = tls_connect(port, pki)
            try:
                assert new.getpeercert(binary_form=True) == der(new_cert), \
                    "first connection after the swap still got the old certificate"
                assert echo_once(new, b"new connection") == b"new connection"
            finally:
                new.close()

            # the connection opened before the swap is untouched
            assert echo_once(old, b"after swap") == b"after swap"
        finally:
            old.close()
        d.wait_log(r"event=cert_reloaded", since=mark)


def test_ca_rotation_next_connection(dmtls_bin, pki, procs, tmp_path, port):
    """Switching ssl-ca to a file holding a new root: on the next connection a
    client leaf of the new root is accepted and one of the old root refused."""
    ca, cert, key = copy_set(tmp_path, pki.ca, pki.path("dm"), pki.key("dm"))
    new_root = pki.new_ca("rot-ca-root", cn="dmtls rotated root")
    new_client = pki.leaf("rot-ca-client", "dm", ca="rot-ca-root")
    with EchoServer() as echo:
        d = rotating(procs, dmtls_bin, pki, "server", port, echo.addr, ca, cert, key,
                        "--cert-allowed-cn", "dm")
        assert tls_refused(port, pki, cert="dm") is None
        assert tls_refused(port, pki, cert=new_client) is not None

        mark = d.mark()
        replace_file(ca, read(new_root))

        r = tls_refused(port, pki, cert=new_client)
        assert r is None, "client of the new root refused after the CA swap: %s\n%s" % (
            r, d.log()[mark:])
        r = tls_refused(port, pki, cert="dm")
        assert r is not None, "client of the old root still accepted after the CA " \
                              "swap\n%s" % d.log()[mark:]


def test_broken_files_keep_last_good_set(dmtls_bin, pki, procs, tmp_path, port):
    """Broken files (empty key, truncated CA bundle, key of another pair) keep
    the last good set serving, with one cert_reload_failed line per distinct
    bad state naming the file; fixed files then take effect."""
    # the CA file is a two-certificate bundle so that it can be cut short
    bundle = read(pki.ca) + read(pki.path("ca2"))
    ca, cert, key = copy_set(tmp_path, pki.ca, pki.path("dm"), pki.key("dm"))
    replace_file(ca, bundle)
    good_der = der(pki.path("dm"))
    with EchoServer() as echo:
        d = rotating(procs, dmtls_bin, pki, "server", port, echo.addr, ca, cert, key,
                        "--cert-allowed-cn", "dm")

        def served_by_last_good_set(n=3):
            for i in range(n):
                s = tls_connect(port, pki)
                try:
                    assert s.getpeercert(binary_form=True) == good_der
                    msg = b"ping %d" % i
                    assert echo_once(s, msg) == msg
                finally:
                    s.close()

        served_by_last_good_set(1)

        states = [
            ("empty ssl-key", key, "ssl-key", {key: b""}),
            ("truncated ssl-ca bundle", ca, "ssl-ca",
             {key: read(pki.key("dm")), ca: bundle[:len(read(pki.ca)) + 200]}),
            ("ssl-key of another pair", key, "ssl-key",
             {ca: bundle, key: read(pki.key("other"))}),
        ]
        for what, bad_file, flag, writes in states:
            mark = d.mark()
            for path, data in writes.items():
                replace_file(path, data)
            served_by_last_good_set(3)
            line = r'^.*event=cert_reload_failed\b.*file="?%s\b.*$' % re.escape(bad_file)
            m = d.wait_log(line, since=mark)
            assert "key=%s" % flag in m.group(0), "%s: %s" % (what, m.group(0))
            # each connection rereads before its handshake, so its own
            # cert_reload_failed line comes before its final line
            wait_until(lambda: len(final_lines(d, since=mark)) >= 3, 10,
                       "%s: the 3 connections' final lines" % what)
            n = count(d, r"event=cert_reload_failed\b", since=mark)
            assert n == 1, "%s: %d cert_reload_failed lines for one bad state " \
                           "(3 connections):\n%s" % (what, n, d.log()[mark:])

        # fix the files with a new, valid set: it takes effect at once
        new_cert, new_key = pki.leaf("rot-broken-new", "rotated-after-fix")
        mark = d.mark()
        replace_file(key, read(new_key))
        replace_file(cert, read(new_cert))
        s = tls_connect(port, pki)
        try:
            assert s.getpeercert(binary_form=True) == der(new_cert), \
                "fixed files not used:\n" + d.log()[mark:]
            assert echo_once(s, b"fixed") == b"fixed"
        finally:
            s.close()
        d.wait_log(r"event=cert_reloaded", since=mark)


# -- client routes -----------------------------------------------------------

def test_client_cert_rotation_next_connection(dmtls_bin, pki, procs, tmp_path, port):
    """Rotating a client route's ssl-cert/ssl-key to a leaf with another CN:
    the TLS server sees the new CN on the next connection."""
    ca, cert, key = copy_set(tmp_path, pki.ca, pki.path("dm"), pki.key("dm"))
    dm2_cert, dm2_key = pki.leaf("rot-client-dm2", "dm2")
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca,
                   require_client_cert=True) as srv:
        d = rotating(procs, dmtls_bin, pki, "client", port, srv.addr, ca, cert, key,
                        "--cert-allowed-cn", "dm")

        def one_connection(payload):
            before = len(srv.peer_cns)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                assert echo_once(c, payload) == payload, d.log()
            wait_until(lambda: len(srv.peer_cns) > before, 5, "TLS handshake at server")
            return srv.peer_cns[before:]

        assert one_connection(b"first") == ["dm"]

        mark = d.mark()
        replace_file(key, read(dm2_key))
        replace_file(cert, read(dm2_cert))

        assert one_connection(b"second") == ["dm2"], d.log()[mark:]
