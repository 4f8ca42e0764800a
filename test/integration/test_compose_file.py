"""docker/compose/, the DM cluster with dmtls sidecars (issue 12, DESIGN.md
section 9), checked without a Docker daemon: `docker-compose config`
(Debian's docker-compose 1.29, ./bootstrap installs it) accepts the file;
the pods are built as the file says (a holder owns each namespace, the DM
component and the sidecar join it, only Prometheus publishes a port, DM
images pinned, sidecars after the certs service, keys read-only); every
sidecar config passes `dmtls check` (on a test PKI, names pointed at
loopback); and the loopback aliases the DM files advertise are the ones the
sidecars listen on.  test/packaging/test_compose.py runs the same pattern
for real.
"""

import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from conftest import REPO, run

HERE = os.path.join(REPO, "docker", "compose")
FILE = os.path.join(HERE, "docker-compose.yml")
MASTERS = ("master-1", "master-2", "master-3")
WORKERS = ("worker-1", "worker-2")
PODS = MASTERS + WORKERS + ("admin",)


def compose_config():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose "
                    "(./bootstrap installs it)", pytrace=False)
    r = subprocess.run([exe, "-f", FILE, "config"], capture_output=True, text=True,
                       timeout=60, cwd=HERE, env=dict(os.environ, DMTLS_IMAGE="dmtls"))
    assert r.returncode == 0, "docker-compose config refused %s:\n%s%s" % (
        FILE, r.stdout, r.stderr)
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def config():
    return compose_config()


def test_docker_compose_config_accepts_the_dm_file(config):
    assert set(config["services"]) >= {"certs", "prometheus", "dmctl"}


