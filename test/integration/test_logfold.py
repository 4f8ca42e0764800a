"""Repeated failures folded in the log (DESIGN 7, issue 12): a target that
refuses while it is down gets its first conn_failed line whole, then
summary lines carrying repeated=N every few seconds, and one
event=recovered line when it comes back; the metrics count every failure.
"""

import os
import re
import socket
import time

from backends import TLSServer, wait_until
from conftest import free_port
from routes import (parse_logfmt, routes_block, route_lines, security_lines, start_run,
                    write_conf)
from test_status import metrics_of, sample

FAILURES = 200


def client_conf(path, pki, port, target, status_port, workers):
    lines = ['log-level = "info";', "workers = %d;" % workers,
             'status = "127.0.0.1:%d";' % status_port]
    lines += security_lines(pki)
    lines += routes_block(route_lines("x", port, target, kind="client"))
    return write_conf(path, lines)[0]


def refused_once(port):
    """A plaintext connection to the client route, closed by dmtls."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(100) == b""


def lines_of(log, event):
    return [parse_logfmt(l) for l in log.splitlines()
            if re.search(r"\bevent=%s\b" % event, l) and "route=x" in l]


def test_refusing_target_folds_then_recovers(procs, dmtls_bin, pki, tmp_path):
    # The target's port: bound (for later) but not listening, so it refuses.
    tsock = socket.socket()
    tsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tsock.bind(("127.0.0.1", 0))
    tport = tsock.getsockname()[1]
    port, status_port = free_port(), free_port()
    conf = client_conf(os.path.join(str(tmp_path), "dmtls.conf"), pki, port,
                       "127.0.0.1:%d" % tport, status_port, workers=4)
    d = start_run(procs, dmtls_bin, conf)
    # Spread over about 6 s (pacing, not a wait for anything): summaries
    # then come both with a repeat and from the timer.
    for _ in range(FAILURES):
        refused_once(port)
        time.sleep(0.03)

    def folded():
        m = metrics_of(status_port)
        failed = sample(m, "dmtls_connections_total", route="x", result="failed")
        lines = lines_of(d.log(), "conn_failed")
        return failed == FAILURES and 1 + sum(int(l.get("repeated", 0)) for l in lines) == failed
    # Summaries are due every 5 s: the last one comes by the timer, with
    # no further failure to carry it.
    wait_until(folded, timeout=20, msg="summaries adding up to %d failures" % FAILURES)
    m = metrics_of(status_port)
    assert sample(m, "dmtls_connect_failures_total", route="x") == FAILURES
    lines = lines_of(d.log(), "conn_failed")
    first = [l for l in lines if "repeated" not in l]
    summaries = [l for l in lines if "repeated" in l]
    assert len(first) == 1, d.log()
    assert first[0]["reason"].startswith("connect to 127.0.0.1:%d: Connection refused"
                                         % tport), first[0]
    assert summaries and all(l["reason"] == first[0]["reason"] for l in summaries), d.log()
    assert len(lines) < 20, "%d lines for %d failures" % (len(lines), FAILURES)
    assert not lines_of(d.log(), "recovered")

    # The target comes up: one recovery line, then the usual close lines.
    since = d.mark()
    with TLSServer(pki.path("dm"), pki.key("dm"), pki.ca, sock=tsock) as srv:
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"hi")
                assert s.recv(10) == b"hi"
        d.wait_log(r"event=close route=x .*reason=", since=since)
        wait_until(lambda: len(lines_of(d.log()[since:], "close")) == 2, timeout=10,
                   msg="two close lines")
        rec = lines_of(d.log()[since:], "recovered")
        assert len(rec) == 1 and rec[0]["failures"] == str(FAILURES), d.log()[since:]
        assert d.log()[since:].index("event=recovered") < d.log()[since:].index("event=close")
        assert not lines_of(d.log()[since:], "conn_failed")
        assert srv.accepted == 2
