"""Shared helpers for the `bench/*.py` scripts.

Every bench script prints human-readable lines, then, last, ONE JSON line
`{"bench": NAME, ...}` with its figures, its `targets` and a `met` flag per
target. The machines these run on are shared and noisy, so figures are ratios
and medians measured inside one run:

    from _common import bench_parser, emit, median, repeat_timed, say, target

    parser = bench_parser(__doc__)          # --quick, --repeats, --check, --results
    args = parser.parse_args()
    seconds = repeat_timed(step, repeats=args.repeats, warmup=1)
    say(f"step: {median(seconds) * 1e3:.1f} ms (median of {len(seconds)})")
    emit("mybench", step_ms=median(seconds) * 1e3, quick=args.quick,
         targets={"step_ms": target("<=", 5.0)})

`emit` also appends the JSON line to `bench/results/NAME.jsonl` (one JSON
object per line, oldest first; `--results DIR` or the environment variable
`KERASCNN_BENCH_RESULTS` choose another folder, `--results none` writes
nothing), which `bench/tabulate.py` turns into BENCHMARKS.md's table. With
`--check`, `emit` exits with status 1 when a target that applies on this
hardware was missed.

Import it from a script in `bench/` as `from _common import ...` (Python puts
the script's folder first on `sys.path`), or from elsewhere after
`sys.path.insert(0, "bench")`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_ENV = "KERASCNN_BENCH_RESULTS"
OPS = (">=", "<=", "within")

# what the last `parse_args` of a bench parser asked for (`emit` reads it)
_OPTIONS: dict[str, Any] = {"check": False, "results": None}


def add_bench_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--check` and `--results` to a script's own parser.

    `bench_parser` adds them already; a script with its own `ArgumentParser`
    calls this, then `use_options(args)` after parsing.
    """
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target that applies on this "
                             "hardware is missed")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help=f"append the JSON line to DIR/NAME.jsonl (default "
                             f"${RESULTS_ENV} or bench/results; 'none': do not record)")
    return parser


def use_options(args: argparse.Namespace) -> argparse.Namespace:
    """Remember `--check` / `--results` of parsed `args` for `emit`."""
    _OPTIONS["check"] = bool(getattr(args, "check", False))
    _OPTIONS["results"] = getattr(args, "results", None)
    return args


def bench_parser(doc: str | None, *, repeats: int = 5, quick_repeats: int = 3
                 ) -> argparse.ArgumentParser:
    """An argument parser with `--quick`, `--repeats`, `--check` and `--results`.

    `--repeats` defaults to `repeats`, or `quick_repeats` with `--quick`
    (resolved by `parse_args`: a value of `None` means "not given").
    """
    parser = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        epilog="The last line printed is one JSON object with the figures.")
    parser.add_argument("--quick", action="store_true",
                        help="a small run for routine checks (about a minute on 2 cores)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"repetitions per measurement, the median is kept "
                             f"(default {repeats}, {quick_repeats} with --quick)")
    add_bench_options(parser)
    parser.set_defaults(_repeats=(repeats, quick_repeats))
    original = parser.parse_args

    def parse_args(argv: Sequence[str] | None = None, namespace=None):
        args = original(argv, namespace)
        full, quick = args._repeats
        del args._repeats
        if args.repeats is None:
            args.repeats = quick if args.quick else full
        if args.repeats < 1:
            parser.error(f"--repeats must be at least 1. Received: {args.repeats}")
        return use_options(args)

    parser.parse_args = parse_args  # type: ignore[method-assign]
    return parser


def median(values: Sequence[float]) -> float:
    """The median (NaN for an empty sequence)."""
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else math.nan


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how noisy the repetitions were."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return 0.0
    m = statistics.median(values)
    return float((max(values) - min(values)) / m) if m else math.nan


