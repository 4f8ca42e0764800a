"""A fake MySQL toolkit for the `mysql` route tests (peers.md C.4).

- Packet helpers: ``packet()``, ``read_packet()``, ``lenenc()``, ``ok()``,
  ``err()``, ``greeting()``, ``parse_login()``, ``parse_err()``,
  ``caching_sha2_scramble()``.
- ``FakeMySQLServer``: a MySQL server on 127.0.0.1 that greets in plain TCP
  with CLIENT_SSL, waits for the 32-byte SSLRequest (seq 1), wraps the socket
  in TLS (Python ssl, server side), reads the login (seq 2) and runs
  caching_sha2_password: ``mode="fast"`` checks the scramble and answers
  ``01 03`` + OK; ``mode="full"`` (TiDB's way) answers ``01 04`` and expects
  the cleartext password + NUL over TLS.  ``switch_to`` makes it send an
  AuthSwitchRequest (new nonce) first.  After OK it answers COM_QUERY with a
  one-row result set (OK for SET ...), COM_PING with OK, and closes on COM_QUIT.  ``.script``
  replaces phases by raw bytes, for the robustness tests.  Every sequence id
  the server receives is checked; mismatches land in ``.errors``, and the
  server raises them when it is closed (at the end of the ``with`` block or
  fixture) unless the test declared them with ``expect_error(regex)``.
- ``FakeClient``: a raw plaintext MySQL client (greeting, login, auth
  packets, raw garbage) and ``read_outcome()`` to classify how dmtls answered.
- ``RecordingProxy``: a TCP relay that keeps every byte each way.
- ``ed25519_sign()`` / ``Ed25519Auth``: MariaDB's client_ed25519 in pure
  Python, as a PyMySQL ``auth_plugin_map`` handler (PyMySQL's own needs
  PyNaCl, which is not installed).
"""

import hashlib
import os
import re
import socket
import ssl
import struct
import threading

from backends import _Server, _cn, _shut

# capability flags (include/mysql_com.h)
LONG_PASSWORD = 0x1
CONNECT_WITH_DB = 0x8
PROTOCOL_41 = 0x200
SSL = 0x800
TRANSACTIONS = 0x2000
SECURE_CONN = 0x8000
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
LENENC_AUTH = 1 << 21

SERVER_CAPS = (LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | SSL | TRANSACTIONS |
               SECURE_CONN | MULTI_STATEMENTS | MULTI_RESULTS | PLUGIN_AUTH |
               CONNECT_ATTRS | LENENC_AUTH)
CLIENT_CAPS = (LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONN |
               MULTI_RESULTS | PLUGIN_AUTH | LENENC_AUTH)

COM_QUIT, COM_QUERY, COM_PING = 0x01, 0x03, 0x0e


# ---- framing ------------------------------------------------------------

def packet(seq, payload):
    """One MySQL packet: 3-byte LE length, sequence id, payload (< 16 MiB)."""
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xff]) + payload


