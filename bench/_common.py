"""Shared helpers for the `bench/*.py` scripts.

Every bench script prints human-readable lines, then, last, ONE JSON line
`{"bench": NAME, ...}` with its figures. The machines these run on are shared
and noisy, so figures are ratios and medians measured inside one run:

    from _common import bench_parser, emit, median, repeat_timed, say

    parser = bench_parser(__doc__)          # has --quick and --repeats
    args = parser.parse_args()
    seconds = repeat_timed(step, repeats=args.repeats, warmup=1)
    say(f"step: {median(seconds) * 1e3:.1f} ms (median of {len(seconds)})")
    emit("mybench", step_ms=median(seconds) * 1e3, quick=args.quick)

Import it from a script in `bench/` as `from _common import ...` (Python puts
the script's folder first on `sys.path`), or from elsewhere after
`sys.path.insert(0, "bench")`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def bench_parser(doc: str | None, *, repeats: int = 5, quick_repeats: int = 3
                 ) -> argparse.ArgumentParser:
    """An argument parser with `--quick` and `--repeats`.

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
        return args

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


def emit(name: str, **figures: Any) -> dict[str, Any]:
    """Print the final JSON line `{"bench": name, **figures}` and return it.

    Floats are rounded to 4 decimals; NaN and infinities become `null`.
    """
    record = {"bench": name, **_clean(figures)}
    print(json.dumps(record, sort_keys=False), flush=True)
    return record