def test_pods_holder_owns_the_namespace(config):
    svcs = config["services"]
    for pod in PODS:
        holder = svcs[pod]
        assert "network_mode" not in holder, pod
        assert "dm" in holder["networks"], pod
        assert holder["networks"]["monitoring"]["aliases"] == [pod + "-metrics"], pod
        assert holder["restart"] == "unless-stopped"
        joined = [n for n, s in svcs.items() if s.get("network_mode") == "service:" + pod]
        want = {pod + "-tls", pod + "-dm"} if pod != "admin" else {"admin-tls", "dmctl"}
        assert set(joined) == want, (pod, joined)
        tls = svcs[pod + "-tls"]
        assert tls["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        assert tls["read_only"] and tls["cap_drop"] == ["ALL"], tls
        # docker-compose config writes SOURCE:TARGET:MODE
        mounts = {v.split(":")[1]: v.split(":") for v in tls["volumes"]}
        assert mounts["/etc/dmtls/certs"][0] == "certs", mounts
        assert mounts["/etc/dmtls/certs"][2] == "ro", mounts
        assert mounts["/etc/dmtls/dmtls.conf"][2] == "ro", mounts
    published = [n for n, s in svcs.items() if s.get("ports")]
    assert published == ["prometheus"], published
    assert all(str(p).startswith("127.0.0.1:") for p in svcs["prometheus"]["ports"])
    assert set(svcs["prometheus"]["networks"]) == {"monitoring", "ui"}
    assert config["networks"]["monitoring"].get("internal") is True
    for n, s in svcs.items():
        if "pingcap/dm" in s.get("image", ""):
            assert re.fullmatch(r"pingcap/dm:v\d+\.\d+\.\d+", s["image"]), s["image"]
    certs = svcs["certs"]
    assert certs["user"] == "0:0" and certs["cap_add"] == ["CHOWN"], certs
    names = certs["entrypoint"][3:]
    assert set(names) == set(MASTERS + WORKERS + ("dmctl",)), names


def sidecar_dirs(tmp_path, dmtls_bin):
    """Each pod's /etc/dmtls as the file mounts it, in tmp_path/POD, on a
    test PKI made here, with the names Docker's DNS would resolve pointed
    at loopback (they do not resolve on this host)."""
    certs = tmp_path / "certs"
    r = run([dmtls_bin, "certs", "init", certs, "--cn", "unused"])
    assert r.returncode == 0, r.stderr
    for name in MASTERS + WORKERS + ("dmctl",):
        r = run([dmtls_bin, "certs", "issue", certs, "--name", name, "--cn", name,
                 "--dns", name])
        assert r.returncode == 0, r.stderr
    out = {}
    for pod in PODS:
        d = tmp_path / pod
        os.makedirs(d)
        with open(os.path.join(HERE, "dmtls", pod + ".conf")) as f:
            text = f.read()
        role = pod.split("-")[0]
        extra = os.path.join(HERE, "dmtls", role + ".d")
        if os.path.isdir(extra):
            shutil.copytree(extra, d / "conf.d")
        for p in [d / "dmtls.conf"] + sorted((d / "conf.d").glob("*.conf")
                                             if (d / "conf.d").is_dir() else []):
            t = text if p.name == "dmtls.conf" else p.read_text()
            t = t.replace("/etc/dmtls/certs/", "%s/" % certs)
            t = re.sub(r'status = "[a-z0-9-]+-metrics:', 'status = "127.0.0.1:', t)
            t = re.sub(r'target = "[a-z]+-\d:', 'target = "127.0.0.1:', t)
            p.write_text(t)
        out[pod] = d
    return out


def test_every_sidecar_config_passes_dmtls_check(tmp_path, dmtls_bin):
    counts = {}
    for pod, d in sidecar_dirs(tmp_path, dmtls_bin).items():
        r = run([dmtls_bin, "check", "-c", d / "dmtls.conf"])
        assert r.returncode == 0, "%s: %s%s" % (pod, r.stdout, r.stderr)
        counts[pod] = len([l for l in r.stdout.splitlines() if " listen=" in l])
    # masters: 2 server + 3x2 to the masters + 2 to the workers; workers:
    # 1 server + 3 to the masters; admin: 3 to the masters.
    assert counts == dict([(m, 10) for m in MASTERS] + [(w, 4) for w in WORKERS] +
                          [("admin", 3)]), counts


def routes_of(path):
    """(name, listen, target) of each route in a dmtls config file."""
    with open(path) as f:
        text = f.read()
    return re.findall(r'name = "([^"]+)";[^}]*?listen = "([^"]+)";\s*target = "([^"]+)"',
                      text)


def test_dm_files_advertise_the_aliases_the_sidecars_listen_on():
    """dm-master and dm-worker advertise 127.0.1.N / 127.0.2.N; every
    address DM dials (advertise-addr, initial-cluster, join) is a client
    route's listen address in the pods that dial it, to that component."""
    d = os.path.join(HERE, "dmtls")
    master_routes = {l: t for _, l, t in routes_of(os.path.join(d, "master.d",
                                                                "10-cluster.conf"))}
    worker_routes = {l: t for _, l, t in routes_of(os.path.join(d, "worker.d",
                                                                "10-masters.conf"))}
    for m in MASTERS:
        with open(os.path.join(HERE, "dm", m + ".toml"), "rb") as f:
            t = tomllib.load(f)
        assert t["name"] == m
        assert t["master-addr"] == "127.0.0.1:18261"
        assert t["peer-urls"] == "http://127.0.0.1:18291"
        api, peer = t["advertise-addr"], t["advertise-peer-urls"][len("http://"):]
        assert master_routes[api] == m + ":8261" and worker_routes[api] == m + ":8261"
        assert master_routes[peer] == m + ":8291"
        for member in t["initial-cluster"].split(","):
            name, url = member.split("=", 1)
            assert master_routes[url[len("http://"):]] == name + ":8291", member
        own = dict((n, (l, tg)) for n, l, tg in routes_of(os.path.join(d, m + ".conf")))
        assert own["master-api"] == ("0.0.0.0:8261", "127.0.0.1:18261")
        assert own["master-peer"] == ("0.0.0.0:8291", "127.0.0.1:18291")
    for w in WORKERS:
        with open(os.path.join(HERE, "dm", w + ".toml"), "rb") as f:
            t = tomllib.load(f)
        assert t["worker-addr"] == "127.0.0.1:18262"
        assert master_routes[t["advertise-addr"]] == w + ":8262"
        for j in t["join"].split(","):
            assert worker_routes[j].endswith(":8261"), j
        own = dict((n, (l, tg)) for n, l, tg in routes_of(os.path.join(d, w + ".conf")))
        assert own["worker"] == ("0.0.0.0:8262", "127.0.0.1:18262")
