"""A clean terminal (issue 14): TensorFlow's C++ start-up lines stay hidden.

Real processes, as a user runs them, with no `TF_CPP_MIN_LOG_LEVEL` set:
`kerascnn train` and `kerascnn tune` on tiny data print kerascnn's own
progress lines and errors, and no absl / TensorFlow C++ line; with `-v` the
TensorFlow lines come back (when this TensorFlow prints any).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# absl's format (I0000 00:00:... file.cc:12] ...) and TensorFlow's usual start-up notes
NOISE = [re.compile(p) for p in (r"^[IWEF]\d{4} ", r"oneDNN", r"cuda", r"cuInit", r"TF-TRT",
                                 r"absl::InitializeLog", r"cpu_feature_guard",
                                 r"rebuild TensorFlow", r"AutoGraph", r"^WARNING:tensorflow",
                                 r"tf\.function retracing")]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kerascnn", *args], capture_output=True,
                          text=True, env=_env(), timeout=timeout)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(p.search(line) for p in NOISE)]


@pytest.fixture(scope="module")
def tiny(sample_npz) -> Path:
    """Real Fashion-MNIST images from the bundled sample (conftest's `sample_npz`)."""
    return sample_npz


def test_train_prints_no_tensorflow_start_up_line(tiny, tmp_path):
    out = tmp_path / "run"
    proc = _run("train", "--dataset", str(tiny), "--conv-blocks", "1", "--filters", "4",
                "--dense-units", "none", "--epochs", "1", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _noise(proc.stderr) == [], proc.stderr
    assert "Trained 1 epochs" in proc.stdout  # kerascnn's own lines stay
    assert "Dataset " in proc.stderr and "epoch 1/1" in proc.stderr
    # an error found after TensorFlow started is one line, with nothing around it
    again = _run("train", "--dataset", str(tiny), "--conv-blocks", "1", "--filters", "4",
                 "--output-dir", str(out))
    assert again.returncode == 2, again.stderr
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--overwrite" in lines[0], lines
    # -v brings TensorFlow's lines back, when it printed any: the run's manifest counts
    # the lines runtime.start() hid
    hidden = json.loads((out / "manifest.json").read_text())["runtime"]["startup_lines_hidden"]
    verbose = _run("train", "--dataset", str(tiny), "--conv-blocks", "1", "--filters", "4",
                   "--output-dir", str(out), "-v")
    assert verbose.returncode == 2, verbose.stderr
    if hidden:
        assert _noise(verbose.stderr), verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[0]


def test_tune_prints_no_tensorflow_start_up_line(tiny, tmp_path):
    proc = _run("tune", "--dataset", str(tiny), "--tuner", "random", "--max-trials", "1",
                "--epochs", "1", "--time-budget", "20s", "--directory", str(tmp_path),
                "--project-name", "p")
    assert proc.returncode == 0, proc.stderr
    assert _noise(proc.stderr) == [], proc.stderr
    assert re.search(r"^trial 1\b.*val_accuracy", proc.stderr, re.M), proc.stderr  # progress
    assert "Best model:" in proc.stdout
