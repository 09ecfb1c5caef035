"""Resident memory of a long `kerascnn.tune` search: does it grow trial after trial?

Runs a real random search (kerascnn's default search space) on a slice of the
bundled Fashion-MNIST sample, one short epoch per trial so that many trials
are fast, and reads this process's resident memory (`VmRSS` of
/proc/self/status) as each trial is reported. Every trial builds, compiles and
trains a fresh Keras model; whatever a trial leaves behind (graphs, traced
functions, layers, callbacks) shows up as growth.

- `growth`: RSS after the last trial / RSS after the early trial
  (target <= 1.10 for trial 5 vs trial 30; `--quick` compares 3 and 10 and its
  target does not apply: resident memory is still settling that early)

    python bench/memory.py [--quick] [--trials 30] [--early 5]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import bench_parser, emit, machine, rss_mib, say, target  # noqa: E402


class _TrialWatcher(logging.Handler):
    """Reads RSS whenever kerascnn.tuning logs its per-trial progress line."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.rss: list[float] = []
        self.times: list[float] = []
        self.start = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("kerascnn.tuning") and record.getMessage().startswith("trial "):
            self.rss.append(rss_mib())
            self.times.append(time.perf_counter() - self.start)
            say(f"  trial {len(self.rss):2d}: RSS {self.rss[-1]:7.1f} MiB, "
                f"{self.times[-1]:6.1f} s  ({record.getMessage()})")


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, repeats=1, quick_repeats=1)
    parser.add_argument("--trials", type=int, default=None,
                        help="trials in the search (default 30, 10 with --quick)")
    parser.add_argument("--early", type=int, default=None,
                        help="the early trial compared with the last (default 5, 3 with --quick)")
    parser.add_argument("--batches", type=int, default=8,
                        help="training batches of 128 images per trial epoch (default 8)")
    args = parser.parse_args(argv)
    trials = args.trials or (10 if args.quick else 30)
    early = args.early or (3 if args.quick else 5)
    if not 1 <= early < trials:
        parser.error(f"--early must be at least 1 and below --trials. "
                     f"Received: --early {early} --trials {trials}")

    start_rss = rss_mib()
    import keras
    import tensorflow as tf

    import kerascnn

    info = machine()
    say(f"machine: {info['cpu']}, {info['cores']} cores, load {info.get('load_avg_1m', '?')}, "
        f"tensorflow {tf.__version__}, keras {keras.__version__}")
    bundle = kerascnn.load_dataset("fashion_mnist_sample", batch_size=128, seed=0)
    bundle = dataclasses.replace(
        bundle, train=bundle.train.take(args.batches), validation=bundle.validation.take(2),
        num_train=min(bundle.num_train, 128 * args.batches),
        num_validation=min(bundle.num_validation, 256))
    say(f"search: random tuner, default space, {trials} trials of 1 epoch on "
        f"{bundle.num_train} images ({args.batches} batches), validation on "
        f"{bundle.num_validation}; RSS before importing TensorFlow {start_rss:.0f} MiB, "
        f"after loading data {rss_mib():.0f} MiB")

    watcher = _TrialWatcher()
    tuning_logger = logging.getLogger("kerascnn.tuning")
    tuning_logger.addHandler(watcher)
    previous_level = tuning_logger.level
    tuning_logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = kerascnn.tune(bundle, tuner="random", max_trials=trials, epochs=1,
                                   time_budget=None,
                                   patience=0, directory=tmp, project_name="memory",
                                   seed=0, verbose=0, command_line=["bench/memory.py"])
    finally:
        tuning_logger.removeHandler(watcher)
        tuning_logger.setLevel(previous_level)
    seconds = time.perf_counter() - started
    end_rss = rss_mib()

    rss = watcher.rss
    if len(rss) < trials:
        raise RuntimeError(f"only {len(rss)} of {trials} trials were reported; did the "
                           f"progress line of kerascnn.tuning change?")
    early_rss, last_rss = rss[early - 1], rss[trials - 1]
    growth = last_rss / early_rss
    # MiB per trial over the second half: a steady leak shows as a positive slope
    half = rss[trials // 2 - 1:trials]
    per_trial = (half[-1] - half[0]) / max(1, len(half) - 1)
    say(f"RSS after trial {early}: {early_rss:.1f} MiB; after trial {trials}: "
        f"{last_rss:.1f} MiB; growth {growth:.3f} (target <= 1.10); "
        f"{per_trial:+.2f} MiB per trial over the second half; "
        f"after tune() returned {end_rss:.1f} MiB")
    say(f"{trials} trials in {seconds:.0f} s ({seconds / trials:.1f} s per trial); best "
        f"test accuracy {result.test_accuracy:.3f}")
    return emit("memory", growth=growth, rss_early_mib=early_rss, rss_last_mib=last_rss,
                early_trial=early, trials=trials, mib_per_trial_second_half=per_trial,
                rss_after_tune_mib=end_rss, rss_per_trial_mib=[round(r, 1) for r in rss],
                seconds_per_trial=seconds / trials, quick=args.quick,
                load_avg_1m=machine().get("load_avg_1m"),
                # 10 trials: RSS still jumps as caches fill (trial 3 is too early a base)
                targets={"growth": target("<=", 1.10, unless=(
                    "--quick: 10 trials, resident memory still settling; the claim is the "
                    "30-trial run" if args.quick else None))})


if __name__ == "__main__":
    main()
