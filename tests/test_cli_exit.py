"""The console entry point ends the process promptly once TensorFlow is loaded,
with the right exit code and nothing it printed lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

# TensorFlow is imported first, so `run()` takes its `os._exit` path
_CODE = ("import sys, tensorflow\n"
         "sys.argv = ['kerascnn', *sys.argv[1:]]\n"
         "from kerascnn.cli import run\n"
         "run()\n"
         "print('not reached')\n")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CODE, *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, code, stream, needle", [
    (("summary", "--preset", "lenet5"), 0, "stdout", "Total params: 61,706"),
    (("summary", "--preset", "nope"), 2, "stderr", "Error: Unknown preset"),
])
def test_run_exits_with_the_code_and_flushes_what_it_printed(args, code, stream, needle):
    proc = _run(*args)
    assert proc.returncode == code, proc.stderr
    assert needle in getattr(proc, stream)
    assert "not reached" not in proc.stdout


def test_run_without_tensorflow_is_a_plain_exit():
    proc = subprocess.run([sys.executable, "-m", "kerascnn", "summary", "--preset", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: ")
