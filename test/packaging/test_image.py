"""The container image (DESIGN.md section 9, docker/Dockerfile): built from
the repository root on local Debian base images (dockerenv.py), then a
server route and a client route as two containers on a user-defined
network, in front of a plaintext HTTP backend on the host (bound to that
network's gateway address; published ports are on 127.0.0.1 only):

    curl -> 127.0.0.1:P -> [client route] -mTLS-> [server route] -> backend

Checked: curl gets the backend's answer; `docker inspect` reports the
containers healthy through the image's HEALTHCHECK (`dmtls healthcheck`);
the process runs as uid/gid 10001; a certificate rotated in the mounted
folder on the host takes effect on the next connection with no restart; a
broken config makes the container exit 2 with the FILE:LINE message in
`docker logs`.  The image size and the size of the layers above the base go
to image-size.out.
"""

import http.server
import json
import os
import shutil
import threading
import time
import uuid

import pytest

import dockerenv
from conftest import REPO, out_path, report, sh, wait_for
from dockerenv import docker
from pki import PKI

TAG = "dmtls:test"
STATUS = "127.0.0.1:9261"
# The server container's name on the network.  Not a single label: wolfSSL
# 5.9.2's wolfSSL_check_domain_name() refuses names such as "srv" or
# "dm-master", so a client route with --server-name srv cannot connect.
SRV = "srv.dmtls.test"


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(docker_daemon):
    t0 = time.monotonic()
    made = dockerenv.base_images()
    t1 = time.monotonic()
    log = out_path("docker-build.out")
    dockerenv.build_image(REPO, TAG, log)
    t2 = time.monotonic()
    size = int(docker("image", "inspect", "-f", "{{.Size}}", TAG).stdout)
    base = int(docker("image", "inspect", "-f", "{{.Size}}", "debian:bookworm-slim").stdout)
    hist = docker("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}",
                  TAG).stdout
    report("image-size", "\n".join([
        "base images made: %s (%.0fs)" % (", ".join(made) or "none, cached", t1 - t0),
        "docker build: %.0fs" % (t2 - t1),
        "%s: %.1f MB" % (TAG, size / 1e6),
        "debian:bookworm-slim (local debootstrap base): %.1f MB" % (base / 1e6),
        "layers added on top of the base: %.2f MB" % ((size - base) / 1e6),
        "", "docker history %s:" % TAG,
        "\n".join(l[:160] for l in hist.splitlines())]))
    return TAG


