"""The Debian package (DESIGN.md section 9, debian/): `dpkg-buildpackage -us
-uc -b` in a copy of the tree builds dmtls_VERSION_ARCH.deb with the bundled
assembly wolfSSL; lintian reports no error; `apt-get install ./dmtls_*.deb`
installs the binary, both man pages, the units and the examples, creates the
group "dmtls" and starts nothing; the installed units pass `systemd-analyze
verify` and are scored by `systemd-analyze security --offline=yes`; an upgrade
stops, starts and restarts nothing; a purge leaves nothing but the group.

The tests run in file order and share one build and one installation: the
last one purges the package.  They refuse to run when a dmtls package is
installed already (it would be purged).
"""

import os
import re
import stat
import subprocess

import pytest

from conftest import (REPO, apt_install, export_tree, installed, need_root,
                      project_version, report, sh)

BUILD_PKGS = ["dpkg-dev", "debhelper", "lintian", "fakeroot", "systemd", "util-linux"]
UNITS = ["dmtls.service", "dmtls@.service", "dmtls-master-api.socket"]
UNIT_DIR = "/lib/systemd/system"
# Where a package's leftovers could hide; other folders are only looked at
# for names with "dmtls" in them (other work on the machine may add files).
WATCHED = ["/etc", "/lib/systemd", "/usr/lib/systemd", "/var/lib/systemd",
           "/usr/share/doc", "/usr/share/man", "/usr/bin", "/usr/sbin",
           "/usr/lib/sysusers.d", "/usr/lib/tmpfiles.d", "/var/lib/dmtls", "/run/dmtls",
           "/run/systemd"]
# Backups the group tools write beside the files they edit.
GROUP_TOOL_FILES = {"/etc/group-", "/etc/gshadow-", "/etc/passwd-", "/etc/shadow-"}
SKIP_FS = ("/proc", "/sys", "/dev", "/tmp", "/var/tmp", "/var/cache", "/var/log",
           "/var/lib/apt", "/var/lib/dpkg", "/work", "/root/.cache", "/home")


def snapshot():
    """Every path on the root file system except volatile folders."""
    out = set()
    for top in os.listdir("/"):
        root = "/" + top
        if root in SKIP_FS or os.path.islink(root) or not os.path.isdir(root):
            continue
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if os.path.join(d, x) not in SKIP_FS
                       and not os.path.ismount(os.path.join(d, x))]
            for n in dirs + files:
                out.add(os.path.join(d, n))
    return out


