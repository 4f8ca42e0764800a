"""The wolfSSL 5.9.2 move and the ClientHello reader (issue 9: the wolfSSL
section, items 2, 4, 16 and 17).

- `dmtls version` names wolfSSL 5.9.2, where its source came from, and that
  the verify callback runs on every certificate (WOLFSSL_ALWAYS_VERIFY_CB).
- Key exchange: a peer without ML-KEM (OpenSSL 3.0, Go 1.19) never pays a
  HelloRetryRequest, on server routes and on client routes; two dmtls
  sidecars agree on the hybrid X25519MLKEM768.  A Tap between the two sides
  reads the plaintext hellos off the wire, so every test says which group
  was negotiated and how many ClientHellos were sent.
- A 5-byte record header that never gets its body costs no CPU until the
  handshake deadline.
- A ClientHello whose ALPN list does not parse is refused with decode_error
  before wolfSSL sees it.
- A malformed EC private key is an error naming ssl-key, never a crash.
"""

import os
import re
import select
import shutil
import socket
import struct
import subprocess
import time

import pytest

import routes
from backends import EchoServer, _Server, _shut, wait_until
from conftest import free_port, run, tcp_sockets, wait_listening
from tlsclient import tls_refused

# copies of ../shared/reference/fuzz-findings/ (inputs a fuzzing pass found)
FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "fuzz-findings")

# IANA TLS named groups
P256, P384, X25519, X25519MLKEM768 = 23, 24, 29, 4588
GROUP_NAMES = {P256: "P-256", P384: "P-384", 25: "P-521", X25519: "X25519",
               X25519MLKEM768: "X25519MLKEM768"}
HRR_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def finding(name):
    return os.path.join(FUZZ, name)


# -- reading TLS hellos off the wire -----------------------------------------

def handshake_messages(stream):
    """(type, body) of each handshake message in the plaintext handshake
    records at the start of one direction of a TLS stream; stops at the
    first record that is not a handshake record (ChangeCipherSpec, or an
    encrypted record once TLS 1.3 keys are in use)."""
    buf, off = b"", 0
    while off + 5 <= len(stream):
        ctype, n = stream[off], int.from_bytes(stream[off + 3:off + 5], "big")
        if off + 5 + n > len(stream):
            break
        if ctype == 20:             # ChangeCipherSpec (TLS 1.3 middlebox compat)
            off += 5 + n
            continue
        if ctype != 22:
            break
        buf += stream[off + 5:off + 5 + n]
        off += 5 + n
    msgs, p = [], 0
    while p + 4 <= len(buf):
        mtype, n = buf[p], int.from_bytes(buf[p + 1:p + 4], "big")
        if p + 4 + n > len(buf):
            break
        msgs.append((mtype, buf[p + 4:p + 4 + n]))
        p += 4 + n
    return msgs


def extensions(body, off):
    """{type: data} of the extension block at body[off:]."""
    out = {}
    if off + 2 > len(body):
        return out
    end = off + 2 + int.from_bytes(body[off:off + 2], "big")
    off += 2
    while off + 4 <= end:
        t, n = struct.unpack("!HH", body[off:off + 4])
        out[t] = body[off + 4:off + 4 + n]
        off += 4 + n
    return out


def client_hello_groups(body):
    """(supported_groups, key_share groups) of a ClientHello body."""
    off = 2 + 32
    off += 1 + body[off]                                        # session id
    off += 2 + int.from_bytes(body[off:off + 2], "big")         # suites
    off += 1 + body[off]                                        # compression
    ext = extensions(body, off)
    sg = ext.get(10, b"\x00\x00")[2:]
    groups = [int.from_bytes(sg[i:i + 2], "big") for i in range(0, len(sg), 2)]
    ks, shares, p = ext.get(51, b"\x00\x00")[2:], [], 0
    while p + 4 <= len(ks):
        g, n = struct.unpack("!HH", ks[p:p + 4])
        shares.append(g)
        p += 4 + n
    return groups, shares


def server_hello_group(body):
    """(is_hello_retry_request, group) of a ServerHello body."""
    hrr = body[2:34] == HRR_RANDOM
    off = 2 + 32
    off += 1 + body[off] + 2 + 1                    # session id, suite, comp.
    ks = extensions(body, off).get(51, b"")
    return hrr, int.from_bytes(ks[:2], "big") if len(ks) >= 2 else None