def recv_exact(sock, n):
    """Read exactly n bytes; raise EOFError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def read_packet(sock):
    """Read one packet; return (seq, payload).  EOFError on a closed peer."""
    head = recv_exact(sock, 4)
    n = head[0] | head[1] << 8 | head[2] << 16
    return head[3], recv_exact(sock, n)


def lenenc(n):
    """A length-encoded integer."""
    if n < 0xfb:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b):
    return lenenc(len(b)) + b


def ok(status=0x0002):
    """An OK payload (0 rows, no insert id, autocommit)."""
    return b"\x00\x00\x00" + struct.pack("<HH", status, 0)


def err(code, message, state="HY000"):
    """An ERR payload."""
    return b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode()


def parse_err(payload):
    """(code, sqlstate, message) of an ERR payload, or None if it is not one."""
    if not payload or payload[0] != 0xff or len(payload) < 3:
        return None
    code = struct.unpack("<H", payload[1:3])[0]
    if payload[3:4] == b"#":
        return code, payload[4:9].decode(errors="replace"), payload[9:].decode(errors="replace")
    return code, "", payload[3:].decode(errors="replace")


def make_nonce():
    """20 random scramble bytes without NUL (as mysqld makes them)."""
    return bytes(1 + b % 126 for b in os.urandom(20))


def greeting(nonce, caps=SERVER_CAPS, plugin=b"caching_sha2_password",
             version=b"8.0.36-fake", conn_id=7, charset=0xff):
    """A HandshakeV10 payload."""
    return (b"\x0a" + version + b"\0" + struct.pack("<I", conn_id) + nonce[:8] + b"\0" +
            struct.pack("<H", caps & 0xffff) + bytes([charset]) + struct.pack("<H", 0x0002) +
            struct.pack("<H", caps >> 16) + bytes([len(nonce) + 1]) + b"\0" * 10 +
            nonce[8:] + b"\0" + plugin + b"\0")


def parse_greeting(p):
    """dict(version, caps, nonce, plugin) of a HandshakeV10 payload."""
    assert p[0] == 0x0a, "not a protocol-10 greeting: %r" % p[:16]
    nul = p.index(b"\0", 1)
    off = nul + 1 + 4
    nonce = p[off:off + 8]
    off += 9
    caps = struct.unpack("<H", p[off:off + 2])[0]
    caps |= struct.unpack("<H", p[off + 5:off + 7])[0] << 16
    alen = p[off + 7]
    off += 18
    part2 = max(13, alen - 8)
    nonce += p[off:off + 12]
    off += part2
    plugin = p[off:].split(b"\0")[0]
    return {"version": p[1:nul], "caps": caps, "nonce": nonce, "plugin": plugin}


def parse_login(p):
    """dict(caps, max_packet, charset, user, auth, db, plugin, attrs) of a
    HandshakeResponse41 payload (the fields after the first 32 may be absent)."""
    caps, maxp, cs = struct.unpack("<IIB", p[:9])
    d = {"caps": caps, "max_packet": maxp, "charset": cs, "user": None, "auth": b"",
         "db": None, "plugin": None, "attrs": None}
    if len(p) <= 32:
        return d
    off = 32
    nul = p.index(b"\0", off)
    d["user"] = p[off:nul].decode()
    off = nul + 1
    if caps & LENENC_AUTH:
        n, off = _get_lenenc(p, off)
    else:
        n, off = p[off], off + 1
    d["auth"] = p[off:off + n]
    off += n
    if caps & CONNECT_WITH_DB and off < len(p):
        nul = p.index(b"\0", off)
        d["db"] = p[off:nul].decode()
        off = nul + 1
    if caps & PLUGIN_AUTH and off < len(p):
        nul = p.index(b"\0", off)
        d["plugin"] = p[off:nul].decode()
        off = nul + 1
    if caps & CONNECT_ATTRS and off < len(p):
        n, off = _get_lenenc(p, off)
        d["attrs"] = p[off:off + n]
    return d


def _get_lenenc(p, off):
    b = p[off]
    if b < 0xfb:
        return b, off + 1
    size = {0xfc: 2, 0xfd: 3, 0xfe: 8}[b]
    return int.from_bytes(p[off + 1:off + 1 + size], "little"), off + 1 + size


def login_payload(user, auth, plugin=b"caching_sha2_password", caps=CLIENT_CAPS):
    """A HandshakeResponse41 payload (max packet 16 MiB, charset 45)."""
    return (struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() +
            b"\0" + lenenc_str(auth) + plugin + b"\0")


def caching_sha2_scramble(password, nonce):
    """XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) + nonce)); b"" for no password."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    p3 = hashlib.sha256(p2 + nonce[:20]).digest()
    return bytes(a ^ b for a, b in zip(p1, p3))


