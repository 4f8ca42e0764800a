"""In-process helper backends for the dmtls integration tests.

Every server listens on 127.0.0.1 on an ephemeral port and exposes ``.port``,
``.addr`` ("127.0.0.1:PORT"), ``.accepted`` (connections accepted so far),
``.results`` (per-connection records, where the server keeps any),
``.errors`` (exceptions raised by connection handlers, as strings),
``wait_results(n, timeout)`` and ``close()``; each is a context manager.
A daemon thread accepts, one daemon thread serves each connection, and
``close()`` shuts the listener and every connection down with bounded joins.

A backend reports its own failures: leaving the ``with`` block (or
``close()``) raises AssertionError when ``.errors`` holds an entry that no
regex declared with ``expect_error()`` matches (errors met while closing
are not recorded).
"""

import hashlib
import re
import socket
import ssl
import threading
import time

from conftest import connections_to, scaled


def pattern_chunks(nbytes, seed, chunk=1 << 20):
    """Yield the deterministic pseudo-random stream of pattern(nbytes, seed)
    in pieces of at most `chunk` bytes.  The stream is the concatenation of
    1 MiB blocks, block i = SHAKE-256("SEED:i"), whatever `chunk` is."""
    seed = seed if isinstance(seed, bytes) else str(seed).encode()
    block, i = 1 << 20, 0
    while nbytes > 0:
        data = hashlib.shake_256(seed + b":%d" % i).digest(min(block, nbytes))
        for off in range(0, len(data), chunk):
            yield data[off:off + chunk]
        nbytes -= len(data)
        i += 1


def pattern(nbytes, seed):
    """Return `nbytes` of deterministic pseudo-random data derived from `seed`."""
    return b"".join(pattern_chunks(nbytes, seed))


def pattern_sha256(nbytes, seed):
    """SHA-256 hex digest of pattern(nbytes, seed), computed without holding it all."""
    h = hashlib.sha256()
    for piece in pattern_chunks(nbytes, seed):
        h.update(piece)
    return h.hexdigest()


def read_to_eof(sock, bufsize=65536):
    """Read `sock` until EOF; return (sha256 hex, byte count, first 64 KiB)."""
    h, n, head = hashlib.sha256(), 0, bytearray()
    while True:
        data = sock.recv(bufsize)
        if not data:
            return h.hexdigest(), n, bytes(head)
        h.update(data)
        n += len(data)
        if len(head) < 65536:
            head += data[:65536 - len(head)]


