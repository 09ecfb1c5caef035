"""The benchmark scripts: shared helpers (fast) and every script's `--quick` run (slow)."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# the figures, one script each (predict_speed.py predates the suite and has no --quick)
SCRIPTS = ("efficiency", "memory", "overhead", "pipeline", "search", "finetune")

sys.path.insert(0, str(BENCH))

import _common  # noqa: E402


def test_parser_repeats_follow_quick():
    parser = _common.bench_parser("Title line.\n\nMore.", repeats=7, quick_repeats=2)
    assert parser.description == "Title line."
    assert parser.parse_args([]).repeats == 7
    args = parser.parse_args(["--quick"])
    assert args.quick and args.repeats == 2
    assert parser.parse_args(["--quick", "--repeats", "4"]).repeats == 4


def test_parser_refuses_zero_repeats(capsys):
    with pytest.raises(SystemExit):
        _common.bench_parser(None).parse_args(["--repeats", "0"])
    assert "--repeats must be at least 1. Received: 0" in capsys.readouterr().err


def test_emit_prints_one_json_line_last(capsys):
    _common.say("human line")
    record = _common.emit("demo", ratio=2 / 3, bad=math.nan, sizes=(1, 2.123456789))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "human line"
    assert json.loads(lines[-1]) == record == {"bench": "demo", "ratio": 0.6667, "bad": None,
                                               "sizes": [1, 2.1235]}


def test_median_spread_and_timing():
    assert _common.median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(_common.median([]))
    assert _common.spread([1.0, 2.0, 3.0]) == 1.0
    calls = []
    seconds = _common.repeat_timed(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds) == 3 and all(s >= 0 for s in seconds)


def test_rss_and_machine():
    assert 1 < _common.rss_mib() < 1 << 20
    info = _common.machine()
    assert info["cores"] >= 1 and info["cpu"]


def test_efficiency_refuses_too_few_steps(capsys):
    import efficiency

    with pytest.raises(SystemExit):
        efficiency.parse_args(["--steps", "10", "--chunk", "10"])
    assert "--steps must be at least twice --chunk" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_script_quick_ends_with_json(name, tmp_path):
    script = BENCH / f"{name}.py"
    if not script.exists():
        pytest.skip(f"bench/{name}.py is not written yet")
    weights = BENCH.parent.parent / "shared" / "weights" / "mobilenet_v2_imagenet_notop.weights.h5"
    if name == "finetune" and not weights.is_file():
        pytest.skip(f"bench/finetune.py needs the shared ImageNet weights: {weights} is absent")
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2, proc.stdout  # human-readable lines, then the JSON
    record = json.loads(lines[-1])
    assert record["bench"] == name
    assert len(record) > 1
