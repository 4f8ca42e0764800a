"""The docker-compose sidecar pattern, running (issue 12, DESIGN.md section
9): the stack of compose/docker-compose.yml, three etcd members standing in
for dm-masters and a client pod, every one a holder container owning the
network namespace, the plaintext process and its dmtls sidecar inside it.
Built here from local images only: dmtls:test (docker/Dockerfile, the
image test_image.py builds: an unchanged tree is a full layer-cache hit)
and dmtls-etcd:test (compose/etcd.Dockerfile, Debian's etcd-server), on
the Debian base images dockerenv.py makes.

Checked, in this order (one stack for the module):
- the cluster becomes healthy; a key written through one member is read
  through the others;
- a sidecar given a CN=other certificate (renamed into the certs volume) is
  refused by its peers, with the denial in their logs, and comes back when
  its own is renamed back, with no restart;
- a certificate rotated in the volume is what new connections present
  (`dmtls probe` sees its SAN), with no restart;
- restarting a member's etcd leaves its sidecar running and serving, and
  restarting the sidecar leaves etcd running (the holder owns the
  namespace);
- a member's pod recreated at a different address (its old address handed
  to another container first, and the change asserted) is followed by its
  peers through fresh name resolution, with no reload: needs per-connection
  name resolution (DESIGN 7), skipped with the reason when the image's dmtls
  resolves target names once at load;
- every TCP stream tcpdump saw on the compose network's bridge, from the
  first SYN on, is TLS, and no key or value written appears in it; a
  plaintext connection made on purpose at the end is caught by the same
  check (so the check can fail).

Run by `make check-compose` as root (it installs docker.io, docker-compose
and tcpdump when missing and starts dockerd when it is not running);
DMTLS_COMPOSE_IMAGE=IMAGE tests that dmtls image as it is instead of
building dmtls:test from this tree.
Container logs go to compose-containers.out, timings to compose-times.out.
"""

import json
import os
import re
import subprocess
import time
import uuid

import pytest

import dockerenv
import tlscapture
from conftest import (REPO, apt_install, out_path, report,
                      wait_for)
from dockerenv import docker

HERE = os.path.dirname(os.path.abspath(__file__))
STACK = os.path.join(HERE, "compose")
COMPOSE_FILE = os.path.join(STACK, "docker-compose.yml")
# $DMTLS_COMPOSE_IMAGE: a dmtls image to test as it is, not built here.
DMTLS_IMAGE = os.environ.get("DMTLS_COMPOSE_IMAGE") or "dmtls:test"
ETCD_IMAGE = "dmtls-etcd:test"
MEMBERS = (1, 2, 3)
TIMES = []


def timed(what, t0):
    TIMES.append("%s: %.1fs" % (what, time.monotonic() - t0))


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(docker_daemon):
    apt_install("docker-compose", "tcpdump")
    return docker_daemon


@pytest.fixture(scope="module")
def images(daemon):
    t0 = time.monotonic()
    dockerenv.base_images()
    if not os.environ.get("DMTLS_COMPOSE_IMAGE"):
        dockerenv.build_image(REPO, DMTLS_IMAGE, out_path("compose-build-dmtls.out"))
    dockerenv.build(STACK, os.path.join(STACK, "etcd.Dockerfile"), ETCD_IMAGE,
                    out_path("compose-build-etcd.out"))
    timed("base images and image builds", t0)
    return DMTLS_IMAGE, ETCD_IMAGE


def free_subnet():
    """A 10.213.N.0/24 that no Docker network uses."""
    used = set()
    for nid in docker("network", "ls", "-q").stdout.split():
        out = docker("network", "inspect", "-f",
                     "{{range .IPAM.Config}}{{.Subnet}} {{end}}", nid).stdout
        used.update(out.split())
    for n in range(16, 250):
        s = "10.213.%d.0/24" % n
        if s not in used:
            return s
    raise AssertionError("no free 10.213.N.0/24 subnet for the compose network")