def hello_summary(c2s, s2c):
    """What the hellos of one connection say: ClientHellos sent, whether the
    server asked for another (HelloRetryRequest), the client's groups and
    key shares (first ClientHello), the group the server chose."""
    cmsgs = [b for t, b in handshake_messages(c2s) if t == 1]
    smsgs = [b for t, b in handshake_messages(s2c) if t == 2]
    assert cmsgs, "no ClientHello seen on the wire (%d bytes)" % len(c2s)
    assert smsgs, "no ServerHello seen on the wire (%d bytes)" % len(s2c)
    groups, shares = client_hello_groups(cmsgs[0])
    hrr, group = server_hello_group(smsgs[0])
    if hrr and len(smsgs) > 1:
        group = server_hello_group(smsgs[1])[1]
    return {"client_hellos": len(cmsgs), "hrr": hrr, "groups": groups,
            "shares": shares, "group": group}


def describe(s):
    return "%d ClientHello(s), HRR=%s, client groups %s, key shares %s, " \
           "negotiated %s" % (s["client_hellos"], s["hrr"],
                              [GROUP_NAMES.get(g, g) for g in s["groups"]],
                              [GROUP_NAMES.get(g, g) for g in s["shares"]],
                              GROUP_NAMES.get(s["group"], s["group"]))


class Tap(_Server):
    """A TCP relay to `upstream` ("HOST:PORT") that keeps the first bytes of
    each direction of every connection: .streams is a list of
    [client_to_server, server_to_client] bytearrays."""

    KEEP = 1 << 16

    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.streams = []
        super().__init__()

    def handle(self, conn):
        rec = [bytearray(), bytearray()]
        with self._lock:
            self.streams.append(rec)
        up = socket.create_connection(self.upstream, timeout=10)
        ends = {conn: (up, rec[0]), up: (conn, rec[1])}
        open_ = {conn, up}
        try:
            while open_ and not self._closed.is_set():
                r, _, _ = select.select(list(open_), [], [], 0.2)
                for s in r:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    dst, keep = ends[s]
                    if not data:
                        open_.discard(s)
                        _shut(dst, socket.SHUT_WR)
                        continue
                    if len(keep) < self.KEEP:
                        keep += data[:self.KEEP - len(keep)]
                    dst.sendall(data)
        finally:
            up.close()

    def summary(self, i=0, timeout=10):
        """hello_summary of connection i, once both hellos were relayed."""
        def seen():
            with self._lock:
                if len(self.streams) <= i:
                    return False
                c2s, s2c = self.streams[i]
                return (any(t == 1 for t, _ in handshake_messages(bytes(c2s))) and
                        any(t == 2 for t, _ in handshake_messages(bytes(s2c))))
        wait_until(seen, timeout, "both hellos of connection %d through the tap" % i)
        with self._lock:
            c2s, s2c = map(bytes, self.streams[i])
        return hello_summary(c2s, s2c)


# -- helpers -------------------------------------------------------------------

def start_route(procs, dmtls_bin, pki, kind, port, target, *extra,
                cert="dm", name=None):
    """routes.start_route, allowing CN dm."""
    return routes.start_route(procs, dmtls_bin, pki, kind, port, target, *extra,
                              cert=cert, name=name, allowed="dm")


def http_through(port, timeout=10):
    """GET / through a plaintext listener; the bytes that came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        got = b""
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            got += data
            if b"</html>" in got.lower() or b"</body>" in got.lower():
                break
        return got


def cpu_seconds(pid):
    """utime + stime of pid, in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_hello(groups, shares, alpn=None):
    """A TLS 1.3 ClientHello record offering `groups` (supported_groups) with
    key shares for the groups in `shares` (X25519 or P-256 only)."""
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body

    def share(g):
        if g == X25519:
            k = bytearray(os.urandom(32))
            k[31] &= 0x7f
            return bytes(k)
        raise ValueError(g)

    exts = ext(0x2b, b"\x02\x03\x04")
    g = b"".join(struct.pack("!H", x) for x in groups)
    exts += ext(10, struct.pack("!H", len(g)) + g)
    ks = b"".join(struct.pack("!HH", x, 32) + share(x) for x in shares)
    exts += ext(51, struct.pack("!H", len(ks)) + ks)
    sa = b"".join(struct.pack("!H", x) for x in (0x0403, 0x0804, 0x0401))
    exts += ext(13, struct.pack("!H", len(sa)) + sa)
    exts += ext(0, struct.pack("!HBH", 12, 0, 9) + b"localhost")
    if alpn:
        lst = b"".join(bytes([len(p)]) + p for p in alpn)
        exts += ext(16, struct.pack("!H", len(lst)) + lst)
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) +
            b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00" +
            struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def read_records(sock, timeout=5):
    """Read from sock until the first complete TLS record (or EOF); return
    the bytes read."""
    sock.settimeout(timeout)
    got = b""
    while True:
        if len(got) >= 5 and len(got) >= 5 + int.from_bytes(got[3:5], "big"):
            return got
        try:
            data = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return got
        if not data:
            return got
        got += data


