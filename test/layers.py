#!/usr/bin/env python3
"""The layers of proxy/ and policy/ (DESIGN section 8), checked.

A file includes and calls only what is below it.  This script reads every
#include "..." of proxy/ and policy/ and, once the objects are built, every
symbol each object file uses from another (nm), and fails naming each
include or call that goes up, sideways between modules kept apart, or out
of policy/, and each pair of files that call each other.

Run by `make check`; by hand: test/layers.py [SRCDIR [BUILDDIR]].
"""

import os
import re
import subprocess
import sys

# Top to bottom.  Each layer is a list of groups, also top to bottom: a
# module may use (include, call) the modules of any group below its own.
# The modules of a list group are kept apart (none uses another); those of
# a tuple group may use each other, but calls still go one way only.
# Modules not yet in the tree have their place already.
LAYERS = [
    ("main", [["main"]]),
    ("commands", [["cli", "healthcheck", "certs", "probe"],
                  ("daemon", "status"), ["sandbox", "privs"]]),
    ("config loader", [["conffile"]]),
    ("routes and workers", [["route"], ["worker"]]),
    ("connection", [["conn"]]),
    ("phases", [["relay", "mysql"], ["mysqlproto", "mysqlkey"]]),
    ("tls", [["tls"], ["hello"]]),
    ("endpoint", [["endpoint", "linger", "resolve"], ["bufpool"]]),
    ("leaves", [["logfold"],
                ["conf", "addr", "log", "util", "notify", "version"]]),
]

# policy/ stands apart: wolfSSL and its own headers only.  Its modules may
# use each other (one way); proxy/ modules from this layer up may use it.
POLICY = ("certset", "crl", "hostname", "peerid", "policy", "subject")
POLICY_USERS_FROM = "tls"

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def table():
    """module -> (layer index, group index, together, layer name)."""
    where = {}
    for li, (lname, groups) in enumerate(LAYERS):
        for gi, group in enumerate(groups):
            for m in group:
                where["proxy/" + m] = (li, gi, isinstance(group, tuple),
                                       lname)
    for m in POLICY:
        where["policy/" + m] = (None, None, True, "policy")
    return where


def why_not(where, a, b):
    """None when module a may use module b, else why not."""
    if a == b:
        return None
    wa, wb = where[a], where[b]
    if wa[3] == "policy":
        if wb[3] == "policy":
            return None
        return "policy/ uses wolfSSL and its own headers only"
    if wb[3] == "policy":
        if wa[0] <= [n for n, _ in LAYERS].index(POLICY_USERS_FROM):
            return None
        return "%s is below the layers that may use policy/" % a
    if wa[0] < wb[0]:
        return None
    if wa[0] > wb[0]:
        return "%s (%s) is below %s (%s)" % (a, wa[3], b, wb[3])
    if wa[1] < wb[1]:
        return None
    if wa[1] == wb[1] and wa[2]:
        return None
    if wa[1] == wb[1]:
        return "%s and %s are kept apart in layer %s" % (a, b, wa[3])
    return "%s is below %s in layer %s" % (a, b, wa[3])


def sources(srcdir):
    out = []
    for d in ("proxy", "policy"):
        for f in sorted(os.listdir(os.path.join(srcdir, d))):
            if f.endswith((".c", ".h")):
                out.append(d + "/" + f)
    return out


def module(path):
    return os.path.splitext(path)[0]


def check_includes(srcdir, where, errors):
    for rel in sources(srcdir):
        m = module(rel)
        if m not in where:
            errors.append("%s: module %s is not in the layer table of "
                          "test/layers.py; give it its place" % (rel, m))
            continue
        with open(os.path.join(srcdir, rel), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                g = INCLUDE.match(line)
                if g is None:
                    continue
                target = os.path.normpath(os.path.join(
                    os.path.dirname(rel), g.group(1)))
                if not os.path.exists(os.path.join(srcdir, target)):
                    continue        # config.h and the like
                tm = module(target)
                if tm not in where:
                    continue        # reported above
                why = why_not(where, m, tm)
                if why is not None:
                    errors.append('%s:%d: #include "%s" goes against the '
                                  'layers: %s' % (rel, n, g.group(1), why))


def symbols(obj):
    """(defined, undefined) global symbols of an object file."""
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind.isupper():
            defined.add(name)
    return defined, undefined


def check_calls(srcdir, builddir, where, errors):
    objs = {}
    for rel in sources(srcdir):
        if rel.endswith(".c"):
            o = os.path.join(builddir, module(rel) + ".o")
            if os.path.exists(o):
                objs[module(rel)] = o
    if not objs:
        print("layers: no object files in %s; include graph only" %
              builddir)
        return
    owner, uses = {}, {}
    for m, o in objs.items():
        d, u = symbols(o)
        uses[m] = u
        for s in d:
            owner[s] = m
    edges = {}
    for m, u in uses.items():
        for s in sorted(u):
            t = owner.get(s)
            if t is not None and t != m:
                edges.setdefault((m, t), s)
    for (a, b), s in sorted(edges.items()):
        if a not in where or b not in where:
            continue
        why = why_not(where, a, b)
        if why is not None:
            errors.append("%s.c uses %s() of %s.c against the layers: %s" %
                          (a, s, b, why))
        if a < b and (b, a) in edges:
            errors.append("%s.c and %s.c call each other (%s(), %s())" %
                          (a, b, s, edges[(b, a)]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    srcdir = sys.argv[1] if len(sys.argv) > 1 else \
        os.environ.get("srcdir") or os.path.dirname(here)
    builddir = sys.argv[2] if len(sys.argv) > 2 else os.getcwd()
    where = table()
    errors = []
    check_includes(srcdir, where, errors)
    check_calls(srcdir, builddir, where, errors)
    for e in errors:
        print("layers: " + e)
    if errors:
        print("layers: %d violation(s); see DESIGN section 8" % len(errors))
        return 1
    print("layers: includes and calls of proxy/ and policy/ go down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