class Stack:
    """docker-compose -p PROJECT on compose/docker-compose.yml."""

    def __init__(self, tmp):
        self.project = "dmtlscmp" + uuid.uuid4().hex[:8]
        self.env = dict(os.environ, DMTLS_IMAGE=DMTLS_IMAGE, ETCD_IMAGE=ETCD_IMAGE,
                        SUBNET=free_subnet())
        self.net = self.project + "_default"
        self.pcap = os.path.join(str(tmp), "compose.pcap")
        self.tcpdump = None
        self.extra = []  # containers the tests started themselves
        self.tokens = []  # keys and values written: never on the wire
        self.ids = {}  # service: container id (docker-compose is slow to ask)

    def compose(self, *args, timeout=300, check=True):
        r = subprocess.run(["docker-compose", "-f", COMPOSE_FILE, "-p", self.project] +
                           list(args), capture_output=True, text=True, timeout=timeout,
                           env=self.env)
        if check and r.returncode != 0:
            raise AssertionError("docker-compose %s: exit %d\n%s%s" % (
                " ".join(args), r.returncode, r.stdout[-4000:], r.stderr[-4000:]))
        return r

    def container(self, service):
        if service not in self.ids:
            cid = self.compose("ps", "-q", service).stdout.strip()
            assert cid, "service %s has no container" % service
            self.ids[service] = cid
        return self.ids[service]

    def forget(self, *services):
        """After docker-compose rm or up recreated them."""
        for s in services:
            self.ids.pop(s, None)

    def inspect(self, service):
        return json.loads(docker("inspect", self.container(service)).stdout)[0]

    def address(self, service):
        return self.inspect(service)["NetworkSettings"]["Networks"][self.net]["IPAddress"]

    def logs(self, service):
        """The container's stderr (dmtls logs there)."""
        r = docker("logs", self.container(service))
        return r.stderr

    def exec(self, service, *argv, timeout=60, check=True):
        return docker("exec", self.container(service), *argv, timeout=timeout, check=check)

    def ctl(self, members, *args, check=True):
        """etcdctl in the client pod, through its sidecar's routes to the
        member (a number) or members (a tuple)."""
        if isinstance(members, int):
            members = (members,)
        return self.exec("client-ctl", "etcdctl", "--dial-timeout=5s",
                         "--command-timeout=10s", "--endpoints=" + ",".join(
                             "http://127.0.1.%d:12379" % m for m in members), *args,
                         check=check)

    def certs(self, script):
        """A shell script on the certs volume at /certs, as the certs
        service runs (root with only CAP_CHOWN; docker run, as docker-compose
        run takes seconds more)."""
        return docker("run", "--rm", "--network", "none", "--user", "0:0",
                      "--cap-drop", "ALL", "--cap-add", "CHOWN",
                      "--security-opt", "no-new-privileges", "--read-only",
                      "-v", "%s_certs:/certs" % self.project, "--entrypoint", "/bin/sh",
                      DMTLS_IMAGE, "-c", "set -eu; cd /certs; " + script, timeout=120)


def bridge(net):
    nid = docker("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    opt = docker("network", "inspect", "-f",
                 '{{index .Options "com.docker.network.bridge.name"}}', net).stdout.strip()
    return opt if opt and opt != "<no value>" else "br-" + nid[:12]


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("compose"))
    t0 = time.monotonic()
    tcpdump_err = os.path.join(os.path.dirname(st.pcap), "tcpdump.err")
    try:
        # The network first (with one holder, which makes no connection),
        # so that tcpdump listens on the bridge before the first connection.
        # (Not `up --no-start`: docker-compose 1.29 then waits forever for
        # the certs service to complete.)
        st.compose("up", "-d", "--no-deps", "client")
        with open(tcpdump_err, "w") as err:
            st.tcpdump = subprocess.Popen(
                ["tcpdump", "-i", bridge(st.net), "-U", "-nn", "-s", "0", "-w", st.pcap,
                 "tcp"], stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)

        def listening():
            assert st.tcpdump.poll() is None, open(tcpdump_err).read()
            return "listening on" in open(tcpdump_err).read()
        wait_for(listening, 30, "tcpdump listening on the bridge")
        st.compose("up", "-d")
        timed("stack up", t0)
        yield st
    finally:
        with open(out_path("compose-containers.out"), "w") as f:
            r = st.compose("logs", "--no-color", "-t", check=False, timeout=120)
            f.write(r.stdout + r.stderr)
        if st.tcpdump is not None and st.tcpdump.poll() is None:
            st.tcpdump.terminate()
            st.tcpdump.wait(30)
        for c in st.extra:
            docker("rm", "-f", c, check=False)
        st.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=300)
        TIMES.append("module total: %.1fs" % (time.monotonic() - t0))
        report("compose-times", "\n".join(TIMES))