# -- `dmtls version` -------------------------------------------------------------

def test_version_names_wolfssl_592_origin_and_verify_cb(dmtls_bin):
    """`dmtls version` names wolfSSL 5.9.2, where its source came from (the
    Debian source package, or the upstream tarball from Debian's pool), and
    that the verify callback runs on every certificate."""
    r = run([dmtls_bin, "version"], timeout=5)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^wolfSSL 5\.9\.2 ", out, re.M), out
    assert re.search(r"^wolfSSL source: (Debian source package wolfssl 5\.9\.2-\S+"
                     r"|upstream tarball wolfssl_5\.9\.2\.orig\.tar\.gz from "
                     r"Debian's pool)", out, re.M), out
    assert re.search(r"^verify callback on every certificate: yes$", out, re.M), out
    assert re.search(r"^key exchange: ", out, re.M), out


@pytest.fixture(scope="module")
def hybrid(dmtls_bin):
    """True when this dmtls offers X25519MLKEM768 (not --disable-hybrid-kex)."""
    out = run([dmtls_bin, "version"], timeout=5).stdout
    return bool(re.search(r"^key exchange: .*X25519MLKEM768", out, re.M))


# -- key exchange: no HelloRetryRequest for peers without ML-KEM -------------

@pytest.mark.parametrize("groups", [None, "P-256"])
def test_kex_server_route_openssl_client_no_hrr(dmtls_bin, pki, procs, port, groups):
    """openssl s_client (3.0, no ML-KEM) to a server route: one ClientHello,
    no HelloRetryRequest, and the server takes the client's own share
    (X25519 by default, P-256 when asked)."""
    with EchoServer() as echo:
        start_route(procs, dmtls_bin, pki, "server", port, echo.addr)
        with Tap("127.0.0.1:%d" % port) as tap:
            argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % tap.port,
                    "-cert", pki.path("dm"), "-key", pki.key("dm"),
                    "-CAfile", pki.ca, "-servername", "localhost", "-msg"]
            if groups:
                argv += ["-groups", groups]
            r = run(argv, timeout=20, input="")
            s = tap.summary()
    hellos = len(re.findall(r">>> .*ClientHello", r.stdout))
    assert hellos == 1, "s_client sent %d ClientHellos:\n%s" % (hellos, r.stdout)
    assert not s["hrr"] and s["client_hellos"] == 1, describe(s)
    assert s["group"] == (P256 if groups else X25519), describe(s)
    print("server route, openssl s_client: " + describe(s))


def test_kex_server_route_classical_share_beside_hybrid_offer_no_hrr(
        dmtls_bin, pki, procs, port):
    """A client that lists X25519MLKEM768 first in supported_groups but sends
    only an X25519 share gets X25519 at once: the server never forces a
    HelloRetryRequest to the hybrid group when a classical share is there."""
    with EchoServer() as echo:
        start_route(procs, dmtls_bin, pki, "server", port, echo.addr)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(client_hello([X25519MLKEM768, X25519, P256], [X25519],
                                   alpn=[b"h2"]))
            got = read_records(s)
    msgs = handshake_messages(got)
    assert msgs and msgs[0][0] == 2, "no ServerHello: %r" % got[:16]
    hrr, group = server_hello_group(msgs[0][1])
    assert not hrr, "HelloRetryRequest to group %s" % GROUP_NAMES.get(group, group)
    assert group == X25519, GROUP_NAMES.get(group, group)


