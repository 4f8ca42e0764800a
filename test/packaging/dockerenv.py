"""Docker for the image test: the daemon (started when it is not running,
and stopped again by whoever started it), the Debian base images made
locally when the daemon lacks them, and the image build.

No image registry is reachable from the machines these tests run on, so
debian:bookworm and debian:bookworm-slim are made here: `debootstrap
--variant=minbase bookworm` from the system's Debian mirror into a folder,
packed into a tarball cached under $DMTLS_CACHE/docker-base (default
~/.cache/dmtls/docker-base), then `docker import`ed under both tags.  The
same Dockerfile pulls the real images anywhere else.
"""

import os
import subprocess
import time

from conftest import apt_conf, apt_install, debian_mirror, debian_sources, sh

# Debian's docker client, which matches Debian's daemon (another client on
# PATH may expect BuildKit plugins that are not installed).
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker")
                                      else "docker")
BASE_TAGS = ("debian:bookworm", "debian:bookworm-slim")


def cache_dir():
    return os.environ.get("DMTLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dmtls")


def docker(*args, timeout=300, check=True, **kw):
    return sh([DOCKER] + list(args), timeout=timeout, check=check, **kw)


def daemon_up():
    return subprocess.run([DOCKER, "info"], capture_output=True, timeout=60).returncode == 0


class Daemon:
    """dockerd, started by start() only when it is not running; stop()
    stops only a daemon this object started, by its PID."""

    def __init__(self, logdir):
        self.proc = None
        self.log = os.path.join(logdir, "dockerd.log")

    def start(self):
        apt_install("docker.io", "debootstrap")
        if daemon_up():
            return
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not daemon_up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log) as f:
                    tail = f.read()[-4000:]
                self.stop()
                raise AssertionError("dockerd did not come up; its log:\n" + tail)
            time.sleep(0.5)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def have_image(tag):
    return docker("image", "inspect", tag, check=False).returncode == 0


def base_images():
    """Make debian:bookworm and debian:bookworm-slim when the daemon lacks
    them; returns the tags it made."""
    missing = [t for t in BASE_TAGS if not have_image(t)]
    if not missing:
        return []
    base = os.path.join(cache_dir(), "docker-base")
    tarball = os.path.join(base, "bookworm-minbase.tar")
    if not os.path.exists(tarball):
        os.makedirs(base, exist_ok=True)
        root = os.path.join(base, "rootfs")
        sh(["rm", "-rf", root])
        sh(["nice", "debootstrap", "--variant=minbase", "bookworm", root, debian_mirror()],
           timeout=1800)
        # What a container image does without: package lists and caches.
        sh(["sh", "-c", "rm -rf %s/var/lib/apt/lists/* %s/var/cache/apt/*.bin "
            "%s/var/cache/apt/archives/*.deb" % (root, root, root)])
        # The mirror debootstrap wrote into the image is the system's; the
        # real images carry Debian's own sources.  Keep the system's: the
        # build stage replaces them anyway when given APT_SOURCES.
        sh(["tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tarball + ".tmp", "."],
           timeout=600)
        os.rename(tarball + ".tmp", tarball)
        sh(["rm", "-rf", root])
    first = missing[0]
    docker("import", "--change", 'CMD ["bash"]', tarball, first, timeout=600)
    for t in missing[1:]:
        docker("tag", first, t)
    return missing


def build_image(context, tag, logpath):
    """nice docker build -f docker/Dockerfile -t tag context, with the
    system's Debian mirror as APT_SOURCES and the apt settings it needs as
    APT_CONF; returns the build output."""
    return build(context, os.path.join(context, "docker", "Dockerfile"), tag, logpath)


def build(context, dockerfile, tag, logpath):
    """nice docker build -f dockerfile -t tag context, the same way (the
    legacy builder, whose layer cache makes a rebuild of an unchanged
    context take seconds); returns the build output."""
    r = sh(["nice", DOCKER, "build", "--force-rm", "--network", "bridge", "-f",
            dockerfile, "-t", tag,
            "--build-arg", "APT_SOURCES=" + debian_sources("bookworm"),
            "--build-arg", "APT_CONF=" + apt_conf(), context],
           timeout=3600, check=False, env={"DOCKER_BUILDKIT": "0"})
    out = r.stdout + r.stderr
    with open(logpath, "w") as f:
        f.write(out)
    assert r.returncode == 0, "docker build failed:\n" + out[-8000:]
    return out