def repeat_timed(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> list[float]:
    """Call `fn` `warmup` times untimed, then `repeats` times; wall seconds of each."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def rss_mib() -> float:
    """Resident memory of this process in MiB (`VmRSS` of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (not Linux?)")


def machine() -> dict[str, Any]:
    """CPU model, core count, load average and library versions, for the record."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(),
                            "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    for name in ("tensorflow", "keras"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    return info


def say(text: str = "") -> None:
    """One human-readable line, flushed at once (the JSON line comes last)."""
    print(text, flush=True)


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_gpu() -> bool:
    """Whether TensorFlow (if this process imported it) sees a GPU."""
    tf = sys.modules.get("tensorflow")
    try:
        return bool(tf is not None and tf.config.list_physical_devices("GPU"))
    except Exception:  # an odd TensorFlow build: treat as no GPU
        return False


def bfloat16_missing() -> str | None:
    """None where bfloat16 is native (AVX-512 BF16 or AMX, or a GPU); else why not.

    Use as `target(">=", 1.4, unless=bfloat16_missing())`: a bfloat16 speed-up
    target does not apply on a CPU that emulates bfloat16.
    """
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"} or has_gpu():
        return None
    return "no native bfloat16 here (no avx512_bf16 or amx_bf16 CPU flag, no GPU)"


def target(op: str, bound: float, *, unless: str | None = None) -> dict[str, Any]:
    """A target for one figure: `op` is ">=", "<=" or "within" (|figure| <= bound).

    `unless`: a reason the target does not apply on this hardware (then its
    `met` is null and `--check` ignores it), e.g. `bfloat16_missing()`.
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}. Received: op={op!r}")
    record: dict[str, Any] = {"op": op, "bound": bound, "applies": unless is None}
    if unless is not None:
        record["why_not"] = unless
    return record


def is_met(value: Any, spec: dict[str, Any]) -> bool | None:
    """True/False for a figure against a `target(...)`; None if it does not apply
    or the figure is missing (a missing figure counts as missed by `--check`)."""
    if not spec.get("applies", True):
        return None
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    op, bound = spec["op"], spec["bound"]
    if op == ">=":
        return bool(value >= bound)
    if op == "<=":
        return bool(value <= bound)
    return bool(abs(value) <= bound)


def describe(name: str, value: Any, spec: dict[str, Any]) -> str:
    """"ratio 0.95 (target >= 0.97: missed)" for a human line."""
    shown = "missing" if value is None else (f"{value:.4g}" if isinstance(value, float)
                                             else str(value))
    verdict = {True: "met", False: "missed", None: "not applicable"}[is_met(value, spec)]
    note = f"; {spec['why_not']}" if spec.get("why_not") else ""
    return f"{name} {shown} (target {spec['op']} {spec['bound']}: {verdict}{note})"


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each thread of this process: {tid: (name, seconds)}."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="utf-8") as f:
                text = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()
        out[int(tid)] = (text[text.index("(") + 1:text.rindex(")")],
                         (int(fields[11]) + int(fields[12])) / ticks)
    return out


class CoresBusy:
    """Process CPU time / wall time over a stretch of code: how many cores worked.

    On an idle 2-core machine a well-parallelised step gives about 1.8-2.0;
    the slow mode of issue 15 about 1.2. `threads` lists the busiest threads
    (name, cores) over the same stretch.

        with CoresBusy() as busy:
            model.fit(...)
        busy.cores, busy.threads
    """

    def __enter__(self) -> "CoresBusy":
        self._threads = thread_cpu_seconds()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.cores = self.cpu / self.wall if self.wall > 0 else math.nan
        after = thread_cpu_seconds()
        busy = [(name, (seconds - self._threads.get(tid, (name, 0.0))[1]) / self.wall)
                for tid, (name, seconds) in after.items()] if self.wall > 0 else []
        self.threads = sorted(((n, round(c, 2)) for n, c in busy if c >= 0.01),
                              key=lambda item: -item[1])


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def command_line() -> str:
    """How this script was started, as a reader would type it (without --results)."""
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--results":
            skip = True
            continue
        if arg.startswith("--results="):
            continue
        argv.append(arg)
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("?")
    shown = f"bench/{script.name}" if script.parent.name == "bench" else str(script)
    return " ".join(["python", shown, *map(shlex.quote, argv)])


def results_dir(results: str | os.PathLike | None = None) -> Path | None:
    """Where `emit` appends: `results`, else `--results`, else $KERASCNN_BENCH_RESULTS,
    else bench/results; None for 'none' (do not record)."""
    chosen = results if results is not None else _OPTIONS.get("results")
    if chosen is None:
        chosen = os.environ.get(RESULTS_ENV) or RESULTS
    if str(chosen).lower() in ("none", ""):
        return None
    return Path(chosen)


def read_results(name: str, folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every JSON line recorded for bench `name`, oldest first."""
    path = Path(folder or RESULTS) / f"{name}.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def emit(name: str, *, targets: dict[str, dict[str, Any]] | None = None,
         check: bool | None = None, results: str | os.PathLike | None = None,
         **figures: Any) -> dict[str, Any]:
    """Print the final JSON line `{"bench": name, **figures, targets, met}`, record it,
    and with `--check` exit 1 when a target was missed.

    Floats are rounded to 4 decimals; NaN and infinities become `null`.
    `targets` maps a figure's name to `target(...)`; `met` maps it to true,
    false, or null (the target does not apply on this hardware). The record
    also gets `utc`, `command` and `load_avg_1m` unless the figures give them.
    The line is appended to `results_dir()/NAME.jsonl`. `check` (default: the
    script's `--check`) makes a missed target exit with status 1, after the
    line is printed and recorded, with one line per missed target on stderr.
    """
    targets = dict(targets or {})
    for key, spec in targets.items():
        if not isinstance(spec, dict) or spec.get("op") not in OPS:
            raise ValueError(f"targets[{key!r}] must come from target(...). "
                             f"Received: {spec!r}")
    cleaned = _clean(figures)
    met = {key: is_met(cleaned.get(key), spec) for key, spec in targets.items()}
    record: dict[str, Any] = {"bench": name, **cleaned}
    record.setdefault("utc", datetime.datetime.now(datetime.timezone.utc)
                      .strftime("%Y-%m-%dT%H:%M:%SZ"))
    record.setdefault("command", command_line())
    if "load_avg_1m" not in record:
        with contextlib.suppress(OSError):
            record["load_avg_1m"] = round(os.getloadavg()[0], 2)
    record["targets"] = _clean(targets)
    record["met"] = met
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    folder = results_dir(results)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")
    if check if check is not None else _OPTIONS.get("check"):
        missed = [describe(k, cleaned.get(k), targets[k]) for k, ok in met.items()
                  if ok is False]
        if missed:
            for text in missed:
                print(f"{name}: target missed: {text}", file=sys.stderr, flush=True)
            raise SystemExit(1)
    return record
