"""Every core, every time: fresh training processes, kerascnn against plain Keras.

Issue 15: a CPU training process lands, for its whole life, in a fast mode
(about 1.8-1.9 of 2 cores busy) or a slow one (about 1.2 cores busy, ~30% fewer
images per second). One process says little, so this script starts `--runs`
fresh processes of each side, interleaved (kerascnn, Keras, Keras, kerascnn,
...), so that a change in the machine's load hits both:

* `kerascnn`: `kerascnn.train` (its defaults, `kerascnn.runtime`'s settings)
  of a VGG-style network (three blocks of two 3x3 convolutions, 32-64-128
  filters, max pooling, one dense layer of 128) on 32x32x3 images, batch 128;
  the second epoch's training part is timed (the first one traces).
* `keras`: the issue's script: the same layers in plain Keras with
  TensorFlow's and Keras's defaults, `model.fit` on numpy arrays, a warm-up
  fit of 640 images, then one timed epoch.

Both train on `--images` random images (5,120 by default, as in the issue).
Per run: images/s, cores busy (process CPU time / wall time over the timed
part), the idle CPU of the whole machine meanwhile (a low cores-busy figure with
no idle CPU means other jobs had the cores, not the slow mode), and the
busiest threads. A run is in the slow mode when it kept fewer than 0.75 x the
usable cores busy (1.5 of 2) because its workers slept (`workers_asleep`, below,
at least 0.25): on a loaded machine a low figure can also come from waiting
for a CPU, which is not the slow mode.

Figures: `kerascnn_median_images_per_s`, `keras_median_images_per_s`, `ratio`
(kerascnn / Keras medians; target >= 1.0), `kerascnn_slow_runs`,
`keras_slow_runs`, `runs`, and `kerascnn_min_cores_busy` (target >= 0.85 x the
usable cores: 1.7 on 2 cores).

    python bench/cores.py [--quick] [--runs 10] [--images 5120] [--isa AVX2]
        [--priority] [--variants default,inter1,tfdata-noautotune,...]

`--variants`: what was tried to find the cause. Instead of kerascnn against
Keras, runs the issue's plain-Keras script under each named variant (thread
pools, oneDNN's caller thread, tf.data experiments and autotuning,
steps_per_execution; `--help` lists them), interleaved, and
records `cores_variants` (slow runs per variant) in
bench/results/cores_variants.jsonl. Per run it also reports `workers_asleep`:
the share of the time the two busiest threads were neither on a CPU nor
waiting for one (from /proc/self/task/*/schedstat). Waiting for a CPU is what
other jobs cause; sleeping is what the slow mode does, so this figure tells the
modes apart even on a loaded machine (about 0.1 fast, 0.35-0.4 slow).

`--quick`: 4 runs per side. `--isa AVX2` caps oneDNN at AVX2
(`ONEDNN_MAX_CPU_ISA`), to reproduce the issue's AVX2 machine on a newer CPU;
such runs are recorded as `cores_avx2`.
`--priority` (root, Linux autogroups): start each run in its own session with
autogroup nice -15, so that on a shared machine the runs get the cores they
ask for and the idle time they leave shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (CoresBusy, bench_parser, emit, machine, median, say,  # noqa: E402
                     target)

SLOW_FRACTION = 0.75
ASLEEP = 0.25
FLOOR_FRACTION = 0.85


def is_slow(record: dict, cores: int) -> bool:
    """The slow mode: fewer than 0.75 x the cores busy BECAUSE the workers sleep.

    On an idle machine a low cores-busy figure can only mean sleeping workers;
    on a loaded one it can also mean waiting for a CPU, which is not the mode.
    """
    return (record["cores_busy"] < SLOW_FRACTION * cores
            and record["workers_asleep"] >= ASLEEP)

# what `--variants` can compare: plain Keras (the script) with one change each
VARIANTS = {
    "default": "TensorFlow's and Keras's defaults, model.fit on numpy arrays",
    "inter1": "tf.config.threading.set_inter_op_parallelism_threads(1)",
    "intra2-inter1": "intra-op threads = cores, inter-op 1",
    "caller-thread": "TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=true",
    "data-opt-out": "TF_DATA_EXPERIMENT_OPT_OUT=all (no tf.data experiments)",
    "steps-per-execution": "compile(steps_per_execution=8)",
    "tfdata-autotune": "tf.data: from_tensor_slices, batch, prefetch(AUTOTUNE)",
    "tfdata-fixed": "tf.data: prefetch(2), autotuning on (TensorFlow's default)",
    "tfdata-noautotune": "tf.data: prefetch(AUTOTUNE), options.autotune.enabled = False",
}
VARIANT_ENV = {"caller-thread": {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "true"},
               "data-opt-out": {"TF_DATA_EXPERIMENT_OPT_OUT": "all"}}


def parse_args(argv=None):
    import argparse

    parser = bench_parser(__doc__, repeats=10, quick_repeats=4)
    parser.add_argument("--runs", type=int, default=None,
                        help="fresh processes per side (default 10, 4 with --quick)")
    parser.add_argument("--images", type=int, default=5120,
                        help="training images per timed epoch (default 5120)")
    parser.add_argument("--isa", default=None,
                        help="cap oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), e.g. AVX2")
    parser.add_argument("--priority", action="store_true",
                        help="run each process in its own autogroup with nice -15 (root)")
    parser.add_argument("--variants", default=None,
                        help="instead of kerascnn vs Keras: plain Keras under each of these "
                             "comma-separated variants, interleaved: " + ", ".join(VARIANTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.runs = args.runs or args.repeats
    if args.runs < 1 or args.images < 256:
        parser.error(f"--runs must be at least 1 and --images at least 256. "
                     f"Received: --runs {args.runs} --images {args.images}")
    if args.variants is not None:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown or not args.variants:
            parser.error(f"--variants takes names from: {', '.join(VARIANTS)}. "
                         f"Received: --variants {','.join(args.variants)}")
    return args


def machine_stat() -> list[int]:
    with open("/proc/stat", encoding="ascii") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def thread_schedstat() -> dict[int, tuple[int, int]]:
    """{tid: (ns on a CPU, ns runnable but waiting for one)} of this process's threads."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                run, wait = f.read().split()[:2]
            out[int(tid)] = (int(run), int(wait))
        except (OSError, ValueError):
            continue
    return out


