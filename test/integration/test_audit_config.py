"""Config and command-line defects of issue 9 (items 7, 9, 13 and 18):

- an empty identity rule ("" in a cert-allowed-* list, `--cert-allowed-cn ""`
  or "a,,b") is an error naming the key or flag, never "no rule";
- a rule longer than the 255 bytes dmtls compares could never match: it is
  an error too (DESIGN 4: a longer name simply does not match);
- handshake, connect and close timeouts of 0 are errors, `--idle-timeout 0`
  still means none (DESIGN 5);
- durations are digits, an optional fraction and a unit: "nan" (a fuzzing
  find), "inf", "-0", hex, exponents and more than 365 days are refused;
- an existing but empty conf.d is fine (it used to call qsort(NULL, 0, ...),
  which aborts the --enable-asan build);
- a reload that fails keeps the old log level.

Every config error exits 2 from `dmtls run` with FILE:LINE and the key.
"""

import os
import signal

import pytest

from backends import EchoServer
from conftest import free_port, run
from routes import (REFUSE_TIMEOUT as RUN_TIMEOUT, expect_config_error, expect_usage_error,
                    loopback, replace_file, start_route, start_run)
from routes import write_conf as write
from tlsclient import tls_refused
LONG_RULE = "d" * 256  # one byte more than dmtls compares


# -- helpers -----------------------------------------------------------------

def conf_lines(pki, listen, target, sec=('cert-allowed-cn = ["dm"];',), route=(),
               top=()):
    """A one-route config, one setting per line; sec: the lines of the
    top-level security group after the three files."""
    return (['log-level = "info";', *top,
             "security = {",
             '  ssl-ca = "%s";' % pki.ca,
             '  ssl-cert = "%s";' % pki.path("dm"),
             '  ssl-key = "%s";' % pki.key("dm"),
             *["  " + s for s in sec],
             "};",
             "routes = (",
             '  { name = "r";',
             '    kind = "server";',
             '    listen = "%s";' % listen,
             '    target = "%s";' % target,
             *["    " + r for r in route],
             "  }",
             ");"])


def server_args(pki, *extra):
    return ["server", "--listen", loopback(), "--target", loopback(),
            "--ssl-ca", pki.ca, "--ssl-cert", pki.path("dm"),
            "--ssl-key", pki.key("dm"), *extra]


# -- item 7: empty rules -------------------------------------------------------

RULE_KEYS = ("cert-allowed-cn", "cert-allowed-dns", "cert-allowed-uri",
             "cert-allowed-ou")


@pytest.mark.parametrize("key", RULE_KEYS)
@pytest.mark.parametrize("form", ["list", "string", "route"])
def test_empty_rule_in_config_refused(dmtls_bin, pki, tmp_path, key, form):
    """`KEY = ["dm", ""]` (or `KEY = ""`, or in a route's security group) is
    an error naming KEY at its line; it used to be accepted, and "" alone
    turned the route open to any certificate from ssl-ca."""
    if form == "list":
        sec, route = ['%s = ["dm", ""];' % key], []
    elif form == "string":
        sec, route = ['%s = "";' % key], []
    else:
        sec, route = ['cert-allowed-cn = ["dm"];'], ['security = { %s = [""]; };' % key]
    conf, text = write(tmp_path / "dmtls.conf",
                       conf_lines(pki, loopback(), loopback(), sec=sec, route=route))
    needle = {"list": '%s = ["dm", ""]', "string": '%s = ""',
              "route": 'security = { %s'}[form] % key
    msg = expect_config_error(dmtls_bin, conf, text, needle, key)
    assert "empty" in msg, msg


@pytest.mark.parametrize("value", ["", "a,,b", ",dm", "dm,"])
def test_empty_rule_on_command_line_refused(dmtls_bin, pki, value):
    """--cert-allowed-cn "" or a comma list with an empty item: exit 2 naming
    the flag (it used to drop the item, and "" left the route open)."""
    msg = expect_usage_error(dmtls_bin, server_args(pki, "--cert-allowed-cn", value),
                             "--cert-allowed-cn")
    assert "empty" in msg, msg


def test_rule_longer_than_compared_names_refused(dmtls_bin, pki, tmp_path):
    """A 256-byte rule could never match (names longer than 255 bytes never
    match): an error naming the key, or the flag, and the limit."""
    conf, text = write(tmp_path / "dmtls.conf", conf_lines(
        pki, loopback(), loopback(), route=['security = { cert-allowed-ou = ["%s"]; };'
                                            % LONG_RULE]))
    msg = expect_config_error(dmtls_bin, conf, text, LONG_RULE, "cert-allowed-ou")
    assert "255" in msg, msg
    msg = expect_usage_error(dmtls_bin, server_args(pki, "--cert-allowed-cn",
                                                    "dm," + LONG_RULE),
                             "--cert-allowed-cn")
    assert "255" in msg, msg