def test_kex_client_route_openssl_server_no_hrr(dmtls_bin, pki, procs, port, hybrid):
    """A client route to openssl s_server (3.0, no ML-KEM): one ClientHello,
    no HelloRetryRequest; the first key share is classical (P-256, as with
    wolfSSL 5.5.4) and is the one negotiated; X25519MLKEM768 rides along
    as a second share for servers that know it."""
    sport = free_port()
    srv = procs.start(["openssl", "s_server", "-accept", "127.0.0.1:%d" % sport, "-naccept", "1",
                       "-cert", pki.path("dm"), "-key", pki.key("dm"),
                       "-CAfile", pki.ca, "-Verify", "1", "-msg", "-www"],
                      name="s_server", wait_port=None)
    wait_listening(sport, srv)
    with Tap("127.0.0.1:%d" % sport) as tap:
        start_route(procs, dmtls_bin, pki, "client", port, tap.addr)
        got = http_through(port)
        s = tap.summary()
    assert b"200 ok" in got.lower(), got[:200]
    srv.wait(10)
    hellos = len(re.findall(r"<<< .*ClientHello", srv.out()))
    assert hellos == 1, "s_server got %d ClientHellos:\n%s" % (hellos, srv.out())
    assert not s["hrr"] and s["client_hellos"] == 1, describe(s)
    assert s["shares"] == ([P256, X25519MLKEM768] if hybrid else [P256]), describe(s)
    assert s["group"] == P256, describe(s)
    print("client route, openssl s_server: " + describe(s))


def test_kex_dmtls_pair_negotiates_hybrid(dmtls_bin, pki, procs, port, hybrid):
    """dmtls client route -> dmtls server route: one ClientHello, no
    HelloRetryRequest, X25519MLKEM768 negotiated (P-256 when built with
    --disable-hybrid-kex)."""
    sport = free_port()
    with EchoServer() as echo:
        start_route(procs, dmtls_bin, pki, "server", sport, echo.addr,
                    name="dmtls-server")
        with Tap("127.0.0.1:%d" % sport) as tap:
            start_route(procs, dmtls_bin, pki, "client", port, tap.addr,
                        name="dmtls-client")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"hybrid")
                assert c.recv(100) == b"hybrid"
            s = tap.summary()
    assert not s["hrr"] and s["client_hellos"] == 1, describe(s)
    assert s["group"] == (X25519MLKEM768 if hybrid else P256), describe(s)
    print("dmtls pair: " + describe(s))


GO_PEER = r"""
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
)

func main() {
	mode, addr, ca, cert, key := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		panic(err)
	}
	pem, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool,
		ClientCAs: pool, ServerName: "localhost"}
	if mode == "client" {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		c.Write([]byte("go"))
		b := make([]byte, 2)
		_, err = io.ReadFull(c, b)
		fmt.Printf("echo %q %v\n", b, err)
		c.Close()
		return
	}
	l, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	c, err := l.Accept()
	if err != nil {
		panic(err)
	}
	b := make([]byte, 2)
	io.ReadFull(c, b)
	c.Write(b)
	c.Close()
}
"""


@pytest.fixture(scope="module")
def go_peer(tmp_path_factory):
    go = shutil.which("go")
    if not go:
        pytest.skip("no Go toolchain (apt-get install golang-go)")
    d = tmp_path_factory.mktemp("gopeer")
    src = d / "peer.go"
    src.write_text(GO_PEER)
    env = dict(os.environ, GOCACHE=str(d / "cache"), GOFLAGS="", GO111MODULE="off")
    r = subprocess.run([go, "build", "-o", str(d / "peer"), str(src)], cwd=str(d),
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    v = subprocess.run([go, "version"], capture_output=True, text=True).stdout
    return str(d / "peer"), v.strip()


def test_kex_go_peers_no_hrr(dmtls_bin, pki, procs, port, go_peer):
    """Go's crypto/tls (1.19 on Debian 12, no ML-KEM) as the client of a
    server route and as the server of a client route: one ClientHello each
    way, no HelloRetryRequest."""
    peer, version = go_peer
    creds = [pki.ca, pki.path("dm"), pki.key("dm")]
    with EchoServer() as echo:
        start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                    name="dmtls-server")
        with Tap("127.0.0.1:%d" % port) as tap:
            r = run([peer, "client", tap.addr, *creds], timeout=20)
            assert r.stdout.startswith('echo "go" <nil>'), r.stdout + r.stderr
            s = tap.summary()
    assert not s["hrr"] and s["client_hellos"] == 1, describe(s)
    print("server route, %s client: %s" % (version, describe(s)))

    gport, cport = free_port(), free_port()
    srv = procs.start([peer, "server", "127.0.0.1:%d" % gport, *creds], name="go-server")
    wait_listening(gport, srv)
    with Tap("127.0.0.1:%d" % gport) as tap:
        start_route(procs, dmtls_bin, pki, "client", cport, tap.addr,
                    name="dmtls-client")
        with socket.create_connection(("127.0.0.1", cport), timeout=10) as c:
            c.sendall(b"go")
            assert c.recv(10) == b"go"
        s = tap.summary()
    assert not s["hrr"] and s["client_hellos"] == 1, describe(s)
    print("client route, %s server: %s" % (version, describe(s)))


