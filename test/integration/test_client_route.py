"""Client routes (DESIGN.md section 2, "client"): plaintext in, mTLS out.

dmtls presents ssl-cert/ssl-key to the TLS target, verifies the server chain
against ssl-ca, applies --cert-allowed-cn to the server's leaf and, with
--server-name, checks the name against the server certificate's SANs.  Only
after all of that are the plaintext client's bytes relayed.
"""

import hashlib
import socket
import threading

from backends import TLSServer, pattern, wait_until
from routes import start_route


def start_client_route(procs, dmtls_bin, pki, port, target, *extra):
    """Start a client route presenting the dm leaf, trusting the test CA."""
    return start_route(procs, dmtls_bin, pki, "client", port, target, *extra)


def settle(srv, timeout=5):
    """Wait until every connection the TLS server accepted has finished
    (a result or an error recorded)."""
    wait_until(lambda: srv.accepted >= 1 and
               len(srv.results) + len(srv.errors) >= srv.accepted,
               timeout, "TLS server connections to finish")


def refused_plaintext_client(port, payload=b"secret application bytes\n", timeout=5):
    """Connect to the client route, send `payload`, and read until the
    connection ends.  Returns the bytes received (the test expects none)
    and how it ended ("eof" or the exception)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        try:
            c.sendall(payload)
        except OSError as e:
            return b"", "send: %s" % e
        got = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return got, "eof"
                got += data
        except ConnectionResetError as e:
            return got, "reset: %s" % e


def test_client_route_presents_dm_and_relays_exact_bytes(dmtls_bin, pki, procs, port):
    """Plaintext client -> client route -> TLS echo server requiring client
    certificates: the server sees CN dm and 1 MiB comes back byte-exact."""
    size = 1 << 20
    data = pattern(size, "client-route-1mib")
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca,
                   require_client_cert=True) as srv:
        d = start_client_route(procs, dmtls_bin, pki, port, srv.addr,
                               "--cert-allowed-cn", "dm")
        received = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            def send():
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                received += chunk
            sender.join(10)
        assert len(received) == size, "got %d of %d bytes; log:\n%s" % (
            len(received), size, d.log())
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
        results = srv.wait_results(1)
        assert srv.peer_cns == ["dm"], srv.peer_cns
        assert results[0]["bytes"] == size
        d.wait_log(r"event=close route=\S+ .*bytes_in=%d\b" % size)


def _refused_by_client_route(dmtls_bin, pki, procs, port, server_leaf, *extra):
    """Run a client route (CN dm allowed, plus `extra`) to a TLS server
    presenting `server_leaf` that dmtls must refuse: the plaintext client
    gets a clean EOF and no data, and the server never receives an
    application byte.  Returns the route's Proc."""
    srv = TLSServer(pki.path(server_leaf), pki.key(server_leaf), pki.ca,
                    require_client_cert=True)
    srv.expect_error(r"^handshake: \[SSL: SSLV3_ALERT_BAD_CERTIFICATE\]")  # dmtls's refusal
    with srv:
        d = start_client_route(procs, dmtls_bin, pki, port, srv.addr,
                               "--cert-allowed-cn", "dm", *extra)
        got, how = refused_plaintext_client(port)
        assert got == b"", "the plaintext client received %r" % got
        assert how == "eof", ("connection ended by %s, not a clean EOF (a reset means dmtls "
                              "closed with the client's unread bytes still queued)\n%s"
                              % (how, d.log()))
        settle(srv)
        assert sum(r["bytes"] for r in srv.results) == 0, srv.results
    return d


def test_client_route_refuses_server_cn_not_allowed(dmtls_bin, pki, procs, port):
    """The server's leaf CN (other) is not in --cert-allowed-cn (dm): the
    plaintext client gets EOF and no data, the TLS server never receives an
    application byte, and the log says the peer was denied."""
    d = _refused_by_client_route(dmtls_bin, pki, procs, port, "other")
    d.wait_log(r'event=denied route=client .*cn=other .*reason="certificate identity not '
               r'allowed \(CN other\)"')


def test_client_route_refuses_server_name_mismatch(dmtls_bin, pki, procs, port):
    """--server-name is not among the server certificate's SANs: the plaintext
    client gets EOF and no data, the TLS server never receives an application
    byte, and the log records a verification failure naming the name."""
    d = _refused_by_client_route(dmtls_bin, pki, procs, port, "dm",
                                 "--server-name", "wrong.example.com")
    d.wait_log(r'event=handshake_failed route=client .*reason="certificate does not match '
               r'server-name wrong\.example\.com \(SANs DNS:localhost,IP:127\.0\.0\.1\)"')