def test_rule_of_255_bytes_accepted(dmtls_bin, pki):
    """The longest rule that can match is still a valid rule."""
    r = run([dmtls_bin, "check", *server_args(pki, "--cert-allowed-cn", "d" * 255)],
            timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


# -- item 9: zero timeouts -------------------------------------------------------

@pytest.mark.parametrize("flag", ["handshake-timeout", "connect-timeout", "close-timeout"])
@pytest.mark.parametrize("value", ["0", "0s", "0ms", "0.0"])
def test_zero_timeout_flag_refused(dmtls_bin, pki, flag, value):
    """--handshake/connect/close-timeout 0 meant "expire at once"; now exit 2
    naming the flag."""
    msg = expect_usage_error(dmtls_bin, server_args(pki, "--cert-allowed-cn", "dm",
                                                    "--" + flag, value),
                             "--" + flag)
    assert "greater than zero" in msg, msg


@pytest.mark.parametrize("key", ["handshake-timeout", "connect-timeout", "close-timeout"])
@pytest.mark.parametrize("value", ["0", '"0s"', '"0ms"'])
def test_zero_timeout_key_refused(dmtls_bin, pki, tmp_path, key, value):
    """`KEY = 0;` in a route: FILE:LINE naming the key."""
    conf, text = write(tmp_path / "dmtls.conf", conf_lines(
        pki, loopback(), loopback(), route=["%s = %s;" % (key, value)]))
    msg = expect_config_error(dmtls_bin, conf, text, key, key)
    assert "greater than zero" in msg, msg


def test_idle_timeout_zero_means_none(dmtls_bin, pki, procs, tmp_path):
    """--idle-timeout 0 and idle-timeout = 0 still start (no idle timeout)."""
    port = free_port()
    with EchoServer() as echo:
        p = start_route(procs, dmtls_bin, pki, "server", port, echo.addr, "--idle-timeout",
                        "0", allowed="dm", name="cli")
        assert tls_refused(port, pki) is None, p.log()
        port2 = free_port()
        conf, _ = write(tmp_path / "dmtls.conf", conf_lines(
            pki, "127.0.0.1:%d" % port2, echo.addr, route=["idle-timeout = 0;"]))
        d = start_run(procs, dmtls_bin, conf, name="run")
        assert tls_refused(port2, pki) is None, d.log()


# -- item 18: durations and an empty conf.d -----------------------------------------

# ../shared/reference/fuzz-findings/duration-nan.conf, whole.
DURATION_NAN_CONF = 'shutdown-timeout = "nan";\nroutes = ();\n'


def test_duration_nan_fuzz_finding_refused(dmtls_bin, tmp_path):
    """The fuzzing input itself: refused at line 1 naming shutdown-timeout
    (it was accepted, converting a NaN to long)."""
    conf = os.fspath(tmp_path / "dmtls.conf")
    with open(conf, "w") as f:
        f.write(DURATION_NAN_CONF)
    expect_config_error(dmtls_bin, conf, DURATION_NAN_CONF, "nan", "shutdown-timeout")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "infinity", "-0", "-0s", "+5s",
                                   "1e400", "1e3", "0x10s", " 5s", "5s ", "9999h",
                                   "31536001s", "1000000000000000000000s", "0.0001s"])
def test_bad_duration_values_refused(dmtls_bin, pki, tmp_path, value):
    """Not digits [.digits] [ms|s|m|h] within 365 days: FILE:LINE naming the
    key, with the grammar in the message."""
    conf, text = write(tmp_path / "dmtls.conf", conf_lines(
        pki, loopback(), loopback(), top=['shutdown-timeout = "%s";' % value],
        route=['idle-timeout = "10s";']))
    msg = expect_config_error(dmtls_bin, conf, text, "shutdown-timeout", "shutdown-timeout",
                              "365 days")
    assert "10s" in msg, msg
    conf, text = write(tmp_path / "dmtls.conf", conf_lines(
        pki, loopback(), loopback(), route=['idle-timeout = "%s";' % value]))
    expect_config_error(dmtls_bin, conf, text, "idle-timeout", "idle-timeout")
    expect_usage_error(dmtls_bin, server_args(pki, "--cert-allowed-cn", "dm",
                                              "--idle-timeout", value),
                       "--idle-timeout", "365 days")


def test_empty_confd_is_fine(dmtls_bin, pki, procs, tmp_path):
    """An existing conf.d with no *.conf in it: `check` and `run` work (the
    loader called qsort(NULL, 0, ...), fatal under --enable-asan)."""
    os.mkdir(tmp_path / "conf.d")
    with open(tmp_path / "conf.d" / "README", "w") as f:
        f.write("not a .conf file\n")
    port = free_port()
    with EchoServer() as echo:
        conf, _ = write(tmp_path / "dmtls.conf",
                        conf_lines(pki, "127.0.0.1:%d" % port, echo.addr))
        r = run([dmtls_bin, "check", "-c", conf], timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        os.unlink(tmp_path / "conf.d" / "README")
        r = run([dmtls_bin, "check", "-c", conf], timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        d = start_run(procs, dmtls_bin, conf)
        assert tls_refused(port, pki) is None, d.log()


# -- item 13: a failed reload keeps the log level --------------------------------------

def test_failed_reload_keeps_log_level(dmtls_bin, pki, procs, tmp_path):
    """A new version with log-level = "debug" and an error is refused, and no
    debug line appears afterwards: the old config keeps serving at info."""
    port = free_port()
    with EchoServer() as echo:
        conf, good = write(tmp_path / "dmtls.conf",
                           conf_lines(pki, "127.0.0.1:%d" % port, echo.addr))
        d = start_run(procs, dmtls_bin, conf)
        bad = good.replace('log-level = "info";', 'log-level = "debug";')
        bad = bad.replace('kind = "server";', 'kind = "server";\n    bogus-key = 1;')
        replace_file(conf, bad)
        since = d.mark()
        d.expect_error(r"event=reload_failed .*bogus-key")
        d.kill(signal.SIGHUP)
        d.wait_log(r"event=reload_failed .*bogus-key", timeout=10, since=since)
        d.expect_error(r"event=reload_failed msg=\".*: unknown key 'bogus-key' in a route")
        assert tls_refused(port, pki) is None, d.log()
        # The connection's close line is logged after its state changes.
        d.wait_log(r"event=close ", timeout=5, since=since)
        tail = d.log()[since:]
        assert "level=debug" not in tail, "debug lines after a failed reload:\n" + tail