# -- item 2: a half record header does not spin ------------------------------

def test_half_record_header_does_not_spin(dmtls_bin, pki, procs, port):
    """Four clients that each send the 5-byte record header 16 03 01 40 00
    and stop cost under 0.1 s of dmtls CPU per second while they wait, and
    are closed at the handshake deadline (its reason, by dmtls's clock)."""
    timeout, window = 6.0, 3.0
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr,
                        "--handshake-timeout", "%ds" % timeout)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5)
                 for _ in range(4)]
        peers = [routes.peer_of(s) for s in socks]
        try:
            t0 = time.monotonic()
            for s in socks:
                s.sendall(bytes.fromhex("1603014000"))
            # dmtls has read every header: its sockets' receive queues drained
            mine = {s.getsockname() for s in socks}
            wait_until(lambda: all(
                c["rx_queue"] == 0 for c in tcp_sockets()
                if c["remote"] in mine and c["local"][1] == port), 10,
                "dmtls to read the four headers")
            c0, w0 = cpu_seconds(d.pid), time.monotonic()
            time.sleep(window)
            c1, w1 = cpu_seconds(d.pid), time.monotonic()
            rate = (c1 - c0) / (w1 - w0)
            assert rate < 0.1, "dmtls used %.2f s of CPU per second with four " \
                               "half records pending" % rate
            for s in socks:
                s.settimeout(60)
                try:
                    assert s.recv(100) == b"", "data before the deadline"
                except ConnectionResetError:
                    pass
            elapsed = time.monotonic() - t0
        finally:
            for s in socks:
                s.close()
        assert elapsed >= timeout - 0.5, "closed after %.2f s" % elapsed
        # the deadline, by dmtls's own clock, closed each of them
        for peer in peers:
            rec = routes.final_line(d, peer)
            assert rec.get("reason") == "handshake timeout after %dms" % (timeout * 1000), \
                rec["_line"]
        assert not echo.dialled()


# -- item 16: a malformed ALPN list is refused before wolfSSL ----------------

def test_alpn_malformed_list_refused_with_decode_error(dmtls_bin, pki, procs, port):
    """The fuzzer's ClientHello whose ALPN list says 9 bytes but holds 10
    (CVE-2026-3547 in wolfSSL < 5.9.0) gets a decode_error alert and a
    handshake_failed line naming ALPN; the route keeps serving."""
    with open(finding("clienthello-alpn-truncated.bin"), "rb") as f:
        hello = f.read()
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(hello)
            got = read_records(s)
        assert len(got) == 7 and got[0] == 0x15 and got[1] == 3 and \
            got[3:] == b"\x00\x02\x02\x32", \
            "expected a fatal decode_error alert record, got %s" % got.hex()
        m = d.wait_log(r"^.*event=(handshake_failed|denied)\b.*$")
        assert re.search(r"reason=.*ALPN", m.group(0)), m.group(0)
        assert tls_refused(port, pki) is None
        assert echo.accepted == 1