def wait_until(pred, timeout=5, msg="condition"):
    """Poll pred() every 10 ms until it is truthy and return its value; raise
    AssertionError naming `msg` after `timeout` seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, msg))
        time.sleep(0.01)


def _shut(sock, how=socket.SHUT_RDWR):
    try:
        sock.shutdown(how)
    except OSError:
        pass


class _Server:
    """Base class: listener, accept thread, per-connection threads, teardown."""

    backlog = 128

    def __init__(self, rcvbuf=None, sock=None):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._accepted = 0
        self._conns = set()
        self._threads = []
        self._closed = threading.Event()
        self.results = []
        self.errors = []
        self._expected = []
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind(("127.0.0.1", 0))
        self._lsock = sock
        self._lsock.listen(self.backlog)
        self._lsock.settimeout(0.1)
        self.port = self._lsock.getsockname()[1]
        host = self._host = self._lsock.getsockname()[0]
        self.addr = ("[%s]:%d" if ":" in host else "%s:%d") % (host, self.port)
        # connections already in /proc/net/tcp with this port (the TIME_WAIT
        # of an earlier user of the number), so that dialled() ignores them
        self._foreign = connections_to(self.port, host)
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="%s-accept" % type(self).__name__)
        self._accept_thread.start()

    @property
    def accepted(self):
        """Number of connections accepted so far."""
        with self._lock:
            return self._accepted

    def dialled(self):
        """True when anyone ever connected to this server: it accepted a
        connection, one waits in its backlog, or /proc/net/tcp holds a
        socket of such a connection (in any state, TIME_WAIT included,
        which outlives the connection by a minute).  A connection that
        reached the kernel shows at once, so no wait is needed to see one
        that was made before the call."""
        host = self._host
        return self.accepted > 0 or bool(connections_to(self.port, host) - self._foreign)

    def expect_error(self, *regexes):
        """Declare errors this test provokes: each regex (re.search) excuses
        the .errors entries it matches when the server closes.  Returns self,
        so that ``with EchoServer().expect_error(r"...") as srv`` works."""
        self._expected.extend(regexes)
        return self

    def _note_error(self, msg):
        """Record a failure in .errors unless the server is closing."""
        if not self._closed.is_set():
            with self._lock:
                self.errors.append(msg)

    def unexpected_errors(self):
        """The .errors entries that no expect_error() regex matches."""
        with self._lock:
            return [e for e in self.errors
                    if not any(re.search(rx, e) for rx in self._expected)]

    def _accept_loop(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError as e:
                self._note_error("accept: %s" % e)
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._accepted += 1
                self._conns.add(conn)
                self._threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            self.handle(conn)
        except Exception as e:  # a handler failure must not kill the server
            self._note_error("%s: %s" % (type(e).__name__, e))
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def handle(self, conn):
        """Serve one connection (overridden by subclasses)."""
        raise NotImplementedError

    def _record(self, **result):
        with self._cond:
            self.results.append(result)
            self._cond.notify_all()

    def wait_results(self, n, timeout=10):
        """Wait until at least n connections have recorded a result; return a
        copy of .results, or raise AssertionError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.results) >= n, timeout):
                raise AssertionError("%s: %d of %d results after %ss; errors=%r" % (
                    type(self).__name__, len(self.results), n, timeout, self.errors))
            return list(self.results)

    def close(self, check=True):
        """Stop accepting, shut every connection down, join threads (bounded).
        Then, when `check`, raise AssertionError if a handler thread is still
        running or .errors holds an unexpected entry (see expect_error)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._lsock.close()
        except OSError:
            pass
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            _shut(c)
        deadline = time.monotonic() + 3
        self._accept_thread.join(max(0, deadline - time.monotonic()))
        for t in threads:
            t.join(max(0, deadline - time.monotonic()))
        if not check:
            return
        bad = self.unexpected_errors()
        if self._accept_thread.is_alive() or any(t.is_alive() for t in threads):
            bad.append("a thread did not finish within 3 s of close()")
        if bad:
            raise AssertionError("%s on port %d reported errors:\n  %s"
                                 % (type(self).__name__, self.port, "\n  ".join(bad)))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        # An error already on its way out is the story; do not bury it.
        self.close(check=exc_type is None)


class EchoServer(_Server):
    """Echo every byte back; on EOF shut the write side and close.
    Records {"bytes": n} per finished connection."""

    def handle(self, conn):
        n = 0
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            n += len(data)
        _shut(conn, socket.SHUT_WR)
        self._record(bytes=n)


class SinkServer(_Server):
    """Read until EOF, record {"sha256", "bytes"}, then send `reply` and close."""

    def __init__(self, reply=b"", rcvbuf=None):
        self.reply = reply
        super().__init__(rcvbuf)

    def handle(self, conn):
        digest, n, _ = read_to_eof(conn)
        if self.reply:
            conn.sendall(self.reply)
        _shut(conn, socket.SHUT_WR)
        self._record(sha256=digest, bytes=n)


class DuplexServer(_Server):
    """Full duplex: send pattern(nbytes, seed) then shut the write side, while
    concurrently reading to EOF; record {"sha256", "bytes"} of what was read."""

    def __init__(self, nbytes, seed):
        self.nbytes, self.seed = nbytes, seed
        super().__init__()

    def handle(self, conn):
        def send():
            try:
                for piece in pattern_chunks(self.nbytes, self.seed, 65536):
                    conn.sendall(piece)
                _shut(conn, socket.SHUT_WR)
            except OSError as e:
                self._note_error("send: %s" % e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            digest, n, _ = read_to_eof(conn)
        finally:
            sender.join(60)
        self._record(sha256=digest, bytes=n)


class SlowReader(_Server):
    """Read at most `rate_bps` bytes per second; never close first.
    ``.bytes_read`` is the total over all connections.  `rcvbuf` sets
    SO_RCVBUF so that backpressure reaches the sender sooner."""

    def __init__(self, rate_bps, rcvbuf=None):
        self.rate = rate_bps
        self._bytes = 0
        super().__init__(rcvbuf)

    @property
    def bytes_read(self):
        """Total bytes read so far over all connections."""
        with self._lock:
            return self._bytes

    def handle(self, conn):
        start, total = time.monotonic(), 0
        burst = max(1, min(4096, self.rate // 10))
        while not self._closed.is_set():
            allowed = int(self.rate * (time.monotonic() - start)) + burst - total
            if allowed <= 0:
                time.sleep(0.01)
                continue
            data = conn.recv(min(allowed, 4096))
            if not data:
                break
            total += len(data)
            with self._lock:
                self._bytes += len(data)
        self._record(bytes=total)


class HalfCloseServer(_Server):
    """Default: read to EOF, then send `reply`, shut the write side, close.
    first_close=True: send `reply` and shut the write side right after
    accept, then read to EOF.  Records {"sha256", "bytes", "data"} where data
    is the first 64 KiB read."""

    def __init__(self, reply, first_close=False):
        self.reply, self.first_close = reply, first_close
        super().__init__()

    def handle(self, conn):
        if self.first_close:
            conn.sendall(self.reply)
            _shut(conn, socket.SHUT_WR)
        digest, n, head = read_to_eof(conn)
        if not self.first_close:
            conn.sendall(self.reply)
            _shut(conn, socket.SHUT_WR)
        self._record(sha256=digest, bytes=n, data=head)


def _cn(cert):
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class TLSServer(_Server):
    """TLS echo server (Python ssl).  Per successful handshake it appends to
    ``.peer_cns`` (client leaf CN or None), ``.alpns`` (selected protocol or
    None), ``.versions`` ("TLSv1.3"...) and ``.snis`` (SNI sent by the client
    or None).  Handshake failures go to ``.errors``.  `min_version` /
    `max_version` are ssl.TLSVersion values; `sock`: a bound socket to
    listen on (see _Server)."""

    def __init__(self, cert, key, ca, require_client_cert=True, alpn=None,
                 min_version=None, max_version=None, handshake_timeout=10, sock=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        ctx.sni_callback = self._on_sni
        self.ctx = ctx
        self.handshake_timeout = handshake_timeout
        self.peer_cns, self.alpns, self.versions, self.snis = [], [], [], []
        self._local = threading.local()
        super().__init__(sock=sock)

    def _on_sni(self, sslobj, name, ctx):
        self._local.sni = name

    def handle(self, conn):
        self._local.sni = None
        tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # wrap_socket detached conn: let close() reach tls
            self._conns.discard(conn)
            self._conns.add(tls)
        try:
            tls.settimeout(self.handshake_timeout)
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self._note_error("handshake: %s" % e)
                return
            tls.settimeout(None)
            with self._lock:
                self.peer_cns.append(_cn(tls.getpeercert()))
                self.alpns.append(tls.selected_alpn_protocol())
                self.versions.append(tls.version())
                self.snis.append(self._local.sni)
            n = 0
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                tls.sendall(data)
                n += len(data)
            self._record(bytes=n)
            try:
                plain = tls.unwrap()  # answer the peer's close_notify with ours
                _shut(plain, socket.SHUT_WR)
                plain.close()
            except (ssl.SSLError, OSError, ValueError) as e:
                self._note_error("unwrap: %s" % e)
        finally:
            with self._lock:
                self._conns.discard(tls)
            tls.close()