class Backend(http.server.ThreadingHTTPServer):
    """A plaintext HTTP server on the host that answers every GET with a
    token the test made."""

    daemon_threads = True

    def __init__(self, host):
        self.token = "backend-" + uuid.uuid4().hex[:12]
        self.hits = 0
        token = self.token
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = (token + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__((host, 0), Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


def share(path):
    """Files the container's user (gid 10001) may read, and nobody else."""
    for d, dirs, files in os.walk(path):
        os.chown(d, 0, 10001)
        os.chmod(d, 0o750)
        for n in files:
            os.chown(os.path.join(d, n), 0, 10001)
            os.chmod(os.path.join(d, n), 0o640)


def place(src, dst):
    """Rotate: copy src beside dst, then rename it into place."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.chown(tmp, 0, 10001)
    os.chmod(tmp, 0o640)
    os.rename(tmp, dst)


def route_conf(kind, name, listen, target, allowed, server_name=None):
    lines = ['log-level = "info";',
             'status = "%s";' % STATUS,
             'shutdown-timeout = "2s";',
             "security = {",
             '  ssl-ca = "/etc/dmtls/ca.pem";',
             '  ssl-cert = "/etc/dmtls/dm.pem";',
             '  ssl-key = "/etc/dmtls/dm-key.pem";',
             "  cert-allowed-cn = [%s];" % ", ".join('"%s"' % a for a in allowed)]
    if server_name:
        lines.append('  server-name = "%s";' % server_name)
    lines += ["};", "routes = (",
              '  { name = "%s"; kind = "%s"; listen = "%s"; target = "%s"; }'
              % (name, kind, listen, target), ");", ""]
    return "\n".join(lines)


def run_container(name, folder, net, *extra):
    """docker run -d the image with folder on /etc/dmtls (read-only), a
    read-only root, no capabilities, a 2 s health interval."""
    return docker("run", "-d", "--name", name, "--network", net,
                  "--read-only", "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges",
                  "--health-interval", "2s",
                  "-v", "%s:/etc/dmtls:ro" % folder, *extra, TAG).stdout.strip()


def inspect(name):
    return json.loads(docker("inspect", name).stdout)[0]


def curl(port):
    return sh(["curl", "-sS", "--max-time", "15", "http://127.0.0.1:%d/" % port],
              check=False, timeout=30)


@pytest.fixture(scope="module")
def cluster(image, tmp_path_factory):
    """The two routes running; dict with names, folders, the backend, the
    client's published port and the PKI."""
    apt = shutil.which("curl")
    assert apt, "curl is missing (apt-get install curl)"
    tmp = tmp_path_factory.mktemp("cluster")
    os.chmod(str(tmp), 0o755)
    run_id = uuid.uuid4().hex[:8]
    net = "dmtls-test-" + run_id
    srv, cli = "dmtls-srv-" + run_id, "dmtls-cli-" + run_id
    pki = PKI(str(tmp / "pki"))
    pki.leaf("server", cn="dm-server", sans=("DNS:" + SRV,))
    pki.leaf("client", cn="dm-client", sans=())
    pki.leaf("rotated", cn="dm-rotated", sans=("DNS:" + SRV,))
    docker("network", "create", net)
    backend = None
    try:
        gw = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
                    net).stdout.strip()
        assert gw, "network %s has no gateway address" % net
        backend = Backend(gw)
        folders = {}
        for who, leaf, conf in (
                ("srv", "server", route_conf("server", "dm-api", "0.0.0.0:8443",
                                             "%s:%d" % (gw, backend.port), ["dm-client"])),
                ("cli", "client", route_conf("client", "to-api", "0.0.0.0:8080", SRV + ":8443",
                                             ["dm-server", "dm-rotated"], server_name=SRV))):
            d = str(tmp / who)
            os.makedirs(d)
            shutil.copyfile(pki.ca, os.path.join(d, "ca.pem"))
            shutil.copyfile(pki.path(leaf), os.path.join(d, "dm.pem"))
            shutil.copyfile(pki.key(leaf), os.path.join(d, "dm-key.pem"))
            with open(os.path.join(d, "dmtls.conf"), "w") as f:
                f.write(conf)
            share(d)
            folders[who] = d
        run_container(srv, folders["srv"], net, "--network-alias", SRV)
        run_container(cli, folders["cli"], net, "-p", "127.0.0.1::8080")
        port = int(docker("port", cli, "8080/tcp").stdout.split()[0].rsplit(":", 1)[1])
        yield {"srv": srv, "cli": cli, "net": net, "folders": folders, "pki": pki,
               "backend": backend, "port": port, "tmp": tmp, "run_id": run_id}
    finally:
        with open(out_path("image-containers.out"), "w") as f:
            for c in (srv, cli):
                logs = docker("logs", c, check=False)
                f.write("==== docker logs %s\n%s%s\n" % (c, logs.stdout, logs.stderr))
                docker("rm", "-f", c, check=False)
        docker("network", "rm", net, check=False)
        if backend:
            backend.close()


# -- tests -----------------------------------------------------------------------

def test_image_config(image):
    """ENTRYPOINT dmtls, CMD run -c /etc/dmtls/dmtls.conf, a non-root
    user, a HEALTHCHECK through dmtls healthcheck."""
    cfg = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["dmtls"], cfg["Entrypoint"]
    assert cfg["Cmd"] == ["run", "-c", "/etc/dmtls/dmtls.conf"], cfg["Cmd"]
    assert cfg["User"] and cfg["User"].split(":")[0] not in ("0", "root"), cfg["User"]
    assert cfg["Healthcheck"]["Test"][:3] == ["CMD", "dmtls", "healthcheck"], cfg["Healthcheck"]


def test_image_runtime_has_no_build_tools(image):
    """The runtime stage carries the runtime libraries, not the compiler,
    the -dev packages or apt's package lists."""
    r = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
               "ls /usr/bin/gcc /usr/include/event2 /var/lib/apt/lists/*Packages* "
               "2>/dev/null; dpkg-query -W -f='${Package}\\n'", timeout=120)
    pkgs = set(r.stdout.split())
    assert not any(l.startswith("/") for l in r.stdout.splitlines()), r.stdout
    assert {"libevent-2.1-7", "libevent-pthreads-2.1-7", "libconfig9"} <= pkgs, pkgs
    assert not [p for p in pkgs if p.endswith("-dev") or p in ("gcc", "make")], pkgs