class Window:
    """Cores busy, machine idle CPU and busiest threads over a stretch of code."""

    def __enter__(self):
        self._stat = machine_stat()
        self._sched = thread_schedstat()
        self._busy = CoresBusy().__enter__()
        return self

    def __exit__(self, *exc):
        self._busy.__exit__(*exc)
        sched = thread_schedstat()
        wall_ns = self._busy.wall * 1e9
        shares = sorted(((run - self._sched.get(t, (0, 0))[0]) / wall_ns,
                         (wait - self._sched.get(t, (0, 0))[1]) / wall_ns)
                        for t, (run, wait) in sched.items())[-2:]
        # the two busiest threads (the intra-op workers): the share of the time they were
        # neither on a CPU nor waiting for one, i.e. asleep. About 0.1 in the fast mode,
        # 0.35-0.4 in the slow one, whatever the machine's load (waiting is not sleeping)
        self.workers_asleep = sum(1 - r - w for r, w in shares) / max(1, len(shares))
        stat = machine_stat()
        delta = [b - a for a, b in zip(self._stat, stat)]
        total = sum(delta) or 1
        self.seconds = self._busy.wall
        self.cores_busy = self._busy.cores
        self.machine_idle_cores = (os.cpu_count() or 1) * (delta[3] + delta[4]) / total
        self.threads = self._busy.threads[:4]