def native_scramble(password, nonce):
    """mysql_native_password: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    s1 = hashlib.sha1(password).digest()
    s2 = hashlib.sha1(nonce[:20] + hashlib.sha1(s1).digest()).digest()
    return bytes(a ^ b for a, b in zip(s1, s2))


def result_set(value):
    """Payloads of a one-column (VAR_STRING "v"), one-row text result set,
    with classic EOF packets (no CLIENT_DEPRECATE_EOF)."""
    coldef = (lenenc_str(b"def") + lenenc_str(b"") + lenenc_str(b"") + lenenc_str(b"") +
              lenenc_str(b"v") + lenenc_str(b"") + b"\x0c" + struct.pack("<H", 33) +
              struct.pack("<I", 1024) + b"\xfd" + struct.pack("<H", 0) + b"\x00" + b"\0\0")
    eof = b"\xfe\x00\x00\x02\x00"
    return [b"\x01", coldef, eof, lenenc_str(value), eof]


# ---- the fake server ----------------------------------------------------



class FakeMySQLServer(_Server):
    """See the module docstring.  Per connection .results gets a dict:
    sslreq (payload), sslreq_seq, tls (version), client_cn, login (parsed),
    login_seq, full_auth_payload (bytes the client sent after 01 04),
    auth ("ok" / "denied" / None), queries (list of str), ended (str).

    ca: verify an (optional) client certificate against it (client_cn).
    users: {name: password (bytes)}.  mode: "fast" or "full".
    switch_to: None, or a plugin name to switch to with a fresh nonce
      (b"sha256_password": the switch response must be the password + NUL).
    script: dict of raw overrides, read at accept time:
      "greeting": bytes sent instead of the greeting;
      "after_greeting": bytes sent right behind the greeting, in the same
        send (one TCP segment), as an on-path party could append them;
      "inject": bytes sent in clear after the greeting, in a separate send
        made once the test sets .inject_go; .injected is set after it;
      "after_sslreq": bytes sent in clear instead of the TLS handshake;
      "auth": bytes sent over TLS instead of the first auth reply;
      "then": "close" (default) or "stall" after a raw override."""

    def __init__(self, cert, key, ca=None, users=None, mode="fast", switch_to=None,
                 plugin=b"caching_sha2_password", io_timeout=10):
        self.users = users if users is not None else {"u": b"pw"}
        self.mode = mode
        self.switch_to = switch_to
        self.plugin = plugin
        self.io_timeout = io_timeout
        self.script = {}
        self.inject_go = threading.Event()
        self.injected = threading.Event()
        self._expected = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if ca:  # ask for a client certificate (optional), as mysqld does
            self.ctx.load_verify_locations(ca)
            self.ctx.verify_mode = ssl.CERT_OPTIONAL
        super().__init__()

    def _error(self, msg):
        with self._lock:
            self.errors.append(msg)

    def expect_error(self, regex):
        """Declare that errors matching `regex` (re.search) are expected,
        so close() does not raise for them."""
        self._expected.append(re.compile(regex))

    def unexpected_errors(self):
        """The errors recorded so far that no expect_error() covers."""
        with self._lock:
            errors = list(self.errors)
        return [e for e in errors if not any(x.search(e) for x in self._expected)]

    def close(self):
        """Stop (see _Server.close), then raise AssertionError naming every
        error the server met that the test did not declare expected."""
        super().close()
        bad = self.unexpected_errors()
        if bad:
            raise AssertionError("FakeMySQLServer errors: %s" % "; ".join(bad))

    def __exit__(self, exc_type, *exc):
        try:
            self.close()
        except AssertionError:
            if exc_type is None:  # do not hide the with block's own failure
                raise

    def _check_seq(self, rec, what, got, want):
        if got != want:
            self._error("%s arrived with sequence id %d, expected %d" % (what, got, want))
            rec.setdefault("seq_errors", []).append((what, got, want))

    def _raw(self, sock, data, then, rec):
        sock.sendall(data)
        if then == "stall":
            # Wait for dmtls to give up (handshake timeout) and close.
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            rec["ended"] = "stalled until peer closed"
        else:
            rec["ended"] = "raw then close"

    def handle(self, conn):
        rec = {"sslreq": None, "login": None, "auth": None, "queries": [],
               "full_auth_payload": None, "ended": None}
        script = dict(self.script)
        then = script.get("then", "close")
        conn.settimeout(self.io_timeout)
        try:
            self._handle(conn, rec, script, then)
        except (EOFError, ConnectionError, socket.timeout, ssl.SSLError, OSError) as e:
            rec["ended"] = rec["ended"] or "%s: %s" % (type(e).__name__, e)
        finally:
            self._record(**rec)

    def _handle(self, conn, rec, script, then):
        if "greeting" in script:
            return self._raw(conn, script["greeting"], then, rec)
        nonce = make_nonce()
        conn.sendall(packet(0, greeting(nonce, plugin=self.plugin)) +
                     script.get("after_greeting", b""))
        if "inject" in script:
            if not self.inject_go.wait(self.io_timeout):
                self._error("the test never let the injection go")
                return
            conn.sendall(script["inject"])
            self.injected.set()
        seq, req = read_packet(conn)
        rec["sslreq"], rec["sslreq_seq"] = req, seq
        self._check_seq(rec, "SSLRequest", seq, 1)
        if len(req) != 32 or not struct.unpack("<I", req[:4])[0] & SSL:
            self._error("expected a 32-byte SSLRequest, got %d bytes %r" % (len(req), req[:40]))
            rec["ended"] = "no SSLRequest"
            return
        if "after_sslreq" in script:
            return self._raw(conn, script["after_sslreq"], then, rec)
        tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._conns.discard(conn)
            self._conns.add(tls)
        try:
            tls.settimeout(self.io_timeout)
            tls.do_handshake()
            rec["tls"] = tls.version()
            rec["client_cn"] = _cn(tls.getpeercert())
            seq, login = read_packet(tls)
            self._check_seq(rec, "login", seq, 2)
            rec["login_seq"] = seq
            rec["login"] = parse_login(login)
            if "auth" in script:
                return self._raw(tls, script["auth"], then, rec)
            self._auth(tls, rec, nonce, seq + 1)
            if rec["auth"] == "ok":
                self._commands(tls, rec)
        finally:
            with self._lock:
                self._conns.discard(tls)
            tls.close()

    def _auth(self, tls, rec, nonce, seq):
        login = rec["login"]
        user = login["user"]
        password = self.users.get(user)
        scramble = login["auth"]
        if self.switch_to:
            nonce = make_nonce()
            tls.sendall(packet(seq, b"\xfe" + self.switch_to + b"\0" + nonce + b"\0"))
            s, scramble = read_packet(tls)
            self._check_seq(rec, "auth switch response", s, seq + 1)
            seq += 2
            if self.switch_to == b"sha256_password":
                # Over TLS, mysqld's sha256_password takes the password in
                # clear (+ NUL) as the switch response.
                rec["full_auth_payload"] = scramble
                if password is not None and scramble == password + b"\0":
                    tls.sendall(packet(seq, ok()))
                    rec["auth"] = "ok"
                else:
                    tls.sendall(packet(seq, err(1045, "Access denied for user '%s' "
                                                "(fake, sha256)" % user, "28000")))
                    rec["auth"] = "denied"
                return
        if self.mode == "fast":
            if password is not None and scramble == caching_sha2_scramble(password, nonce):
                tls.sendall(packet(seq, b"\x01\x03") + packet(seq + 1, ok()))
                rec["auth"] = "ok"
            else:
                tls.sendall(packet(seq, err(1045, "Access denied for user '%s' (fake)"
                                            % user, "28000")))
                rec["auth"] = "denied"
            return
        # Full authentication: the password must come in clear, over TLS.
        tls.sendall(packet(seq, b"\x01\x04"))
        s, pw = read_packet(tls)
        self._check_seq(rec, "full-auth password", s, seq + 1)
        rec["full_auth_payload"] = pw
        if password is not None and pw == password + b"\0":
            tls.sendall(packet(seq + 2, ok()))
            rec["auth"] = "ok"
        else:
            tls.sendall(packet(seq + 2, err(1045, "Access denied for user '%s' (fake, full)"
                                            % user, "28000")))
            rec["auth"] = "denied"

    def _commands(self, tls, rec):
        while True:
            seq, p = read_packet(tls)
            self._check_seq(rec, "command", seq, 0)
            if not p or p[0] == COM_QUIT:
                rec["ended"] = "quit"
                return
            if p[0] == COM_QUERY:
                q = p[1:].decode(errors="replace")
                rec["queries"].append(q)
                if q.lstrip().upper().startswith("SET "):
                    tls.sendall(packet(1, ok()))
                    continue
                value = ("%s|%s" % (rec["login"]["user"], q)).encode()
                tls.sendall(b"".join(packet(i + 1, x) for i, x in
                                     enumerate(result_set(value))))
            else:
                tls.sendall(packet(1, ok()))


# ---- a raw client -------------------------------------------------------

class FakeClient:
    """A plaintext MySQL client on a raw socket, for driving dmtls by hand."""

    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.greeting = None

    def read_greeting(self):
        """Read the greeting dmtls forwards; return parse_greeting() of it
        (raises AssertionError with the payload if it is an ERR)."""
        seq, p = read_packet(self.sock)
        assert p[:1] != b"\xff", "ERR instead of greeting: %r" % (parse_err(p),)
        self.greeting = parse_greeting(p)
        self.greeting["seq"] = seq
        return self.greeting

    login_payload = staticmethod(lambda *a, **kw: login_payload(*a, **kw))

    def send(self, seq, payload):
        self.sock.sendall(packet(seq, payload))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read(self):
        return read_packet(self.sock)

    def read_outcome(self, timeout=8):
        """Read packets until an ERR packet, EOF, a reset or `timeout` seconds
        of silence; return ("err", (code, state, msg)), ("eof", packets),
        ("reset", str) or ("timeout", packets), where packets are the
        payloads of the non-ERR packets read before."""
        self.sock.settimeout(timeout)
        seen = []
        try:
            while True:
                seq, p = read_packet(self.sock)
                if p[:1] == b"\xff":
                    return "err", parse_err(p)
                seen.append(p)
        except EOFError:
            return "eof", seen
        except socket.timeout:
            return "timeout", seen
        except ConnectionResetError as e:
            return "reset", str(e)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- a recording relay --------------------------------------------------

class RecordingProxy:
    """TCP relay 127.0.0.1:.port -> target port that keeps what went each
    way: .to_server and .to_client (bytes, all connections concatenated)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._socks = []
        self._threads = []
        self._l = socket.socket()
        self._l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._l.bind(("127.0.0.1", 0))
        self._l.listen(16)
        self._l.settimeout(0.1)
        self.port = self._l.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self):
        while not self._closed.is_set():
            try:
                c, _ = self._l.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                c.close()
                continue
            c.settimeout(None)
            s.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [c, s]
            for a, b, buf in ((c, s, self.to_server), (s, c, self.to_client)):
                t = threading.Thread(target=self._pump, args=(a, b, buf), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, a, b, buf):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                with self._lock:
                    buf += data
                b.sendall(data)
        except OSError:
            pass
        _shut(b, socket.SHUT_WR)

    def close(self):
        self._closed.set()
        self._l.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _shut(s)
            s.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- MariaDB's client_ed25519 in pure Python -----------------------------

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_I = pow(2, (_P - 1) // 4, _P)


def _xrecover(y):
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P != 0:
        x = x * _I % _P
    if x % 2 != 0:
        x = _P - x
    return x


_BY = 4 * pow(5, _P - 2, _P) % _P
_BX = _xrecover(_BY)
_B = (_BX, _BY, 1, _BX * _BY % _P)


def _add(p, q):
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s, p):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode(p):
    zi = pow(p[2], _P - 2, _P)
    x, y = p[0] * zi % _P, p[1] * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def ed25519_sign(password, message):
    """MariaDB client_ed25519: an Ed25519 signature of `message` whose secret
    expands from SHA-512(password) (password of any length).  For a 32-byte
    password it equals a standard Ed25519 signature with that seed."""
    h = hashlib.sha512(password).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    r = int.from_bytes(hashlib.sha512(h[32:] + message).digest(), "little") % _L
    R = _encode(_mul(r, _B))
    A = _encode(_mul(a, _B))
    k = int.from_bytes(hashlib.sha512(R + A + message).digest(), "little") % _L
    S = (r + k * a) % _L
    return R + S.to_bytes(32, "little")


class Ed25519Auth:
    """PyMySQL auth_plugin_map handler for b"client_ed25519"."""

    def __init__(self, con):
        self.con = con

    def authenticate(self, pkt):
        self.con.write_packet(ed25519_sign(self.con.password, pkt.read_all()))
        reply = self.con._read_packet()
        reply.check_error()
        return reply
