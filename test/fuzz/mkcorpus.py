#!/usr/bin/env python3
"""Write the fuzz targets' test PKI and seed corpora (test/fuzz/).

The outputs are checked in; run this again only to change them:

    DMTLS_BIN=$PWD/dmtls /usr/bin/python3 test/fuzz/mkcorpus.py [STEP...]

(the python3 with pytest and pymysql, which test/integration's modules use).

Steps (default: all, in this order):
  pki      test/fuzz/pki.h: a CA, a server leaf (CN dm, DNS:localhost,
           IP:127.0.0.1) and a client leaf, P-256, valid for 100 years,
           made with the openssl CLI (test/integration/pki.py)
  static   seeds for mysqlproto, peerid, certset, config and log, and the
           regression inputs of test/integration/data/fuzz-findings
  hello    real ClientHellos (hello, tls_accept): Python's ssl, openssl
           s_client, Go's crypto/tls and dmtls's own client route, each the
           first record a listening socket received
  mysql    real logins (mysql, mysqlproto): a plaintext client -> dmtls ->
           MariaDB (test/integration/mysqld.py) or the fake caching_sha2
           server (test/integration/mysqlfake.py), recorded on both legs
  crl      real CRLs (crl) made by `openssl ca -gencrl`: empty, with
           revoked serials and reasons, DER, expired, two in one file, one
           of another CA

Each corpus file is one input in the target's format (see its .c file).
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "test", "integration"))

from pki import PKI  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
FINDINGS = os.path.join(TOP, "test", "integration", "data", "fuzz-findings")
SEP = b"\n--8<--\n"     # fuzz.h FUZZ_SEP: splits an input into files
DAYS = 36500


def put(target, name, data):
    """Write one seed, test/fuzz/corpus/TARGET/NAME."""
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def openssl(*args, inp=None):
    r = subprocess.run(("openssl",) + args, input=inp, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode()))
    return r.stdout


# ---- pki ------------------------------------------------------------------

def make_pki(d):
    """The long-lived PKI in d (a pki.PKI, whose own set is short-lived)."""
    p = PKI(d)
    p.new_ca("fca", cn="dmtls fuzz CA", days=DAYS)
    p.leaf("fserver", "dm", ca="fca", days=DAYS)
    p.leaf("fclient", "dm", ca="fca", days=DAYS, ou="ops",
           sans=("DNS:dm.example", "URI:spiffe://dm/worker"))
    return p


def c_string(name, data):
    lines = data.decode().splitlines(True)
    body = "\n".join('\t"%s"' % ln.replace("\n", "\\n") for ln in lines)
    return "static const char %s[] =\n%s;\n" % (name, body)


def step_pki(tmp):
    p = make_pki(os.path.join(tmp, "pki"))
    out = ["/*\n * pki.h: the fuzz targets' test PKI, made by test/fuzz/mkcorpus.py pki\n"
           " * (openssl, P-256, valid for 100 years; do not edit, run it again).\n */\n"]
    for name, path in (("fuzz_ca_pem", p.path("fca")),
                       ("fuzz_server_pem", p.path("fserver")),
                       ("fuzz_server_key_pem", p.key("fserver")),
                       ("fuzz_client_pem", p.path("fclient")),
                       ("fuzz_client_key_pem", p.key("fclient"))):
        out.append(c_string(name, read(path)))
    with open(os.path.join(HERE, "pki.h"), "w") as f:
        f.write("\n".join(out))


def pki_from_header():
    """The PEMs of pki.h, by C name."""
    text = read(os.path.join(HERE, "pki.h")).decode()
    pems, name = {}, None
    for ln in text.splitlines():
        if ln.startswith("static const char "):
            name = ln.split()[3].rstrip("[]=")
            pems[name] = ""
        elif name and ln.startswith('\t"'):
            pems[name] += ln.strip().rstrip(";").strip('"').replace("\\n", "\n")
    return {k: v.encode() for k, v in pems.items()}


# ---- static seeds -----------------------------------------------------------

def der(pem):
    return openssl("x509", "-outform", "DER", inp=pem)


def c_arrays(path):
    """name -> bytes of each `static const unsigned char name[] = {...}`."""
    out, name, buf = {}, None, []
    for ln in read(path).decode().splitlines():
        if ln.startswith("static const unsigned char "):
            name, buf = ln.split()[4].rstrip("[]"), []
        elif name and ln.startswith("};"):
            out[name] = bytes(buf)
            name = None
        elif name:
            buf += [int(x, 16) for x in ln.replace(",", " ").split()]
    return out


def seeds_peerid(tmp, pems):
    put("peerid", "fuzz-server.der", der(pems["fuzz_server_pem"]))
    put("peerid", "fuzz-client.der", der(pems["fuzz_client_pem"]))
    put("peerid", "fuzz-ca.der", der(pems["fuzz_ca_pem"]))
    for name, data in c_arrays(os.path.join(TOP, "test", "unit", "policy_certs.h")).items():
        put("peerid", name.replace("cert_", "policy-") + ".der", data)
    p = PKI(os.path.join(tmp, "pki-peerid"), algo="rsa")
    p.leaf("rsa", "rsa-leaf", sans=("DNS:a.example", "IP:::1", "URI:spiffe://td/x"))
    put("peerid", "rsa-ipv6.der", der(read(p.path("rsa"))))
    p.leaf("ed", "ed-leaf", algo="ed25519", ou="ops")
    put("peerid", "ed25519-ou.der", der(read(p.path("ed"))))


def seeds_certset(tmp, pems):
    """flags byte (fuzz_certset.c), then ca SEP cert SEP key [SEP ca SEP cert
    SEP key: the files rewritten before certsrc_acquire]."""
    ca, srv, skey = pems["fuzz_ca_pem"], pems["fuzz_server_pem"], pems["fuzz_server_key_pem"]
    cli, ckey = pems["fuzz_client_pem"], pems["fuzz_client_key_pem"]
    p = PKI(os.path.join(tmp, "pki-certset"))
    inter = p.new_ca("inter", cn="intermediate", parent="ca")
    p.leaf("via", "via", ca="inter", days=DAYS)
    p.leaf("rsa", "rsa", algo="rsa", days=DAYS)
    p.leaf("ed", "ed", algo="ed25519", days=DAYS)
    trad = openssl("pkey", "-in", p.key("dm"), "-traditional")
    enc = openssl("pkey", "-in", p.key("dm"), "-aes128", "-passout", "pass:x")
    f = lambda flags, *files: bytes([flags]) + SEP.join(files)  # noqa: E731
    put("certset", "server.bin", f(1, ca, srv, skey))
    put("certset", "server-verify-client.bin", f(3, ca, srv, skey))
    put("certset", "client-only.bin", f(4, ca))
    put("certset", "client-cert.bin", f(0, ca, cli, ckey))
    put("certset", "reload.bin", f(1, ca, srv, skey, ca, cli, ckey))
    put("certset", "reload-broken.bin", f(1, ca, srv, skey, ca, srv, ckey))
    put("certset", "chain.bin", f(1, read(p.path("ca")),
                                  read(p.path("via")) + read(inter), read(p.key("via"))))
    put("certset", "bundle.bin", f(1, read(p.path("ca")) + ca, srv, skey))
    put("certset", "rsa.bin", f(1, read(p.path("ca")), read(p.path("rsa")), read(p.key("rsa"))))
    put("certset", "ed25519.bin", f(1, read(p.path("ca")), read(p.path("ed")), read(p.key("ed"))))
    put("certset", "ec-traditional.bin", f(1, read(p.path("ca")), read(p.path("dm")), trad))
    put("certset", "key-encrypted.bin", f(1, read(p.path("ca")), read(p.path("dm")), enc))
    put("certset", "not-from-ca.bin", f(1, ca, read(p.path("dm")), read(p.key("dm"))))
    short = read(os.path.join(FINDINGS, "ec-key-short-publickey.pem"))
    put("certset", "finding-ec-key-short-publickey.bin", f(1, ca, srv, short))


def seeds_config():
    """main SEP conf.d file SEP ... (fuzz_config.c)."""
    for name in sorted(os.listdir(os.path.join(TOP, "conf.d"))):
        if name.endswith(".conf"):
            put("config", name, read(os.path.join(TOP, "conf.d", name)))
    main = (b'log-level = "debug";\nlog-format = "json";\nworkers = 2;\n'
            b'shutdown-timeout = "1.5m";\nstatus = "127.0.0.1:9264";\n'
            b'security = { ssl-ca = "/ca.pem"; ssl-cert = "/c.pem"; ssl-key = "/k.pem";\n'
            b'  cert-allowed-cn = ["dm"]; cert-allowed-ou = ["ops"]; verify-client = false; };\n'
            b'routes = ( { name = "s"; kind = "server"; listen = "127.0.0.1:8261";\n'
            b'  target = "unix:/run/x.sock"; alpn = ["h2"]; max-conns = 10;\n'
            b'  idle-timeout = 0; close-timeout = "500ms"; } );\n')
    dropin = (b'routes = ( { name = "c"; kind = "client"; listen = "[::1]:9000";\n'
              b'  target = "10.0.0.1:8261"; handshake-timeout = 5;\n'
              b'  security = { server-name = "dm"; cert-allowed-dns = ["dm.example"];\n'
              b'  cert-allowed-uri = ["spiffe://dm/x"]; }; },\n'
              b'  { name = "m"; kind = "mysql"; listen = "systemd:mysql";\n'
              b'  target = "127.0.0.1:3306"; connect-timeout = "2h"; } );\n')
    put("config", "split.bin", main + SEP + dropin + SEP + b"routes = ();\n")
    put("config", "empty-confd.bin", main + SEP)
    put("config", "confd-bad-key.bin", main + SEP + b'workers = 3;\n')
    # Found by fuzz_config: libconfig 1.5 leaks the string token before a
    # syntax error (lsan.supp).
    put("config", "finding-libconfig-scanner-leak.conf", b' "nan";\nroutes = ();\n')
    # /work/shared/reference/fuzz-findings/duration-nan.conf
    put("config", "finding-duration-nan.conf",
        b'shutdown-timeout = "nan";\nroutes = ();\n')


def seeds_log():
    """format/size byte, then NUL-separated values (fuzz_log.c)."""
    vals = [b"plain", "Grüße, 日本, 🙂".encode(), b"quote\" back\\slash",
            b"ctl\n\r\t\x01\x7f\xc2\x85", b"bad \xff \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80",
            b"cut \xe6\x97", b"a=b c", b""]
    put("log", "json.bin", b"\x01" + b"\0".join(vals))
    put("log", "logfmt.bin", b"\x00" + b"\0".join(vals))
    put("log", "long-utf8.bin", b"\x01" + "é".encode() * 700)
    put("log", "long-logfmt.bin", b"\x20" + b"x" * 1100 + b"\0" + b"\xff" * 3000)


def seeds_findings():
    hello = read(os.path.join(FINDINGS, "clienthello-alpn-truncated.bin"))
    put("hello", "finding-clienthello-alpn-truncated.bin", hello)
    put("tls_accept", "finding-clienthello-alpn-truncated.bin", b"\x00" + hello)


def step_static(tmp):
    pems = pki_from_header()
    seeds_peerid(tmp, pems)
    seeds_certset(tmp, pems)
    seeds_config()
    seeds_log()
    seeds_findings()


# ---- hello: real ClientHellos -------------------------------------------------

def first_record(listener, timeout=20):
    """Accept one connection and return the first whole TLS record."""
    listener.settimeout(timeout)
    c, _ = listener.accept()
    c.settimeout(timeout)
    buf = b""
    try:
        while len(buf) < 5 or len(buf) < 5 + struct.unpack(">H", buf[3:5])[0]:
            d = c.recv(65536)
            if not d:
                break
            buf += d
    finally:
        c.close()
    if len(buf) < 5:
        raise RuntimeError("no TLS record received")
    return buf[:5 + struct.unpack(">H", buf[3:5])[0]]


def capture(client):
    """Run client(port) in a thread against a fresh listener; its hello."""
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(1)
    port = l.getsockname()[1]
    t = threading.Thread(target=client, args=(port,), daemon=True)
    t.start()
    try:
        return first_record(l)
    finally:
        l.close()
        t.join(20)


def py_client(alpn, sni="dm", tls12=False):
    import ssl

    def run(port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                ctx.wrap_socket(s, server_hostname=sni).close()
        except (OSError, ValueError):
            pass
    return run


def proc_client(argv_of):
    def run(port):
        subprocess.run(argv_of(port), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60)
    return run


GO_CLIENT = r'''package main

import (
	"crypto/tls"
	"os"
	"strings"
)

func main() {
	c := &tls.Config{InsecureSkipVerify: true, ServerName: "dm"}
	if os.Args[2] != "" {
		c.NextProtos = strings.Split(os.Args[2], ",")
	}
	if len(os.Args) > 3 {
		c.MaxVersion = tls.VersionTLS12
	}
	conn, err := tls.Dial("tcp", os.Args[1], c)
	if err == nil {
		conn.Close()
	}
}
'''


def dmtls_client(tmp, pems):
    """dmtls's own ClientHello: a client route toward the capture port."""
    d = os.path.join(tmp, "dmtls-client")
    os.makedirs(d, exist_ok=True)
    files = {}
    for k, fn in (("fuzz_ca_pem", "ca.pem"), ("fuzz_client_pem", "c.pem"),
                  ("fuzz_client_key_pem", "c-key.pem")):
        files[fn] = os.path.join(d, fn)
        with open(files[fn], "wb") as f:
            f.write(pems[k])

    def run(port):
        lport = free_port()
        p = subprocess.Popen([os.environ.get("DMTLS_BIN", os.path.join(TOP, "dmtls")),
                              "client", "--listen", "127.0.0.1:%d" % lport,
                              "--target", "127.0.0.1:%d" % port,
                              "--ssl-ca", files["ca.pem"], "--ssl-cert", files["c.pem"],
                              "--ssl-key", files["c-key.pem"],
                              "--alpn", "h2,http/1.1", "--server-name", "localhost"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            wait_tcp(lport)
            with socket.create_connection(("127.0.0.1", lport), timeout=5) as s:
                s.sendall(b"x")
                time.sleep(1)
        finally:
            p.terminate()
            p.wait(10)
    return run


def step_hello(tmp):
    pems = pki_from_header()
    hellos = {
        "python-alpn.bin": py_client(["h2", "http/1.1"]),
        "python-noalpn.bin": py_client(None),
        "python-tls12.bin": py_client(["http/1.1"], tls12=True),
        "openssl-alpn.bin": proc_client(lambda p: [
            "openssl", "s_client", "-connect", "127.0.0.1:%d" % p, "-alpn",
            "h2,http/1.1", "-servername", "dm"]),
        "openssl-tls12-noalpn.bin": proc_client(lambda p: [
            "openssl", "s_client", "-connect", "127.0.0.1:%d" % p, "-tls1_2",
            "-noservername"]),
        "dmtls-client.bin": dmtls_client(tmp, pems),
    }
    gosrc = os.path.join(tmp, "goclient")
    os.makedirs(gosrc, exist_ok=True)
    with open(os.path.join(gosrc, "main.go"), "w") as f:
        f.write(GO_CLIENT)
    gobin = os.path.join(gosrc, "hello")
    env = dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="off",
               GOCACHE=os.path.join(tmp, "gocache"))
    subprocess.run(["go", "build", "-o", gobin, "main.go"], cwd=gosrc, env=env,
                   check=True, timeout=300)
    hellos["go-alpn.bin"] = proc_client(lambda p: [gobin, "127.0.0.1:%d" % p, "h2,http/1.1"])
    hellos["go-tls12.bin"] = proc_client(lambda p: [gobin, "127.0.0.1:%d" % p, "", "12"])
    for name, client in hellos.items():
        rec = capture(client)
        put("hello", name, rec)
        # tls_accept: flags byte 0 (verify clients, alpn h2,http/1.1) and 2
        # (no alpn configured) for a few.
        put("tls_accept", name, b"\x00" + rec)
        print("hello %-26s %5d bytes" % (name, len(rec)))


# ---- mysql: real logins, both legs recorded ------------------------------------

class EventProxy:
    """A TCP relay 127.0.0.1:.port -> target that appends (tag, bytes) to
    a shared event list in the order the bytes arrived."""

    def __init__(self, target_port, events, lock, tags):
        self.events, self.lock, self.tags = events, lock, tags
        self.target_port = target_port
        self.l = socket.socket()
        self.l.bind(("127.0.0.1", 0))
        self.l.listen(4)
        self.port = self.l.getsockname()[1]
        self.threads = []
        t = threading.Thread(target=self.accept, daemon=True)
        t.start()

    def accept(self):
        try:
            c, _ = self.l.accept()
        except OSError:
            return
        s = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        for a, b, tag in ((c, s, self.tags[0]), (s, c, self.tags[1])):
            t = threading.Thread(target=self.pump, args=(a, b, tag), daemon=True)
            t.start()
            self.threads.append(t)

    def pump(self, a, b, tag):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self.lock:
                    self.events.append((tag, d))
                b.sendall(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.l.close()
        for t in self.threads:
            t.join(5)


def packets(data):
    """Split a byte stream into whole MySQL packets (header included)."""
    out, off = [], 0
    while off + 4 <= len(data):
        n = data[off] | data[off + 1] << 8 | data[off + 2] << 16
        out.append(data[off:off + 4 + n])
        off += 4 + n
    return out


def chunk(leg, data):
    """fuzz_mysql.c's chunk: leg bit and 15-bit length, then the bytes."""
    out = b""
    while data:
        part, data = data[:0x7fff], data[0x7fff:]
        out += bytes([(len(part) >> 8) << 1 | leg, len(part) & 0xff]) + part
    return out


def mysql_inputs(events):
    """Three inputs from one recorded login: mode 0 (the server leg's TLS
    stubbed: server packets in clear), mode 1 (an in-process TLS peer
    carries them), mode 2 (the server's raw bytes, TLS included)."""
    CLI, SRV = 0, 1
    plain, raw = [], []
    greeted = False
    for tag, d in events:
        if tag == "c2d":
            plain.append((CLI, d))
            raw.append((CLI, d))
        elif tag == "s2d":
            raw.append((SRV, d))
            if not greeted:
                plain.append((SRV, d))   # the greeting, in clear, CLIENT_SSL on
                greeted = True
        elif tag == "d2c" and greeted:
            # What dmtls forwarded from the server after the greeting; the
            # greeting itself (CLIENT_SSL hidden) and the RSA public key
            # dmtls answers by itself are not the server's.
            for p in packets(d):
                body = p[4:]
                if body[:1] == b"\x0a" and p[3] == 0:
                    continue
                if body.startswith(b"\x01-----BEGIN PUBLIC KEY"):
                    plain.append((None, b""))   # a turn: do not merge across
                    continue
                p = p[:3] + bytes([(p[3] + 1) & 0xff]) + body
                plain.append((SRV, p))
    # Coalesce neighbours on the same leg.
    # A client packet of 256 bytes is an RSA-encrypted password: flag 8
    # has the harness encrypt it again with its own process's key.
    rsa = 8 if any(leg == CLI and any(len(p) == 4 + 256 for p in packets(d))
                   for leg, d in plain) else 0

    def enc(mode, seq):
        merged = []
        for leg, d in seq:
            if merged and merged[-1][0] == leg and leg is not None:
                merged[-1] = (leg, merged[-1][1] + d)
            else:
                merged.append((leg, d))
        return bytes([mode]) + b"".join(chunk(leg, d) for leg, d in merged
                                        if leg is not None)
    return enc(rsa | 0, plain), enc(rsa | 1, plain), enc(2, raw)


def wait_tcp(port, timeout=10):
    """Wait (bounded) until 127.0.0.1:port listens, without dialling it."""
    needle = "0100007F:%04X" % port

    def listening():
        with open("/proc/net/tcp") as f:
            return any(ln.split()[1] == needle and ln.split()[3] == "0A"
                       for ln in f.readlines()[1:])
    deadline = time.monotonic() + timeout
    while not listening():
        if time.monotonic() > deadline:
            raise RuntimeError("nothing listens on port %d" % port)
        time.sleep(0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_login(ca, server_port, client, tmp, name):
    """client(port) logs in through dmtls (a mysql route) to server_port,
    with an EventProxy on each leg; returns the recorded events."""
    events, lock = [], threading.Lock()
    p2 = EventProxy(server_port, events, lock, ("d2s", "s2d"))
    lport = free_port()
    argv = [os.environ.get("DMTLS_BIN", os.path.join(TOP, "dmtls")), "mysql",
            "--listen", "127.0.0.1:%d" % lport, "--target", "127.0.0.1:%d" % p2.port,
            "--ssl-ca", ca, "--server-name", "localhost"]
    log = open(os.path.join(tmp, name + ".log"), "wb")
    d = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    p1 = None
    try:
        wait_tcp(lport)
        p1 = EventProxy(lport, events, lock, ("c2d", "d2c"))
        client(p1.port)
        time.sleep(0.5)
    finally:
        for p in (p1, p2):
            if p is not None:
                p.close()
        d.terminate()
        d.wait(10)
        log.close()
    return list(events)


def pymysql_client(user, password, query="SELECT 1"):
    def run(port):
        import pymysql
        try:
            c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                                connect_timeout=10, read_timeout=10, ssl_disabled=True)
            with c.cursor() as cur:
                cur.execute(query)
                cur.fetchall()
            c.close()
        except pymysql.MySQLError as e:
            print("   (client: %s)" % e)
    return run


def cli_client(user, password):
    def run(port):
        from mysqld import mariadb_cli
        r = mariadb_cli(port, user, password, "SELECT 1")
        if r.returncode != 0:
            print("   (client: %s)" % r.stderr.strip())
    return run


def step_mysql(tmp):
    from mysqld import MariaDB
    from mysqlfake import FakeMySQLServer
    pems = pki_from_header()
    d = os.path.join(tmp, "mysql")
    os.makedirs(d, exist_ok=True)
    paths = {}
    for k, fn in (("fuzz_ca_pem", "ca.pem"), ("fuzz_server_pem", "dm.pem"),
                  ("fuzz_server_key_pem", "dm-key.pem")):
        paths[fn] = os.path.join(d, fn)
        with open(paths[fn], "wb") as f:
            f.write(pems[k])
    runs = []
    db = MariaDB(os.path.join(d, "mariadb"), tls=(paths["ca.pem"], paths["dm.pem"],
                                                  paths["dm-key.pem"]))
    db.start()
    try:
        db.sql("CREATE USER 'u'@'%' IDENTIFIED BY 'pw'; GRANT ALL ON *.* TO 'u'@'%';"
               "INSTALL SONAME 'auth_ed25519';"
               "CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpw');")
        runs.append(("mariadb-native", db.port, cli_client("u", "pw")))
        runs.append(("mariadb-ed25519", db.port, cli_client("ed", "edpw")))
        runs.append(("mariadb-denied", db.port, pymysql_client("u", "wrong")))
        runs.append(("mariadb-pymysql", db.port, pymysql_client("u", "pw")))
        for name, port, client in runs:
            ev = record_login(paths["ca.pem"], port, client, d, name)
            save_mysql(name, ev)
    finally:
        db.stop()
    fakes = (("fake-fast", dict(mode="fast"), pymysql_client("u", "pw")),
             ("fake-full-rsa", dict(mode="full"), pymysql_client("u", "pw")),
             ("fake-switch-sha256", dict(mode="fast", switch_to=b"sha256_password"),
              pymysql_client("u", "pw")),
             ("fake-denied", dict(mode="fast"), pymysql_client("u", "no")))
    for name, kw, client in fakes:
        srv = FakeMySQLServer(paths["dm.pem"], paths["dm-key.pem"], **kw)
        srv.expect_error(".")
        try:
            ev = record_login(paths["ca.pem"], srv.port, client, d, name)
        finally:
            srv.close()
        save_mysql(name, ev)


def save_mysql(name, events):
    plain, tls, raw = mysql_inputs(events)
    put("mysql", name + "-plain.bin", plain)
    put("mysql", name + "-tls.bin", tls)
    put("mysql", name + "-raw.bin", raw)
    # mysqlproto: selector byte (fuzz_mysqlproto.c) + one payload.
    seen = set()
    for tag, d in events:
        for p in packets(d):
            body = p[4:]
            sel = {"s2d": 0, "c2d": 1}.get(tag)
            if tag == "s2d" and body[:1] == b"\xfe":
                sel = 2
            if sel is None or not body:
                continue
            if tag == "s2d" and body[:1] not in (b"\x0a", b"\xfe"):
                continue
            if tag == "c2d" and len(body) < 32:
                continue
            h = hashlib.sha1(body).hexdigest()[:8]
            if h in seen:
                continue
            seen.add(h)
            put("mysqlproto", "%s-%d-%s.bin" % (name, sel, h), bytes([sel]) + body)
    print("mysql %-22s %d events, plain %d bytes, raw %d bytes"
          % (name, len(events), len(plain), len(raw)))


# ---- crl: real CRLs -------------------------------------------------------------

def step_crl(tmp):
    """ssl-ca PEM SEP one ssl-crl file (fuzz_crl.c), from openssl ca."""
    p = PKI(os.path.join(tmp, "pki-crl"))

    def ca(*args, who="ca"):
        st = os.path.join(p.dir, ".state", who)
        return openssl("ca", "-batch", "-config", os.path.join(st, "ca.cnf"),
                       "-cert", p.path(who), "-keyfile", p.key(who), *args)

    def crl(name, *args, who="ca"):
        out = os.path.join(tmp, name)
        ca("-gencrl", "-out", out, *args, who=who)
        return read(out)

    cas = read(p.path("ca"))
    put("crl", "empty.bin", cas + SEP + crl("empty.pem", "-crldays", "30"))
    p.leaf("r1", "r1")
    p.leaf("r2", "r2")
    ca("-revoke", p.path("r1"), "-crl_reason", "keyCompromise")
    ca("-revoke", p.path("r2"), "-crl_reason", "superseded")
    two = crl("two.pem", "-crldays", "30")
    put("crl", "revoked-two.bin", cas + SEP + two)
    put("crl", "revoked-two-der.bin", cas + SEP + openssl("crl", "-outform", "DER", inp=two))
    put("crl", "expired.bin", cas + SEP + crl("old.pem", "-crl_lastupdate", "20200101000000Z",
                                              "-crl_nextupdate", "20200201000000Z"))
    other = crl("other.pem", "-crldays", "30", who="ca2")
    put("crl", "other-ca.bin", cas + SEP + other)
    put("crl", "two-cas.bin", cas + read(p.path("ca2")) + SEP + two + other)
    put("crl", "half-written.bin", cas + SEP + two[:len(two) // 2])


def main():
    steps = sys.argv[1:] or ["pki", "static", "hello", "mysql", "crl"]
    tmp = tempfile.mkdtemp(prefix="dmtls-mkcorpus-")
    try:
        for s in steps:
            {"pki": step_pki, "static": step_static, "hello": step_hello,
             "mysql": step_mysql, "crl": step_crl}[s](tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
