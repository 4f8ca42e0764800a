"""TLS client helpers (Python ssl) for talking to dmtls server routes.

Note: with TLS 1.3 the client's handshake completes before the server has
checked the client certificate, so a server that refuses the client shows
up on the first recv (an SSLError alert, or EOF), not in tls_connect().
Use tls_refused() to tell an accepted peer from a refused one: it needs the
route's target to echo, and takes an echoed payload, never silence, as
proof that a client was accepted.
"""

import os
import socket
import ssl
import warnings

from conftest import scaled

_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
             "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _version(v):
    return _VERSIONS[v] if isinstance(v, str) else v


def _cert_path(pki, name):
    """A PKI name ("ca") or a path ("/x/ca.pem") -> path."""
    return name if os.sep in os.fspath(name) else pki.path(name)


def client_context(pki, cert="dm", ca="ca", alpn=None, min_version=None,
                   max_version=None, server_hostname="localhost"):
    """Build the ssl.SSLContext used by tls_connect (same arguments)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(_cert_path(pki, ca))
        ctx.check_hostname = server_hostname is not None
    if cert is not None:
        if isinstance(cert, (tuple, list)):
            ctx.load_cert_chain(cert[0], cert[1])
        else:
            ctx.load_cert_chain(pki.path(cert), pki.key(cert))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version:
        ctx.minimum_version = _version(min_version)
    if max_version:
        ctx.maximum_version = _version(max_version)
    return ctx


def tls_connect(port, pki, cert="dm", ca="ca", alpn=None, min_version=None,
                max_version=None, server_hostname="localhost", timeout=5):
    """Connect to 127.0.0.1:port and complete a TLS handshake; return the
    ssl.SSLSocket (socket timeout = `timeout`).

    cert: PKI leaf name presenting a client certificate, a (cert, key) pair
    of paths, or None for none.  ca: PKI name or path of the trust anchors
    (None = do not verify the server).  server_hostname: SNI and the name
    checked against the server's SANs (None = neither).  min_version /
    max_version: "1.2", "1.3" or ssl.TLSVersion.  Handshake errors propagate
    (ssl.SSLError, ConnectionError, socket.timeout).
    """
    ctx = client_context(pki, cert, ca, alpn, min_version, max_version, server_hostname)
    raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def tls_refused(port, pki, payload=b"ping", timeout=10, with_peer=False, **kw):
    """Judge whether the server route at 127.0.0.1:port accepts a
    tls_connect(port, pki, **kw) client.  Returns None when it does, else a
    description of the refusal; with with_peer, a pair (that, "IP:PORT" of
    the client socket, as dmtls logs it in peer=).

    Accepted means: `payload` goes through and comes back (the route's
    target must echo).  Refused means: the handshake fails, or the first
    read meets an alert, a reset or EOF (with TLS 1.3 a client learns that
    the server refused its certificate only there).  Neither within
    `timeout` seconds raises AssertionError: silence proves nothing."""
    ctx = client_context(pki, **kw)
    raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
    host, cport = raw.getsockname()[:2]
    peer = "%s:%d" % (host, cport)
    why = _refusal(ctx, raw, payload, kw.get("server_hostname", "localhost"), port)
    return (why, peer) if with_peer else why


def _refusal(ctx, raw, payload, server_hostname, port):
    s = raw
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            s = ctx.wrap_socket(raw, server_hostname=server_hostname)
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = s.recv(4096)
            if not data:
                return "eof after %d bytes" % len(got)
            got += data
        if got != payload:
            return "echo mismatch: %r" % got
        try:
            s.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass
        return None
    except socket.timeout:
        raise AssertionError("port %d neither echoed %r nor refused the client "
                             "within %ss" % (port, payload, raw.gettimeout())) from None
    except (ssl.SSLError, OSError) as e:
        return "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()