def child_keras(images: int, variant: str = "default") -> dict:
    """The issue's script: plain Keras with TensorFlow's defaults (or one `variant`)."""
    import numpy as np
    import tensorflow as tf
    import keras
    from keras import layers

    if variant in ("inter1", "intra2-inter1"):
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if variant == "intra2-inter1":
        tf.config.threading.set_intra_op_parallelism_threads(len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(0)
    x = rng.random((images, 32, 32, 3), dtype="float32")
    y = rng.integers(0, 10, images)
    convs = [layer for f in (32, 64, 128)
             for layer in (layers.Conv2D(f, 3, padding="same", activation="relu"),
                           layers.Conv2D(f, 3, padding="same", activation="relu"),
                           layers.MaxPooling2D())]
    model = keras.Sequential([keras.Input((32, 32, 3)), *convs, layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=8 if variant == "steps-per-execution" else 1)

    def fit(n):
        if not variant.startswith("tfdata"):
            model.fit(x[:n], y[:n], batch_size=128, epochs=1, verbose=0)
            return
        ds = tf.data.Dataset.from_tensor_slices((x[:n], y[:n])).batch(128)
        ds = ds.prefetch(2 if variant == "tfdata-fixed" else tf.data.AUTOTUNE)
        if variant == "tfdata-noautotune":
            options = tf.data.Options()
            options.autotune.enabled = False
            ds = ds.with_options(options)
        model.fit(ds, epochs=1, verbose=0)

    fit(640)
    with Window() as window:
        fit(images)
    return {"window": window, "settings": {"variant": variant}}


def child_kerascnn(images: int) -> dict:
    """`kerascnn.train` with its defaults on the same network and the same amount of data."""
    import numpy as np

    from kerascnn import runtime

    runtime.start()
    import keras

    import kerascnn

    class TimeSecondEpoch(keras.callbacks.Callback):
        window = None

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.window = Window().__enter__()

        def on_test_begin(self, logs=None):  # the epoch's training part ends here
            self._close()

        def on_epoch_end(self, epoch, logs=None):
            self._close()

        def _close(self):
            if self.window is not None and not hasattr(self.window, "seconds"):
                self.window.__exit__(None, None, None)

    rng = np.random.default_rng(0)
    total = int(round(images / 0.9))  # validation_split 0.1 leaves `images` to train on
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "random.npz"
        np.savez(data, x_train=rng.integers(0, 256, (total, 32, 32, 3), dtype=np.uint8),
                 y_train=rng.integers(0, 10, total),
                 x_test=rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8),
                 y_test=rng.integers(0, 10, 128))
        spec = kerascnn.CNNSpec(input_shape=(32, 32, 3), num_classes=10, conv_blocks=3,
                                convs_per_block=2, filters=(32, 64, 128))
        timer = TimeSecondEpoch()
        kerascnn.train(spec, dataset=str(data), epochs=2, batch_size=128,
                       validation_split=0.1, early_stopping=None, seed=0, callbacks=[timer])
    return {"window": timer.window, "settings": runtime.settings(), "images": images}


def run_child(side: str, args) -> dict:
    """One fresh process of `side` ("kerascnn" or "keras:VARIANT"); its JSON line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + env.get("PYTHONPATH", "").split(os.pathsep))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(VARIANT_ENV.get(side.partition(":")[2], {}))
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side,
               "--images", str(args.images), "--results", "none"]

    def priority():
        os.setsid()
        try:
            with open("/proc/self/autogroup", "w", encoding="ascii") as f:
                f.write("-15")
        except OSError:
            pass

    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800,
                          preexec_fn=priority if args.priority else None)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side} run failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(args) -> None:
    side, _, variant = args.child.partition(":")
    out = (child_kerascnn(args.images) if side == "kerascnn"
           else child_keras(args.images, variant or "default"))
    window = out["window"]
    print(json.dumps({
        "images_per_s": args.images / window.seconds, "cores_busy": window.cores_busy,
        "workers_asleep": window.workers_asleep,
        "machine_idle_cores": window.machine_idle_cores, "threads": window.threads,
        "seconds": window.seconds, "settings": out["settings"]}))


def measure(sides: list[str], args, cores: int) -> dict[str, list[dict]]:
    """`args.runs` fresh processes of each side, interleaved, the order rotating."""
    slow_below = SLOW_FRACTION * cores
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(args.runs):
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for side in order:
            started = time.perf_counter()
            record = run_child(side, args)
            runs[side].append(record)
            mode = ""
            if is_slow(record, cores):
                mode = " (slow mode)"
            elif record["cores_busy"] < slow_below:
                mode = " (low, but its threads waited for a CPU: other jobs had it)"
            top = ", ".join(f"{name} {c:.2f}" for name, c in record["threads"][:3])
            say(f"run {i + 1:2d} {side:24s}: {record['images_per_s']:7.0f} images/s, "
                f"cores busy {record['cores_busy']:.2f}{mode}; workers asleep "
                f"{record['workers_asleep']:.2f}; machine idle "
                f"{record['machine_idle_cores']:.2f} cores; threads: {top}; process "
                f"{time.perf_counter() - started:.0f} s")
    return runs


def summarize(name: str, records: list[dict], cores: int) -> dict:
    slow_below = SLOW_FRACTION * cores
    rates = [r["images_per_s"] for r in records]
    busy = [r["cores_busy"] for r in records]
    slow = sum(is_slow(r, cores) for r in records)
    say(f"{name:24s}: median {median(rates):.0f} images/s (min {min(rates):.0f}, max "
        f"{max(rates):.0f}); cores busy median {median(busy):.2f}, min {min(busy):.2f}; "
        f"workers asleep median {median([r['workers_asleep'] for r in records]):.2f}; "
        f"{slow} of {len(records)} runs in the slow mode (< {slow_below:.2f} cores busy, "
        f"workers asleep >= {ASLEEP})")
    return {"median_images_per_s": median(rates), "median_cores_busy": median(busy),
            "min_cores_busy": min(busy), "slow_runs": slow,
            "median_workers_asleep": median([r["workers_asleep"] for r in records]),
            "images_per_s": [round(r) for r in rates],
            "cores_busy": [round(b, 2) for b in busy],
            "workers_asleep": [round(r["workers_asleep"], 2) for r in records],
            "machine_idle_cores": [round(r["machine_idle_cores"], 2) for r in records]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = machine()
    load_start = os.getloadavg()
    sides = [f"keras:{v}" for v in args.variants] if args.variants else ["kerascnn", "keras"]
    say(f"machine: {info['cpu']}, {cores} usable cores, load {load_start[0]:.2f} "
        f"{load_start[1]:.2f} {load_start[2]:.2f}; {args.runs} fresh processes of each of "
        f"{', '.join(sides)}; {args.images} images per timed epoch, batch 128"
        + (f", oneDNN capped at {args.isa}" if args.isa else "")
        + (", autogroup priority" if args.priority else ""))
    runs = measure(sides, args, cores)
    load_end = os.getloadavg()
    common = {"runs": args.runs, "images": args.images, "isa": args.isa or "native",
              "priority": args.priority, "cores": cores, "quick": args.quick,
              "load_avg_start": [round(v, 2) for v in load_start],
              "load_avg_1m": round(load_end[0], 2)}
    if args.variants:
        figures = {}
        for side in sides:
            summary = summarize(side, runs[side], cores)
            variant = side.partition(":")[2]
            figures[variant] = {"what": VARIANTS[variant], **summary}
        say(f"load average {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end")
        slow = {v: f["slow_runs"] for v, f in figures.items()}
        return emit("cores_variants", slow_runs=slow, variants=figures, **common, targets={})
    figures = {}
    for side in sides:
        for key, value in summarize(side, runs[side], cores).items():
            figures[f"{side}_{key}"] = value
    ratio = figures["kerascnn_median_images_per_s"] / figures["keras_median_images_per_s"]
    say(f"ratio of medians kerascnn / plain Keras: {ratio:.3f} (target >= 1.0); load average "
        f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end")
    floor = FLOOR_FRACTION * cores
    # a capped instruction set is another machine: its own results file (cores_avx2.jsonl)
    name = f"cores_{args.isa.lower()}" if args.isa else "cores"
    return emit(name, ratio=ratio, **figures, **common,
                kerascnn_runtime=runs["kerascnn"][0]["settings"],
                targets={"ratio": target(">=", 1.0),
                         "kerascnn_min_cores_busy": target(">=", round(floor, 2), unless=(
                             None if cores >= 2 else "one usable core: nothing to spread"))})


if __name__ == "__main__":
    main()
