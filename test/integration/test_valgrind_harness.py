"""make check-valgrind's wrapper (test/valgrind/dmtls) and the harness's
reading of what it prints (issue 10, "Adversarial tests": the suite under
valgrind memcheck).

A small C program with a use-after-free and a definite leak runs through
the wrapper as if it were dmtls: the judge must fail it on the memcheck
report and on valgrind's exit status 99, and pass the same program once it
is correct.  This runs in make check (a second or two), so the detection
that check-valgrind relies on cannot rot unseen.
"""

import os
import shutil
import subprocess

import pytest

from conftest import REPO, Proc, judge, run

WRAPPER = os.path.join(REPO, "test", "valgrind", "dmtls")
PROGRAM = r"""
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
	char *kept = malloc(16), *p = malloc(8);
	strcpy(kept, "kept");
	free(p);
	int r = 0;
#ifdef FAULTY
	kept = NULL;		/* 16 bytes definitely lost */
	r = p[0] == 'x';	/* use after free */
#endif
	free(kept);
	return r;
}
"""


def build(tmp_path, name, *defines):
    for tool in ("gcc", "valgrind"):
        if shutil.which(tool) is None:
            pytest.fail("%s is missing (./bootstrap installs it)" % tool, pytrace=False)
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    out = tmp_path / name
    subprocess.run(["gcc", "-g", "-O0", *defines, "-o", out, src], check=True,
                   timeout=60)
    return os.fspath(out)


def through_wrapper(tmp_path, program, name):
    env = dict(os.environ, DMTLS_VALGRIND_BIN=program)
    p = Proc([WRAPPER, "version"], name, str(tmp_path), env)
    assert p.strict, "the wrapper is not judged as dmtls"
    p.wait(timeout=60)
    return p


def test_valgrind_wrapper_report_fails_the_judge(tmp_path):
    p = through_wrapper(tmp_path, build(tmp_path, "faulty", "-DFAULTY"), "faulty")
    problems = judge(p)
    assert p.proc.returncode == 99, (p.proc.returncode, p.log())
    assert problems[0] == "exit status 99, expected 0 (signals sent: none)", problems
    reports = [x for x in problems if x.endswith("valgrind memcheck error begin")]
    assert len(reports) == 2, problems  # the invalid read and the leak
    log = p.log()
    assert "Invalid read of size 1" in log and "definitely lost" in log, log


def test_valgrind_wrapper_clean_run_passes_the_judge(tmp_path):
    p = through_wrapper(tmp_path, build(tmp_path, "clean"), "clean")
    assert p.proc.returncode == 0 and judge(p) == [], p.log()


def test_valgrind_report_fails_run(tmp_path):
    env = {"DMTLS_VALGRIND_BIN": build(tmp_path, "faulty", "-DFAULTY")}
    with pytest.raises(AssertionError, match="valgrind memcheck error begin"):
        run([WRAPPER, "version"], env=env, timeout=60)