def test_image_version_bundled_wolfssl(image):
    """dmtls version in the image: the bundled assembly wolfSSL."""
    r = docker("run", "--rm", image, "version", timeout=120)
    assert "bundled assembly build" in r.stdout, r.stdout


def test_curl_through_client_and_server_containers(cluster):
    """curl -> client route -> mTLS -> server route -> backend."""
    def ok():
        r = curl(cluster["port"])
        return r.returncode == 0 and cluster["backend"].token in r.stdout
    wait_for(ok, 60, "an answer from the backend through both containers", interval=1)
    logs = docker("logs", cluster["cli"]).stderr
    assert "cn=dm-server" in logs, logs


def test_containers_report_healthy(cluster):
    """The image's HEALTHCHECK (`dmtls healthcheck`) turns both healthy."""
    for c in (cluster["srv"], cluster["cli"]):
        def healthy():
            h = inspect(c)["State"].get("Health") or {}
            return h.get("Status") == "healthy"
        try:
            wait_for(healthy, 90, "%s healthy" % c, interval=1)
        except AssertionError:
            raise AssertionError("%s: %s" % (c, json.dumps(inspect(c)["State"], indent=1)))
        h = inspect(c)["State"]["Health"]
        assert h["Log"][-1]["ExitCode"] == 0 and "ok" in h["Log"][-1]["Output"], h


def test_process_runs_as_non_root(cluster):
    """uid and gid 10001 (real, effective, saved, fs), no capabilities."""
    pid = inspect(cluster["srv"])["State"]["Pid"]
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    assert st["Uid"].split() == ["10001"] * 4, st["Uid"]
    assert st["Gid"].split() == ["10001"] * 4, st["Gid"]
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st["CapEff"]
    with open("/proc/%d/cmdline" % pid) as f:
        assert f.read().split("\0")[:2] == ["dmtls", "run"]


def test_rotated_certificate_takes_effect_without_restart(cluster):
    """Renaming a new certificate and key into the server's mounted folder
    changes what the next connection presents (the client route logs the
    server's new CN) with no restart of the container."""
    srv = cluster["srv"]
    started = inspect(srv)["State"]["StartedAt"]
    pki, d = cluster["pki"], cluster["folders"]["srv"]
    assert curl(cluster["port"]).returncode == 0
    mark = len(docker("logs", cluster["cli"]).stderr)
    place(pki.key("rotated"), os.path.join(d, "dm-key.pem"))
    place(pki.path("rotated"), os.path.join(d, "dm.pem"))

    def rotated():
        r = curl(cluster["port"])
        logs = docker("logs", cluster["cli"]).stderr[mark:]
        return r.returncode == 0 and cluster["backend"].token in r.stdout and \
            "cn=dm-rotated" in logs
    wait_for(rotated, 30, "a connection presenting the rotated certificate", interval=1)
    st = inspect(srv)["State"]
    assert st["Running"] and st["StartedAt"] == started, st
    assert inspect(srv)["RestartCount"] == 0


def test_broken_config_exits_2_with_file_line(image, docker_daemon, tmp_path):
    """A config with an unknown key: the container exits with status 2 and
    `docker logs` has the FILE:LINE message."""
    d = str(tmp_path / "bad")
    os.makedirs(d)
    with open(os.path.join(d, "dmtls.conf"), "w") as f:
        f.write('log-level = "info";\nstatus = "%s";\nno-such-key = 1;\nroutes = ();\n'
                % STATUS)
    share(d)
    name = "dmtls-bad-" + uuid.uuid4().hex[:8]
    try:
        docker("run", "-d", "--name", name, "-v", "%s:/etc/dmtls:ro" % d, image)
        code = int(docker("wait", name, timeout=120).stdout.strip())
        logs = docker("logs", name)
        out = logs.stdout + logs.stderr
        assert code == 2, (code, out)
        assert "/etc/dmtls/dmtls.conf:3:" in out, out
    finally:
        docker("rm", "-f", name, check=False)
