"""Shared helpers of the packaging tests (`make check-packaging`): the Debian
package (test_deb.py) and the container image (test_image.py).

They change the machine: they install Debian packages (what they need, and
the dmtls package itself, which test_deb.py purges again), start dockerd
when it is not running (and stop it again), and leave cached base images
(debian:bookworm, debian:bookworm-slim) and the dmtls image in the daemon.
So they run as root, on a machine meant for it (CI, a test VM), and are not
part of `make check`.

Nothing here names a host: the Debian mirror comes from the system's own apt
sources at run time (debian_sources()).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "test", "integration"))

# Codenames whose suites are Debian's (bookworm, bookworm-updates,
# bookworm-security, ...); anything else in the system's sources is another
# vendor's repository and is left out.
DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke",
                 "sid", "stable", "testing", "unstable", "oldstable",
                 "oldoldstable", "experimental"}


def sh(argv, timeout=600, check=True, env=None, **kw):
    """Run argv (a list); return the CompletedProcess (text output).  With
    check, a non-zero exit raises AssertionError with the output."""
    full_env = dict(os.environ, **env) if env else None
    r = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout, env=full_env, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(map(str, argv)), r.returncode, r.stdout[-6000:], r.stderr[-6000:]))
    return r


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                       text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def apt_install(*pkgs):
    """Install the Debian packages of pkgs that are missing (as root)."""
    missing = [p for p in pkgs if not installed(p)]
    if not missing:
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    sh(["apt-get", "update", "-qq"], env=env)
    sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
       timeout=1200, env=env)


def need_root():
    if os.geteuid() != 0:
        pytest.fail("the packaging tests install packages and run docker: run them "
                    "as root (make check-packaging)", pytrace=False)


def project_version():
    """The version of AC_INIT in configure.ac."""
    with open(os.path.join(REPO, "configure.ac")) as f:
        m = re.search(r"AC_INIT\(\[dmtls\],\s*\[([^\]]+)\]", f.read())
    assert m, "no AC_INIT version in configure.ac"
    return m.group(1)


def export_tree(dest):
    """Copy the working tree's files that git knows or would add (tracked,
    and untracked but not ignored) to dest: what a clone of it would hold,
    without build output."""
    os.makedirs(dest, exist_ok=True)
    files = sh(["git", "-C", REPO, "ls-files", "-z", "-co", "--exclude-standard"]).stdout
    names = [n for n in files.split("\0") if n and os.path.lexists(os.path.join(REPO, n))]
    for n in names:
        src, dst = os.path.join(REPO, n), os.path.join(dest, n)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    return dest


# -- the system's Debian mirror ---------------------------------------------------

def _deb822_stanzas(text):
    stanza, key = {}, None
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key:
            stanza[key] += "\n" + line
        elif ":" in line:
            key, val = line.split(":", 1)
            key = key.strip().lower()
            stanza[key] = val.strip()


def debian_archives():
    """[(uri, [suites], signed_by or None)] of the system's apt sources that
    are Debian archives (deb lines or stanzas whose suites are Debian's)."""
    out = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for st in _deb822_stanzas(f.read()):
                if "deb" not in st.get("types", "").split():
                    continue
                if st.get("enabled", "yes").lower() == "no":
                    continue
                suites = [s for s in st.get("suites", "").split()
                          if s.split("-")[0] in DEBIAN_SUITES]
                signed = st.get("signed-by")
                if signed and "\n" in signed:
                    signed = None  # an inline key: the image has Debian's keyring
                for uri in st.get("uris", "").split():
                    if suites:
                        out.append((uri, suites, signed))
    lists = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in lists:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):
                    while words and not words[0].endswith("]"):
                        words.pop(0)
                    words = words[1:]
                if len(words) >= 2 and words[1].split("-")[0] in DEBIAN_SUITES:
                    out.append((words[0], [words[1]], None))
    return out


def debian_mirror():
    """URI of the system's Debian archive mirror (not its security mirror)."""
    for uri, suites, _ in debian_archives():
        if any("-" not in s for s in suites):
            return uri
    pytest.fail("no Debian mirror in /etc/apt/sources.list(.d): the packaging tests "
                "take the mirror from the system's apt sources", pytrace=False)


def debian_sources(codename="bookworm"):
    """deb822 apt sources for `codename` on the system's Debian mirrors: each
    Debian archive of the system's sources, its suites moved to codename
    (bookworm-updates stays -updates, -security stays -security)."""
    seen, stanzas = set(), []
    for uri, suites, signed in debian_archives():
        moved = []
        for s in suites:
            tail = s.split("-", 1)[1] if "-" in s else ""
            if s.split("-")[0] in ("sid", "unstable", "experimental"):
                continue  # no -updates/-security for them
            name = codename + ("-" + tail if tail else "")
            if name not in moved:
                moved.append(name)
        key = (uri, tuple(moved))
        if not moved or key in seen:
            continue
        seen.add(key)
        st = "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n" % (uri, " ".join(moved))
        if signed:
            st += "Signed-By: %s\n" % signed
        stanzas.append(st)
    if not stanzas:
        debian_mirror()  # fails with the reason
    return "\n".join(stanzas)


# apt settings of the system that a container's apt needs to reach the same
# mirror: proxies, and the date checks a snapshot mirror turns off.
APT_CONF_KEYS = re.compile(r"^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy(::\S+)?) ")


def apt_conf():
    """Those settings of the system's apt configuration, as apt.conf lines."""
    out = sh(["apt-config", "dump"]).stdout.splitlines()
    return "\n".join(l for l in out if APT_CONF_KEYS.match(l))


def wait_for(pred, timeout, what, interval=0.2):
    """Poll pred() until it returns a true value (returned) or fail after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def out_path(name):
    """Where the tests keep what they report: test/packaging/NAME, or under
    $DMTLS_PACKAGING_OUT."""
    return os.path.join(os.environ.get("DMTLS_PACKAGING_OUT", HERE), name)


def report(name, text):
    """Write text to test/packaging/NAME.out (kept for the person running the
    tests: lintian's output, systemd-analyze's, image sizes) and echo it."""
    path = out_path(name + ".out")
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    print("==== %s (%s)\n%s" % (name, path, text))


@pytest.fixture(scope="module")
def docker_daemon(tmp_path_factory):
    """A dockerd for this module's tests (dockerenv.Daemon: the running one,
    or one started here and stopped again); as root."""
    import dockerenv
    need_root()
    d = dockerenv.Daemon(str(tmp_path_factory.mktemp("dockerd")))
    d.start()
    try:
        yield d
    finally:
        d.stop()