# -- helpers -------------------------------------------------------------------

def healthy(st, members=MEMBERS):
    """Every member answers etcdctl endpoint health through the client pod."""
    def ok():
        r = st.ctl(members, "endpoint", "health", check=False)
        # etcdctl writes the verdicts on stderr; it exits 1 if one is not
        return r.returncode == 0 and \
            (r.stdout + r.stderr).count("is healthy") == len(members)
    return ok


def wait_healthy(st, timeout=90, members=MEMBERS):
    wait_for(healthy(st, members), timeout, "etcd members %s healthy" % (members,),
             interval=1)


def round_trip(st, via, to, settle=0):
    """Put a fresh key through member via, read it back through member to.
    settle: seconds to keep retrying a put that etcd answers with "request
    timed out" (raft still settling after a member came back), bounded."""
    key, val = "k-" + uuid.uuid4().hex[:10], "v-" + uuid.uuid4().hex[:10]
    st.tokens += [key, val]
    if settle:
        def put():
            r = st.ctl(via, "put", key, val, check=False)
            assert r.returncode == 0 or "request timed out" in r.stderr, r.stderr
            return r.returncode == 0
        wait_for(put, settle, "a put through member %d" % via, interval=1)
    else:
        st.ctl(via, "put", key, val)
    got = st.ctl(to, "get", "--print-value-only", key).stdout.strip()
    assert got == val, (key, val, got)


def started(st, service):
    s = st.inspect(service)
    return s["State"]["StartedAt"], s["RestartCount"]


def rename_into_place(st, src, name):
    """Copy src.pem/src-key.pem of the volume beside NAME's and rename them
    over NAME.pem and NAME-key.pem (key first), as a rotation does."""
    st.certs("for f in '' -key; do cp -p %s$f.pem .%s$f.pem.new; done; "
             "mv .%s-key.pem.new %s-key.pem; mv .%s.pem.new %s.pem"
             % (src, name, name, name, name, name))


def logged(st, service, since, rx):
    return [l for l in st.logs(service)[since:].splitlines() if re.search(rx, l)]


def wait_logged(st, service, since, rx, timeout=60):
    """The lines of service's log after offset since that match rx, once
    there is one (a connection's line comes when both ends have closed)."""
    return wait_for(lambda: logged(st, service, since, rx), timeout,
                    "%s logging %s" % (service, rx), interval=0.5)


def image_resolves_per_connection():
    """Whether the image's dmtls resolves target names per connection
    (DESIGN 7): `dmtls check` of a config whose target does not resolve
    then warns and exits 0; a dmtls that resolves at load refuses it."""
    conf = ('security = { ssl-ca = "/c/ca.pem"; ssl-cert = "/c/dm.pem"; '
            'ssl-key = "/c/dm-key.pem"; cert-allowed-cn = ["dm"]; };\n'
            'routes = ( { name = "r"; kind = "client"; listen = "127.0.0.1:1"; '
            'target = "no-such-name.invalid:1"; } );\n')
    r = docker("run", "--rm", "-i", "--network", "none", "--entrypoint", "/bin/sh", DMTLS_IMAGE,
               "-c", "cd /tmp && dmtls certs init /tmp/c >/dev/null && "
               "sed 's|/c/|/tmp/c/|g' > t.conf && dmtls check -c t.conf",
               input=conf, check=False, timeout=120)
    out = r.stdout + r.stderr
    if r.returncode == 0:
        return True, out
    assert "cannot resolve" in out, "dmtls check failed for another reason:\n" + out
    return False, out


# -- tests -----------------------------------------------------------------------

def test_cluster_healthy_and_key_read_through_another_member(stack):
    t0 = time.monotonic()
    wait_healthy(stack)
    round_trip(stack, 1, 2)
    round_trip(stack, 3, 1)
    # The sidecars carried it: the client pod's routes saw the members'
    # certificates, the members' peer routes each other's.
    wait_logged(stack, "client-tls", 0, r"event=close route=to-etcd-1 .*cn=etcd-1 ")
    # Raft streams last; etcd's short peer requests (version checks) end
    # every few seconds.
    wait_logged(stack, "etcd-2-tls", 0, r"event=close route=to-etcd-3-peer .*cn=etcd-3 ")
    for m in MEMBERS:
        h = stack.inspect("etcd-%d-tls" % m)["State"]
        assert h["Running"], h
    timed("cluster healthy", t0)


