# etcd.Dockerfile: the stand-in for DM in test_compose.py.  DM-master embeds
# etcd, and its peer (8291) and client (8261) links are what its sidecar
# carries; this image is Debian's etcd-server (and etcdctl, curl for the
# checks) on the local debian:bookworm-slim, since no registry is reachable
# from the machines the test runs on.
#
#     docker build -f test/packaging/compose/etcd.Dockerfile -t dmtls-etcd:test \
#         test/packaging/compose
#
# APT_SOURCES and APT_CONF as in docker/Dockerfile: the system's Debian
# mirror, given by the test at build time.
FROM debian:bookworm-slim
ARG APT_SOURCES=
ARG APT_CONF=
RUN set -e; \
    if [ -n "$APT_SOURCES" ]; then \
        rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*; \
        printf '%s\n' "$APT_SOURCES" > /etc/apt/sources.list.d/debian.sources; \
    fi; \
    if [ -n "$APT_CONF" ]; then \
        printf '%s\n' "$APT_CONF" > /etc/apt/apt.conf.d/90build-args; \
    fi; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        etcd-server etcd-client curl ca-certificates; \
    rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /etc/apt/apt.conf.d/90build-args; \
    groupadd --system --gid 10002 member; \
    useradd --system --uid 10002 --gid member --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin member; \
    install -d -o 10002 -g 10002 -m 0700 /var/lib/member
# A named volume mounted here starts owned by the member user.
VOLUME /var/lib/member
USER 10002:10002
