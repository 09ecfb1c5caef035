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
# the figures, one script each
SCRIPTS = ("efficiency", "memory", "overhead", "pipeline", "search", "finetune", "cores",
           "predict_speed", "final_augmentation")

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


def test_emit_prints_one_json_line_last_and_records_it(capsys, tmp_path):
    _common.say("human line")
    record = _common.emit("demo", ratio=2 / 3, bad=math.nan, sizes=(1, 2.123456789),
                          targets={"ratio": _common.target(">=", 0.5)}, results=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "human line"
    assert json.loads(lines[-1]) == record
    assert {k: record[k] for k in ("bench", "ratio", "bad", "sizes")} == {
        "bench": "demo", "ratio": 0.6667, "bad": None, "sizes": [1, 2.1235]}
    assert record["targets"] == {"ratio": {"op": ">=", "bound": 0.5, "applies": True}}
    assert record["met"] == {"ratio": True}
    assert record["utc"].endswith("Z") and record["command"].startswith("python ")
    _common.emit("demo", ratio=0.1, targets={"ratio": _common.target(">=", 0.5)},
                 results=tmp_path)
    recorded = _common.read_results("demo", tmp_path)
    assert [r["ratio"] for r in recorded] == [0.6667, 0.1]
    assert recorded[0] == record and recorded[1]["met"] == {"ratio": False}


@pytest.mark.parametrize("op, bound, value, met", [
    (">=", 0.97, 0.97, True), (">=", 0.97, 0.9699, False), ("<=", 1.1, 1.05, True),
    ("<=", 1.1, 1.2, False), ("within", 0.5, -0.4, True), ("within", 0.5, -0.6, False),
    (">=", 1.0, None, False), (">=", 1.0, math.nan, False)])
def test_is_met(op, bound, value, met):
    assert _common.is_met(value, _common.target(op, bound)) is met


def test_target_that_does_not_apply_is_neither_met_nor_missed(tmp_path, capsys):
    spec = _common.target(">=", 1.4, unless="no native bfloat16 here")
    assert spec["applies"] is False and _common.is_met(0.5, spec) is None
    record = _common.emit("demo", bf16_speedup=0.5, targets={"bf16_speedup": spec},
                          check=True, results=tmp_path)  # does not exit
    assert record["met"] == {"bf16_speedup": None}
    assert "not applicable" in _common.describe("bf16_speedup", 0.5, spec)


def test_target_refuses_unknown_op():
    with pytest.raises(ValueError, match="op must be one of"):
        _common.target(">", 1.0)


def test_bfloat16_applies_only_with_native_support(monkeypatch):
    monkeypatch.setattr(_common, "has_gpu", lambda: False)
    monkeypatch.setattr(_common, "cpu_flags", lambda: {"avx2", "fma"})
    assert "no native bfloat16" in _common.bfloat16_missing()
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(_common, "cpu_flags", lambda flag=flag: {"avx2", flag})
        assert _common.bfloat16_missing() is None
    monkeypatch.setattr(_common, "cpu_flags", set)
    monkeypatch.setattr(_common, "has_gpu", lambda: True)
    assert _common.bfloat16_missing() is None


TINY = """
import sys
sys.path.insert(0, {bench!r})
from _common import bench_parser, emit, target

parser = bench_parser("A tiny bench.")
parser.add_argument("--bound", type=float, default=1.0)
args = parser.parse_args()
emit("tiny", speed=2.0, quick=args.quick, targets={{"speed": target(">=", args.bound)}})
"""


@pytest.mark.parametrize("bound, code", [(1.0, 0), (1e9, 1)])
def test_check_exits_1_only_when_a_target_is_missed(tmp_path, bound, code):
    script = tmp_path / "tiny.py"
    script.write_text(TINY.format(bench=str(BENCH)))
    results = tmp_path / "results"
    run = [sys.executable, str(script), "--quick", "--bound", str(bound), "--results",
           str(results)]
    proc = subprocess.run(run + ["--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["met"] == {"speed": code == 0}
    assert ("target missed: speed 2 (target >= 1000000000.0: missed)" in proc.stderr) == bool(code)
    # recorded either way, without --results in the command shown
    assert _common.read_results("tiny", results)[-1] == record
    assert "--results" not in record["command"] and "--check" in record["command"]
    # without --check a missed target is reported, not an error
    assert subprocess.run(run, capture_output=True, timeout=60).returncode == 0


def test_results_none_records_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(_common.RESULTS_ENV, "none")
    assert _common.results_dir() is None
    monkeypatch.setenv(_common.RESULTS_ENV, str(tmp_path / "r"))
    assert _common.results_dir() == tmp_path / "r"
    assert _common.results_dir(tmp_path / "x") == tmp_path / "x"


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


def test_tabulate_writes_every_figure_with_its_command(tmp_path):
    import tabulate

    results = tmp_path / "results"
    target = _common.target(">=", 0.97)
    _common.emit("overhead", ratio=0.95, ratio_cpu=1.01, quick=True, results=results,
                 targets={"ratio": target})
    _common.emit("overhead", ratio=1.02, ratio_cpu=1.03, quick=False, results=results,
                 command="python bench/overhead.py --repeats 4", targets={"ratio": target})
    _common.emit("overhead", ratio=0.5, quick=True, results=results,
                 targets={"ratio": target})  # a later quick run: the full one is shown
    _common.emit("efficiency", bf16_speedup=1.1, fraction_of_peak=0.5, quick=True,
                 results=results, targets={
                     "fraction_of_peak": _common.target(">=", 0.6),
                     "bf16_speedup": _common.target(">=", 1.4, unless="no bf16")})
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# B\n\nbefore\n\n{tabulate.BEGIN}\nold table\n{tabulate.END}\n\nafter\n")
    argv = ["--results", str(results), "--file", str(doc)]
    assert tabulate.main(argv + ["--check"]) == 1  # out of date
    assert tabulate.main(argv) == 0
    assert tabulate.main(argv + ["--check"]) == 0
    text = doc.read_text()
    assert text.startswith("# B\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text
    assert ("| overhead | `ratio` | **1.02** | >= 0.97 | met |" in text
            and "`python bench/overhead.py --repeats 4`" in text)
    assert "| overhead | `ratio_cpu` | **1.03** |" in text and "**0.5** | >= 0.97" not in text
    # no full run: the quick one, marked, with its misses listed
    assert "| efficiency | `fraction_of_peak` | **0.5** | >= 0.6 | **missed** |" in text
    assert "| efficiency | `bf16_speedup` | **1.1** | >= 1.4 | n/a: no bf16 |" in text
    assert "(quick)" in text and "Missed in the run shown: efficiency: fraction_of_peak" in text
    assert "Nothing recorded yet in bench/results/ for: `cores`," in text


def test_tabulate_writes_the_variants_section_where_asked(tmp_path):
    import tabulate

    results = tmp_path / "results"
    _common.emit("cores_variants", runs=2, isa="AVX2", results=results, targets={},
                 slow_runs={"default": 1}, cores=2,
                 command="python bench/cores.py --variants default,tfdata-noautotune",
                 variants={"default": {"what": "defaults", "slow_runs": 1,
                                       "images_per_s": [496, 700], "median_images_per_s": 598,
                                       "median_cores_busy": 1.45, "min_cores_busy": 1.19,
                                       "median_workers_asleep": 0.25,
                                       "cores_busy": [1.19, 1.75], "workers_asleep": [0.38, 0.1]}})
    doc = tmp_path / "B.md"
    doc.write_text(f"{tabulate.BEGIN}\n{tabulate.END}\n\n{tabulate.VARIANTS_BEGIN}\nstale rows\n"
                   f"{tabulate.VARIANTS_END}\n")
    assert tabulate.main(["--results", str(results), "--file", str(doc)]) == 0
    text = doc.read_text()
    assert "| `default` | defaults | **1 of 2** | 598 | 1.45, 1.19 | 0.25 | 496, 700 |" in text
    assert "`python bench/cores.py --variants default,tfdata-noautotune`" in text
    assert "stale rows" not in text and "| cores_variants |" not in text


def test_benchmarks_md_is_generated_from_the_recorded_results():
    import tabulate

    assert tabulate.main(["--check"]) == 0, "run `python bench/tabulate.py`"


# bench scripts whose --quick run fits the slow suite and whose targets hold on --quick
# on a shared machine (efficiency's wall-clock fraction and cores.py's cores busy follow
# the machine's load; memory's target is for the 30-trial run)
CHECKED = ("pipeline",)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKED)
def test_script_quick_check_meets_its_targets(name, tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--check",
                           "--results", str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = _common.read_results(name, tmp_path)[-1]
    assert record["targets"] and all(ok is not False for ok in record["met"].values())


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
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                               _common.RESULTS_ENV: str(tmp_path / "results")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2, proc.stdout  # human-readable lines, then the JSON
    record = json.loads(lines[-1])
    # search.py names its record by data set (search, search_sample, search_digits)
    assert record["bench"] == name or record["bench"].startswith(f"{name}_")
    assert len(record) > 1
    assert isinstance(record["targets"], dict) and set(record["met"]) == set(record["targets"])


def test_cores_busy_sees_threads_work():
    import threading
    import time

    spun, release = threading.Event(), threading.Event()

    def spin(cpu_seconds):  # CPU time, not wall time: the machine may be busy
        while time.thread_time() < cpu_seconds:
            pass
        spun.set()
        release.wait()  # stay alive: a finished thread leaves /proc/self/task

    worker = threading.Thread(target=spin, args=(0.3,))
    with _common.CoresBusy() as busy:
        worker.start()
        spun.wait()
    release.set()
    worker.join()
    # one thread worked 0.3 CPU-s while the main thread waited: at most about one core
    assert busy.cpu >= 0.29 and busy.cores <= 1.2
    top_name, top_cores = busy.threads[0]
    assert top_cores * busy.wall >= 0.25  # /proc ticks are 10 ms


def test_cores_parses_variants_and_counts_slow_runs(capsys):
    import cores

    args = cores.parse_args(["--quick", "--variants", "default,tfdata-noautotune"])
    assert args.runs == 4 and args.variants == ["default", "tfdata-noautotune"]
    assert cores.parse_args([]).runs == 10
    with pytest.raises(SystemExit):
        cores.parse_args(["--variants", "default,warp-speed"])
    assert "--variants takes names from: default, inter1" in capsys.readouterr().err
    records = [{"images_per_s": ips, "cores_busy": busy, "workers_asleep": asleep,
                "machine_idle_cores": 0.0}
               for ips, busy, asleep in ((700, 1.8, 0.1), (496, 1.2, 0.38), (710, 1.85, 0.09),
                                         (600, 1.3, 0.12))]  # last: waited for a CPU
    summary = cores.summarize("keras", records, cores=2)
    assert summary["slow_runs"] == 1 and summary["median_images_per_s"] == 650
    assert summary["min_cores_busy"] == 1.2 and summary["cores_busy"] == [1.8, 1.2, 1.85, 1.3]