def test_sidecar_with_cn_other_refused_by_peers(stack):
    t0 = time.monotonic()
    wait_healthy(stack)
    before = started(stack, "etcd-3-tls")
    marks = {s: len(stack.logs(s)) for s in ("etcd-1-tls", "etcd-2-tls")}
    stack.certs("dmtls certs issue /certs --name other --cn other --dns etcd-3 "
                "--group dmtls >/dev/null; cp -p etcd-3.pem etcd-3.pem.orig; "
                "cp -p etcd-3-key.pem etcd-3-key.pem.orig")
    rename_into_place(stack, "other", "etcd-3")
    # Both peers refuse it, on their server route (etcd-3 dialling them)
    # and on their client route to etcd-3 (etcd-3 answering).
    for s in marks:
        wait_for(lambda: logged(stack, s, marks[s], r"event=denied route=peer .*cn=other "),
                 60, "%s denying etcd-3's CN=other on its peer route" % s, interval=1)
        wait_for(lambda: logged(stack, s, marks[s],
                                r"event=denied route=to-etcd-3-peer .*cn=other "),
                 60, "%s denying etcd-3's CN=other on to-etcd-3-peer" % s, interval=1)
    line = logged(stack, "etcd-1-tls", marks["etcd-1-tls"], r"event=denied .*cn=other ")[0]
    assert "level=warn" in line and "reason=" in line, line
    # Its own certificate back: accepted again, nothing restarted.
    marks = {s: len(stack.logs(s)) for s in marks}
    stack.certs("mv etcd-3-key.pem.orig etcd-3-key.pem; mv etcd-3.pem.orig etcd-3.pem")
    for s in marks:
        wait_for(lambda: logged(stack, s, marks[s], r"event=close route=peer .*cn=etcd-3 "),
                 60, "%s accepting etcd-3 again" % s, interval=1)
    wait_healthy(stack)
    round_trip(stack, 3, 1)
    assert started(stack, "etcd-3-tls") == before
    timed("CN=other refused", t0)


def test_rotated_certificate_used_by_new_connections_without_restart(stack):
    t0 = time.monotonic()
    before = started(stack, "etcd-2-tls")
    tag = "rotated-" + uuid.uuid4().hex[:8]
    stack.certs("dmtls certs issue /certs --name next --cn etcd-2 --dns etcd-2 --dns %s "
                "--group dmtls >/dev/null" % tag)
    rename_into_place(stack, "next", "etcd-2")

    def probe():
        r = stack.exec("client-tls", "dmtls", "probe", "etcd-2:2379",
                       "--ssl-ca", "/etc/dmtls/certs/ca.pem",
                       "--ssl-cert", "/etc/dmtls/certs/client.pem",
                       "--ssl-key", "/etc/dmtls/certs/client-key.pem",
                       "--server-name", "etcd-2", "--cert-allowed-cn", "etcd-2",
                       check=False)
        return tag in r.stdout and "result: PASS" in r.stdout and r.stdout
    out = wait_for(probe, 30, "etcd-2's sidecar presenting the rotated certificate",
                   interval=1)
    assert "CN=etcd-2" in out or "cn=etcd-2" in out.lower(), out
    mark = len(stack.logs("client-tls"))
    round_trip(stack, 2, 3)
    wait_logged(stack, "client-tls", mark, r"event=close route=to-etcd-2 .*cn=etcd-2 ")
    assert started(stack, "etcd-2-tls") == before
    timed("rotation", t0)


def test_member_restart_keeps_sidecar_and_sidecar_restart_keeps_member(stack):
    t0 = time.monotonic()
    wait_healthy(stack)
    tls, etcd = started(stack, "etcd-2-tls"), started(stack, "etcd-2-server")
    holder = started(stack, "etcd-2")
    stack.compose("restart", "-t", "10", "etcd-2-server")
    assert started(stack, "etcd-2-server") != etcd
    wait_healthy(stack)
    round_trip(stack, 2, 1)
    round_trip(stack, 1, 2)
    assert started(stack, "etcd-2-tls") == tls, "the sidecar was restarted too"
    assert stack.inspect("etcd-2-tls")["State"]["Running"]
    # The other way round: the namespace belongs to neither of them.
    etcd = started(stack, "etcd-2-server")
    stack.compose("restart", "-t", "10", "etcd-2-tls")
    wait_healthy(stack)
    round_trip(stack, 2, 3)
    assert started(stack, "etcd-2-server") == etcd, "etcd was restarted too"
    assert started(stack, "etcd-2") == holder
    timed("restarts", t0)


