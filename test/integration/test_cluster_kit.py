"""The one-host cluster kit, test/demo/cluster (`make demo-cluster`).

The etcd path runs end to end: 3 etcd members in plaintext on loopback
aliases, 4 dmtls sidecars, etcdctl through client routes.  The kit must
show (a) a healthy cluster and a key crossing it, (b) TLS on the member
ports (plaintext refused, metrics moved), (c) CN=other refused with the log
line, and stop everything it started, also on Ctrl-C.  Each run uses its own
127.X.0.0/16 block (DMTLS_KIT_NET), so two runs on one machine do not meet.
"""

import os
import random
import re
import signal
import subprocess
import time

from conftest import REPO

KIT = os.path.join(REPO, "test", "demo", "cluster")
BOUND = 240          # seconds for a whole run on a loaded 2-core machine


def kit_env(dmtls_bin):
    net = "127.%d" % random.randint(100, 250)
    env = dict(os.environ, DMTLS_BIN=dmtls_bin, DMTLS_KIT_NET=net)
    env.pop("DM_BIN_DIR", None)
    env.pop("KEEP", None)
    return env, net


def start_kit(env):
    # A terminal's Ctrl-C reaches the whole foreground process group; give
    # the kit its own, with SIGINT at its default even if ours is ignored.
    return subprocess.Popen([KIT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def leftovers(work, net):
    """Processes still running that the kit started (named by their work
    folder or their addresses), and listeners still bound on its block."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if work in cmd or (net + ".") in cmd:
            left.append("pid %s: %s" % (pid, cmd[:200]))
    a, b = (int(x) for x in net.split(".")[:2])
    suffix = "%02X%02X" % (b, a)       # /proc/net/tcp: little-endian address
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.split(":")[0].endswith(suffix):
                left.append("listener " + local)
    return left


def work_folder(out):
    m = re.search(r"work folder (/tmp/dmtls-cluster\.\S+)", out)
    assert m, out
    return m.group(1)


def wait_gone(work, net, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(work, net)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_cluster_kit_shows_a_healthy_cluster_tls_and_a_refused_cn(dmtls_bin):
    env, net = kit_env(dmtls_bin)
    p = start_kit(env)
    try:
        out, _ = p.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        raise AssertionError("the kit did not finish within %ds:\n%s" % (BOUND, out))
    assert p.returncode == 0, out
    work = work_folder(out)
    # (a)
    for n in (1, 2, 3):
        assert re.search(r"^   http://%s\.1\.%d:18261 is healthy" % (re.escape(net), n),
                         out, re.M), out
    assert re.search(r"get /dmtls-kit/greeting: written through m1 at \S+, read through m3",
                     out), out
    assert "PASS three members healthy, the key crossed the cluster" in out
    # (b)
    assert re.search(r"curl http://%s\.0\.11:8261/health \(plaintext\): refused" %
                     re.escape(net), out), out
    assert re.search(r"member 1's sidecar: ts=\S+ level=warn event=handshake_failed "
                     r"route=m1-client ", out), out
    assert re.search(r'with CN=dm over mutual TLS: \{"health":"true"\}', out), out
    assert re.search(r"\(member 1's peer port\): tls: TLSv1\.3 \S+ alpn=h2 result: PASS", out)
    m = re.search(r"to-m1-client in=(\d+) out=(\d+);", out)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out
    m = re.search(r"peer links open now\): m1-peer=(\d+) m2-peer=(\d+) m3-peer=(\d+)", out)
    assert m and all(int(x) > 0 for x in m.groups()), out
    # (c)
    assert re.search(r"etcdctl through a client route presenting CN=other .*: refused", out)
    assert re.search(r"member 1's sidecar: ts=\S+ level=warn event=denied route=m1-client "
                     r"peer=\S+ cn=other .*allowed=\"cn=dm\" .*reason=\"certificate identity "
                     r"not allowed \(CN other\)\"", out), out
    assert out.count("   PASS ") == 4 and "FAIL" not in out, out
    assert "for testing only" in out
    assert out.rstrip().endswith("kit: (a), (b) and (c) shown; stopping everything it started")
    # Everything stopped, the work folder removed.
    assert wait_gone(work, net) == []
    assert not os.path.exists(work)


def test_cluster_kit_stops_everything_on_ctrl_c(dmtls_bin):
    env, net = kit_env(dmtls_bin)
    p = start_kit(env)
    out = ""
    deadline = time.monotonic() + BOUND
    try:
        # Once the members run (the kit is waiting for the cluster).
        while "== (a)" not in out:
            line = p.stdout.readline()
            assert line and time.monotonic() < deadline, out + line
            out += line
        work = work_folder(out)
        assert leftovers(work, net), "nothing running before Ctrl-C?\n" + out
        os.killpg(p.pid, signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    out += rest
    assert p.returncode == 130, out
    assert "kit: interrupted; stopping everything it started" in out, out
    assert wait_gone(work, net) == [], out
    assert not os.path.exists(work), out