def test_alpn_malformed_crafted_lists_refused(dmtls_bin, pki, procs, port):
    """Other ALPN extensions that do not parse (an empty name, an entry cut
    short, bytes after the list) get decode_error too; a well-formed list
    naming only unknown protocols still gets no_application_protocol."""
    def alpn_ext_hello(ext_data):
        h = client_hello([X25519], [X25519])
        body_ext = struct.pack("!HH", 16, len(ext_data)) + ext_data
        # append the raw ALPN extension to the extension block
        rec = bytearray(h)
        hs_len = int.from_bytes(rec[6:9], "big") + len(body_ext)
        ext_off = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2
        ext_len = int.from_bytes(rec[ext_off:ext_off + 2], "big") + len(body_ext)
        rec[ext_off:ext_off + 2] = ext_len.to_bytes(2, "big")
        rec[6:9] = hs_len.to_bytes(3, "big")
        rec[3:5] = (hs_len + 4).to_bytes(2, "big")
        return bytes(rec) + body_ext

    cases = {
        "empty name": b"\x00\x04\x00\x02h2",
        "entry cut short": b"\x00\x04\x05h2h2",
        "bytes after the list": b"\x00\x03\x02h2\x00",
        "empty list": b"\x00\x00",
    }
    with EchoServer() as echo:
        d = start_route(procs, dmtls_bin, pki, "server", port, echo.addr)
        for what, data in cases.items():
            mark = d.mark()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(alpn_ext_hello(data))
                got = read_records(s)
            assert got[:1] == b"\x15" and got[5:7] == b"\x02\x32", \
                "%s: expected decode_error, got %s" % (what, got[:16].hex())
            m = d.wait_log(r"^.*event=handshake_failed\b.*$", since=mark)
            assert re.search(r"reason=.*ALPN", m.group(0)), \
                "%s: refused by wolfSSL, not before it: %s" % (what, m.group(0))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(alpn_ext_hello(b"\x00\x04\x03spd"))
            got = read_records(s)
        assert got[:1] == b"\x15" and got[5:7] == b"\x02\x78", \
            "unknown protocol: expected no_application_protocol, got %s" % got[:16].hex()
        assert tls_refused(port, pki) is None


# -- item 17: a malformed EC private key -------------------------------------

def test_malformed_ec_key_check_exits_1(dmtls_bin, pki):
    """`dmtls check server --ssl-key` with the fuzzer's P-256 key whose
    public key holds 2 bytes exits 1 naming ssl-key (wolfSSL 5.5.4 died with
    signal 11 in wolfSSL_CTX_check_private_key)."""
    bad = finding("ec-key-short-publickey.pem")
    r = run([dmtls_bin, "check", "server", "--listen", "127.0.0.1:%d" % free_port(),
             "--target", "127.0.0.1:1", "--ssl-ca", pki.ca,
             "--ssl-cert", pki.path("dm"), "--ssl-key", bad,
             "--cert-allowed-cn", "dm"], timeout=10)
    assert r.returncode == 1, "exit %s\n%s%s" % (r.returncode, r.stdout, r.stderr)
    assert "ssl-key" in r.stdout + r.stderr, r.stdout + r.stderr


def test_malformed_ec_key_at_start_exits_2(dmtls_bin, pki):
    """`dmtls server` started with that key exits 2 naming ssl-key."""
    bad = finding("ec-key-short-publickey.pem")
    r = run([dmtls_bin, "server", "--listen", "127.0.0.1:%d" % free_port(),
             "--target", "127.0.0.1:1", "--ssl-ca", pki.ca,
             "--ssl-cert", pki.path("dm"), "--ssl-key", bad,
             "--cert-allowed-cn", "dm"], timeout=10)
    assert r.returncode == 2, "exit %s\n%s" % (r.returncode, r.stderr)
    assert "ssl-key" in r.stderr, r.stderr


def test_malformed_ec_key_rotation_keeps_last_good_set(dmtls_bin, pki, procs, port,
                                                       tmp_path):
    """A running route whose key file is replaced by that key keeps serving
    with the last good set and logs the bad file."""
    bad = finding("ec-key-short-publickey.pem")
    key = str(tmp_path / "key.pem")
    shutil.copyfile(pki.key("dm"), key)
    with EchoServer() as echo:
        argv = [dmtls_bin, "server", "--listen", "127.0.0.1:%d" % port,
                "--target", echo.addr, "--ssl-ca", pki.ca,
                "--ssl-cert", pki.path("dm"), "--ssl-key", key,
                "--cert-allowed-cn", "dm"]
        d = procs.start(argv, name="dmtls")
        wait_listening(port, d)
        assert tls_refused(port, pki) is None
        mark = d.mark()
        with open(bad, "rb") as f:
            data = f.read()
        tmp = key + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, key)
        for i in range(3):
            assert tls_refused(port, pki, payload=b"after %d" % i) is None, d.log()
        m = d.wait_log(r'^.*event=cert_reload_failed\b.*$', since=mark)
        assert key in m.group(0) and "ssl-key" in m.group(0), m.group(0)
        assert d.proc.poll() is None, "dmtls exited: %s" % d.log()