def test_member_recreated_at_new_address_followed_by_peers(stack):
    t0 = time.monotonic()
    ok, why = image_resolves_per_connection()
    if not ok:
        pytest.skip("needs per-connection name resolution (DESIGN 7), which the image's "
                    "dmtls lacks: it resolves target names once at load (`dmtls check` "
                    "refuses a target that does not resolve: %s)"
                    % why.strip().splitlines()[-1])
    wait_healthy(stack)
    peers = ("etcd-1-tls", "etcd-3-tls")
    before = {s: started(stack, s) for s in peers}
    marks = {s: len(stack.logs(s)) for s in peers}
    old = stack.address("etcd-2")
    stack.compose("rm", "-s", "-f", "etcd-2-tls", "etcd-2-server", "etcd-2")
    stack.forget("etcd-2-tls", "etcd-2-server", "etcd-2")
    # Another container takes the old address, so Docker cannot hand it
    # back; it listens on nothing, so a peer still dialling it is refused.
    squat = "%s-squatter" % stack.project
    stack.extra.append(squat)
    docker("run", "-d", "--name", squat, "--network", stack.net, "--ip", old,
           "--read-only", "--cap-drop", "ALL", "--entrypoint", "/bin/sh", DMTLS_IMAGE,
           "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done")
    stack.compose("up", "-d", "--no-deps", "etcd-2", "etcd-2-server", "etcd-2-tls")
    new = stack.address("etcd-2")
    assert new and new != old, (old, new)
    # The peers reach the new etcd-2 through their unchanged routes: etcd's
    # peer /version on 127.0.1.2:12380 in each peer's own namespace.
    for m in (1, 3):
        def reach():
            r = stack.exec("etcd-%d-server" % m, "curl", "-sS", "--max-time", "5",
                           "http://127.0.1.2:12380/version", check=False)
            return r.returncode == 0 and "etcdserver" in r.stdout
        wait_for(reach, 60, "etcd-%d reaching etcd-2 at its new address" % m, interval=1)
    wait_healthy(stack)
    round_trip(stack, 1, 2, settle=60)
    round_trip(stack, 2, 3, settle=60)
    for s in peers:
        wait_logged(stack, s, marks[s], r"event=close route=to-etcd-2-peer .*cn=etcd-2 ")
        assert not logged(stack, s, marks[s], r"event=reload"), "a peer reloaded"
        assert started(stack, s) == before[s], "%s was restarted" % s
    timed("recreate at a new address", t0)


def test_every_tcp_stream_on_the_network_is_tls(stack):
    """Last, so that the capture holds everything the tests above did."""
    t0 = time.monotonic()
    round_trip(stack, 1, 3)
    streams, blob = tlscapture.judge(stack.pcap)
    bad = [s for s in streams if s["why"]]
    assert not bad, "streams on the compose network that are not TLS:\n" + "\n".join(
        "%s:%d -> %s:%d: %s" % (s["key"] + (s["why"],)) for s in bad[:20])
    ports = {s["key"][3] for s in streams} | {s["key"][1] for s in streams}
    assert {2379, 2380} <= ports, ports
    judged = sum(s["bytes"] for s in streams)
    assert len(streams) >= 20 and judged > 20000, (len(streams), judged)
    leaked = [t for t in stack.tokens if t.encode() in blob]
    assert not leaked, "keys or values written in clear on the network: %s" % leaked
    TIMES.append("capture: %d streams, %d bytes judged TLS" % (len(streams), judged))
    # The check can fail: a plaintext request from the client pod to a
    # member's sidecar (which refuses it) is caught.
    marker = "plaintext-" + uuid.uuid4().hex[:8]
    stack.exec("client-ctl", "curl", "-s", "--max-time", "5",
               "http://etcd-1:2379/" + marker, check=False)
    client = stack.address("client")

    def caught():
        streams, blob = tlscapture.judge(stack.pcap)
        return [s for s in streams if s["why"] and s["key"][0] == client and
                s["key"][3] == 2379] and marker.encode() in blob
    wait_for(caught, 30, "the check catching a plaintext request", interval=1)
    timed("capture check", t0)