def dmtls_processes():
    """PIDs whose executable is /usr/bin/dmtls."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % pid) in ("/usr/bin/dmtls", "/bin/dmtls"):
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build the package in a copy of the tree; dict with the paths."""
    need_root()
    if installed("dmtls"):
        pytest.fail("a dmtls package is installed; this test installs and purges "
                    "its own: apt-get purge dmtls first", pytrace=False)
    apt_install(*BUILD_PKGS)
    tmp = tmp_path_factory.mktemp("deb")
    src = export_tree(str(tmp / "dmtls"))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    sh(["apt-get", "build-dep", "-y", "-qq", "--no-install-recommends", "./"], cwd=src,
       timeout=1200, env=env)
    r = sh(["nice", "dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=1800,
           check=False)
    log = r.stdout + r.stderr
    with open(str(tmp / "build.log"), "w") as f:
        f.write(log)
    assert r.returncode == 0, "dpkg-buildpackage failed:\n" + log[-8000:]
    arch = sh(["dpkg", "--print-architecture"]).stdout.strip()
    ver = project_version()
    deb = str(tmp / ("dmtls_%s_%s.deb" % (ver, arch)))
    assert os.path.exists(deb), "no %s; built: %s" % (deb, os.listdir(str(tmp)))
    return {"tmp": str(tmp), "src": src, "deb": deb, "log": log, "version": ver,
            "changes": str(tmp / ("dmtls_%s_%s.changes" % (ver, arch)))}


@pytest.fixture(scope="module")
def install(build):
    """Install the package with apt-get; dict with the file list and the
    snapshots around the installation."""
    before = snapshot()
    procs_before = set(dmtls_processes())
    had_group = sh(["getent", "group", "dmtls"], check=False).returncode == 0
    sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", build["deb"]],
       env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    files = sh(["dpkg", "-L", "dmtls"]).stdout.split()
    return {"before": before, "procs_before": procs_before, "files": files,
            "had_group": had_group}


def test_deb_built_with_bundled_wolfssl(build):
    """The package build used build-aux/wolfssl-bundle and its cache, not the
    system's libwolfssl."""
    log = build["log"]
    assert "building or reusing the bundled wolfSSL" in log, log[-3000:]
    cache = os.environ.get("DMTLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dmtls")
    assert re.search(r"-I%s/wolfssl-[0-9.]+-[0-9a-f]+/include" % re.escape(cache), log), \
        "the build did not use the wolfSSL cache %s" % cache
    assert "libwolfssl.a" in log
    assert re.search(r"^# PASS: +[1-9]", log, re.M) and re.search(r"^# FAIL: +0", log, re.M), \
        "the unit tests did not run and pass in dh_auto_test"


def test_deb_contents(build):
    """Binary, both man pages, the units in /lib/systemd/system, the
    example configs in /usr/share/doc/dmtls/examples."""
    listing = sh(["dpkg-deb", "-c", build["deb"]]).stdout
    names = {l.split()[-1].lstrip(".") for l in listing.splitlines()}
    want = ["/usr/bin/dmtls", "/usr/share/man/man8/dmtls.8.gz",
            "/usr/share/man/man5/dmtls.conf.5.gz"]
    want += [UNIT_DIR + "/" + u for u in UNITS]
    examples = sorted(os.listdir(os.path.join(REPO, "conf.d")))
    want += ["/usr/share/doc/dmtls/examples/" + e for e in examples]
    missing = [w for w in want if w not in names]
    assert not missing, "missing from the package: %s\n%s" % (missing, listing)
    # The example configs are read as they are, not compressed.
    assert not [n for n in names if "/examples/" in n and n.endswith(".gz")], listing


def test_deb_version_matches_configure(build):
    """debian/changelog's version is configure.ac's AC_INIT version."""
    info = sh(["dpkg-deb", "-f", build["deb"], "Version"]).stdout.strip()
    assert info == build["version"], (info, build["version"])


def test_lintian_no_errors(build):
    """lintian on the .changes (the .deb and the .buildinfo): no error."""
    r = sh(["lintian", "--info", "--display-info", build["changes"]],
           check=False, timeout=900)
    out = (r.stdout + r.stderr).strip()
    report("lintian", out or "(no tags)")
    errors = [l for l in out.splitlines() if l.startswith("E:")]
    assert not errors, "lintian errors:\n" + out


def test_install_starts_nothing(build, install):
    """After apt-get install: /usr/bin/dmtls runs, the group exists, no
    dmtls process was started, dmtls.service is enabled (guarded by its
    ConditionPathExists=) and the example socket is not."""
    r = sh(["/usr/bin/dmtls", "version"])
    assert r.stdout.startswith("dmtls %s\n" % build["version"]), r.stdout
    assert "bundled assembly build" in r.stdout, r.stdout
    assert sh(["getent", "group", "dmtls"], check=False).returncode == 0, \
        "no group dmtls after installation"
    started = set(dmtls_processes()) - install["procs_before"]
    assert not started, "installing started dmtls: pids %s" % sorted(started)
    wants = "/etc/systemd/system/multi-user.target.wants/dmtls.service"
    assert os.path.islink(wants), "dmtls.service is not enabled"
    assert not os.path.exists("/etc/systemd/system/sockets.target.wants/"
                              "dmtls-master-api.socket"), "the example socket was enabled"
    for u in ("dmtls.service", "dmtls@.service"):
        with open(os.path.join(UNIT_DIR, u)) as f:
            text = f.read()
        cfg = "/etc/dmtls/dmtls.conf" if u == "dmtls.service" else "/etc/dmtls/%i.conf"
        assert "\nConditionPathExists=%s\n" % cfg in text, u
    for f in install["files"]:
        if f.startswith("/usr/share/man/") and f.endswith(".gz"):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f


def test_installed_man_pages_render(install):
    """man finds both pages."""
    for page in (["8", "dmtls"], ["5", "dmtls.conf"]):
        r = sh(["man", "-w"] + page, check=False)
        assert r.returncode == 0 and r.stdout.startswith("/usr/share/man/"), (page, r)


def test_installed_units_verify(install):
    """`systemd-analyze verify` on the installed units: exit 0 and nothing
    said about them."""
    paths = [os.path.join(UNIT_DIR, u) for u in UNITS]
    r = sh(["systemd-analyze", "verify"] + paths, check=False, timeout=120)
    out = (r.stdout + r.stderr).strip()
    report("systemd-analyze-verify", "$ systemd-analyze verify %s\nexit %d\n%s" % (
        " ".join(paths), r.returncode, out or "(no output)"))
    complaints = [l for l in out.splitlines() if "dmtls" in l]
    assert r.returncode == 0 and not complaints, out


def test_installed_units_security(install, tmp_path):
    """`systemd-analyze security --offline=yes` scores both services; the
    exposure stays low (the units are hardened: DynamicUser, no
    capabilities, ProtectSystem=strict, a system call filter)."""
    text, worst = [], 0.0
    inst = tmp_path / "dmtls@dm-master.service"
    with open(os.path.join(UNIT_DIR, "dmtls@.service")) as f:
        inst.write_text(f.read().replace("%i", "dm-master"))
    for path in (os.path.join(UNIT_DIR, "dmtls.service"), str(inst)):
        r = sh(["systemd-analyze", "security", "--offline=yes", "--no-pager", path],
               check=False, timeout=120)
        out = r.stdout + r.stderr
        m = re.search(r"Overall exposure level for (\S+): ([0-9.]+) (\S+)", out)
        assert m, "no exposure level for %s:\n%s" % (path, out)
        worst = max(worst, float(m.group(2)))
        text.append("$ systemd-analyze security --offline=yes %s\n%s" % (path, out))
    report("systemd-analyze-security", "\n".join(text))
    assert worst <= 2.5, "exposure %.1f" % worst


def _shim_dir(tmp, log):
    d = tmp / "shims"
    d.mkdir()
    for name in ("systemctl", "deb-systemd-invoke", "invoke-rc.d"):
        p = d / name
        p.write_text('#!/bin/sh\necho "%s $*" >> %s\nexit 0\n' % (name, log))
        p.chmod(0o755)
    return str(d)


def test_upgrade_stops_and_restarts_nothing(build, install, tmp_path):
    """The maintainer scripts of an upgrade (prerm upgrade, preinst upgrade,
    postinst configure) on a machine where systemd runs ask systemd to stop,
    start or restart no unit, and removal stops them all, instances too.
    Run in a mount namespace whose /run has /run/systemd/system, with
    systemctl and deb-systemd-invoke replaced by recorders."""
    ctl = str(tmp_path / "ctl")
    sh(["dpkg-deb", "-e", build["deb"], ctl])
    log = str(tmp_path / "calls.log")
    shims = _shim_dir(tmp_path, log)
    ver = build["version"]

    def scripts(*steps):
        open(log, "w").close()
        body = ["set -e", "mount -t tmpfs tmpfs /run", "mkdir -p /run/systemd/system",
                "export PATH=%s:$PATH" % shims]
        for script, args in steps:
            if os.path.exists(os.path.join(ctl, script)):
                body.append("%s/%s %s" % (ctl, script, args))
        sh(["unshare", "--mount", "--propagation", "private", "sh", "-c",
            "\n".join(body)], timeout=120)
        with open(log) as f:
            return f.read().splitlines()

    calls = scripts(("prerm", "upgrade %s" % ver), ("preinst", "upgrade %s" % ver),
                    ("postinst", "configure %s" % ver))
    verbs = re.compile(r"\b(start|stop|restart|try-restart|reload-or-restart|"
                       r"condrestart|force-reload|kill)\b")
    assert not [c for c in calls if verbs.search(c)], \
        "an upgrade would stop or restart dmtls: %s" % calls
    calls = scripts(("prerm", "remove"))
    stops = [c for c in calls if re.search(r"\bstop\b", c)]
    assert stops and "dmtls.service" in stops[0] and "dmtls@*.service" in stops[0], calls


def test_reinstall_over_itself(build, install):
    """dpkg runs the upgrade path of the scripts (reinstalling the same
    version) without an error, and still starts nothing."""
    before = set(dmtls_processes())
    sh(["apt-get", "install", "-y", "-qq", "--reinstall", build["deb"]],
       env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    assert set(dmtls_processes()) <= before


def test_purge_leaves_only_the_group(install):
    """apt-get purge: no file of the package left, nothing new with dmtls in
    its name, nothing new in the folders a package writes to (the group
    tools' backup files aside); the group stays, as Debian keeps system
    groups."""
    files = install["files"]
    sh(["apt-get", "purge", "-y", "-qq", "dmtls"], env={"DEBIAN_FRONTEND": "noninteractive"},
       timeout=600)
    assert not installed("dmtls")
    r = subprocess.run(["dpkg-query", "-W", "dmtls"], capture_output=True, text=True)
    assert "dmtls" not in r.stdout or r.returncode != 0, r.stdout
    after = snapshot()
    left = sorted(p for p in after - install["before"]
                  if ("dmtls" in p or any(p == w or p.startswith(w + "/") for w in WATCHED))
                  and p not in GROUP_TOOL_FILES)
    assert not left, "left after purge: %s" % left
    gone = [f for f in files if os.path.lexists(f) and
            ("dmtls" in f or not os.path.isdir(f))]
    assert not gone, "package files left after purge: %s" % gone
    assert sh(["getent", "group", "dmtls"], check=False).returncode == 0, \
        "the system group dmtls went with the purge"
