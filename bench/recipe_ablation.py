"""Benchmark: what each training-recipe default does for a small convnet in equal time.

    python bench/recipe_ablation.py --dataset digits   # 8x8 digits, 12 CPU-s per run
    python bench/recipe_ablation.py --dataset sample   # Fashion-MNIST sample, 30 CPU-s per run
    python bench/recipe_ablation.py --quick            # digits, 1 seed, 6 CPU-s per run

Issue 12 item 5 asks which defaults the search's trials should train with:
batch norm, label smoothing, a one-cycle or linear-to-zero schedule instead of
a constant rate, mild shift augmentation, horizontal flips, and test-time
averaging over the flipped image. Each is measured here as ONE change from a
fixed baseline, plus the combination, at equal wall time:

- the network: two blocks of one 3x3 `same` convolution (32 then 64 filters),
  2x2 max pooling, Flatten, Dropout 0.5, Dense softmax (the keras.io simple
  MNIST convnet with `same` padding, so that it fits 8x8 images), built by
  `kerascnn.build_cnn`;
- the baseline: adam at 1e-3, constant, batch 128, no augmentation;
- every run gets the same CPU time of this process (`--seconds` CPU-seconds,
  all threads; on an idle 2-core machine about half as many wall seconds),
  counted from its first training step, which is taken untimed with the
  tracing of the train and test steps. CPU time, not wall time, because on
  the shared machine these were measured on the wall time a run got for the
  same work varied by a factor of five between neighbouring runs. Training
  stops after the batch that reaches the time; the rate follows
  `kerascnn.tuning.final.ClockSchedule` on the CPU clock (constant, or
  one-cycle / linear to zero, reaching its end exactly then); the weights of the epoch with the best
  validation loss are tested once on the test split;
- the variants run interleaved (seed 0: all variants, seed 1: all variants,
  ...) so that a change of load hits them alike; the figure per variant is
  the mean over seeds, its change from the baseline in points, and the
  spread over seeds shows the noise.

Test-time averaging (`tta`) is reported for every variant: the mean of the
softmax outputs for the image and its horizontal mirror.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_bench_options, emit, machine, say, use_options  # noqa: E402

from kerascnn import runtime  # noqa: E402

runtime.start()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerascnn.builders import build_cnn  # noqa: E402
from kerascnn.data import augmentation_layers, load_dataset  # noqa: E402
from kerascnn.spec import CNNSpec  # noqa: E402
from kerascnn.training import BestCheckpoint  # noqa: E402
from kerascnn.tuning.final import ClockSchedule  # noqa: E402

from search import resolve_dataset  # noqa: E402

LEARNING_RATE = 1e-3
BATCH_SIZE = 128
LABEL_SMOOTHING = 0.1
SHIFT = {"name": "translation", "factor": 0.1}
FLIP = {"name": "flip", "mode": "horizontal"}
# name -> the changes from the baseline
VARIANTS = {
    "baseline": {},
    "batch_norm": {"batch_norm": True},
    "label_smoothing": {"label_smoothing": LABEL_SMOOTHING},
    "one_cycle": {"schedule": "one-cycle"},
    "linear_to_zero": {"schedule": "linear"},
    "shift": {"augmentation": [SHIFT]},
    "flip": {"augmentation": [FLIP]},
    "all": {"batch_norm": True, "label_smoothing": LABEL_SMOOTHING, "schedule": "one-cycle",
            "augmentation": [SHIFT]},
    "all_with_flip": {"batch_norm": True, "label_smoothing": LABEL_SMOOTHING,
                      "schedule": "one-cycle", "augmentation": [SHIFT, FLIP]},
}


def smoothed_loss(num_classes: int, smoothing: float):
    """Sparse labels, categorical cross-entropy with label smoothing."""
    def loss(y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"),
                              num_classes)
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=smoothing)
    return loss


def build(variant: dict, input_shape, num_classes: int, seed: int):
    spec = CNNSpec(input_shape=tuple(input_shape), num_classes=num_classes, conv_blocks=2,
                   convs_per_block=1, filters=(32, 64), padding="same", dense_units=(),
                   dropout=0.5, batch_norm=bool(variant.get("batch_norm", False)))
    layers = [keras.layers.Rescaling(1.0 / 255)]
    layers += augmentation_layers(variant.get("augmentation", ()), seed=seed)
    return build_cnn(spec, preprocessing=layers)


def run(variant: dict, data: dict, num_classes: int, seconds: float, seed: int) -> dict:
    """Train one variant for `seconds` of CPU time; test its best epoch."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    (x, y), (xv, yv), (xt, yt) = data["train"], data["validation"], data["test"]
    model = build(variant, x.shape[1:], num_classes, seed)
    smoothing = variant.get("label_smoothing", 0.0)
    loss = smoothed_loss(num_classes, smoothing) if smoothing else \
        "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss,
                  metrics=["accuracy"])
    # trace the train and test steps before the clock starts (under load, tracing
    # alone can take seconds); the one training step taken counts as the first
    model.train_on_batch(x[:BATCH_SIZE], y[:BATCH_SIZE])
    model.evaluate(xv[:BATCH_SIZE], yv[:BATCH_SIZE], verbose=0)
    start, cpu_start = time.time(), time.process_time()
    timer = ClockSchedule(LEARNING_RATE, cpu_start + seconds,
                          schedule=variant.get("schedule", "constant"), max_epochs=100_000,
                          steps_per_epoch=-(-len(x) // BATCH_SIZE), clock=time.process_time)
    best = BestCheckpoint(monitor="val_loss")
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=100_000, validation_data=(xv, yv),
                        callbacks=[timer, best], verbose=0)
    wall, cpu = time.time() - start, time.process_time() - cpu_start
    best.restore_best()
    probabilities = model.predict(xt, batch_size=512, verbose=0)
    mirrored = model.predict(xt[:, :, ::-1], batch_size=512, verbose=0)
    accuracy = float(np.mean(probabilities.argmax(-1) == yt))
    tta = float(np.mean((probabilities + mirrored).argmax(-1) == yt))
    return {"test_accuracy": accuracy, "tta_accuracy": tta,
            "epochs": len(history.history["loss"]), "best_epoch": (best.best_epoch or 0) + 1,
            "seconds": wall, "cpu_seconds": cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="8x8 digits, one seed, 6 CPU-s per run")
    parser.add_argument("--dataset", default=None,
                        help="digits, sample, or anything kerascnn reads (default: digits)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="CPU seconds per run (default: 12 on digits, 30 otherwise; "
                             "6 quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--directory", default="/tmp/kerascnn-bench-ablation",
                        help="where the digits .npz is written")
    add_bench_options(parser)
    args = use_options(parser.parse_args(argv))
    name = args.dataset or "digits"
    seconds = args.seconds or (6.0 if args.quick else (12.0 if name == "digits" else 30.0))
    seeds = args.seeds or (1 if args.quick else 2)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or seeds < 1 or seconds <= 0:
        parser.error(f"unknown variant(s) {unknown}, or seeds/seconds below 1/0. Received: "
                     f"--variants {args.variants} --seeds {seeds} --seconds {seconds}")

    source = resolve_dataset(name, Path(args.directory))
    bundle = load_dataset(source, validation_split=0.1, seed=0, batch_size=BATCH_SIZE)
    data = {split: bundle.arrays(split) for split in ("train", "validation", "test")}
    say(f"{name}: {bundle.num_train} train, {bundle.num_validation} validation, "
        f"{bundle.num_test} test, {bundle.input_shape}; {seconds:g} s per run, {seeds} seed(s)")
    results: dict[str, list[dict]] = {v: [] for v in names}
    for seed in range(seeds):
        for v in names:
            r = run(VARIANTS[v], data, bundle.num_classes, seconds, seed)
            results[v].append(r)
            say(f"  seed {seed} {v:16s} test {r['test_accuracy']:.4f}  tta "
                f"{r['tta_accuracy']:.4f}  {r['epochs']} epochs (best {r['best_epoch']})")

    def mean(v, key):
        return statistics.fmean(r[key] for r in results[v])

    base = mean("baseline", "test_accuracy") if "baseline" in results else None
    summary = {}
    say(f"{'variant':16s} {'test':>7s} {'vs base':>8s} {'spread':>7s} {'tta':>7s} {'epochs':>6s}")
    for v in names:
        acc = mean(v, "test_accuracy")
        accs = [r["test_accuracy"] for r in results[v]]
        summary[v] = {
            "test_accuracy": acc, "tta_accuracy": mean(v, "tta_accuracy"),
            "points_vs_baseline": None if base is None else 100 * (acc - base),
            "tta_points": 100 * (mean(v, "tta_accuracy") - acc),
            "spread_points": 100 * (max(accs) - min(accs)), "epochs": mean(v, "epochs"),
            "per_seed": accs}
        s = summary[v]
        delta = "" if base is None else f"{s['points_vs_baseline']:+8.2f}"
        say(f"{v:16s} {acc:7.4f} {delta:>8s} {s['spread_points']:7.2f} "
            f"{s['tta_accuracy']:7.4f} {s['epochs']:6.1f}")
    # flat figures for BENCHMARKS.md: points each variant gains over the baseline,
    # and what averaging over the mirrored image adds to the flip-trained model
    flat = {f"{v}_points": summary[v]["points_vs_baseline"] for v in names if v != "baseline"}
    if "flip" in summary:
        flat["flip_tta_points"] = summary["flip"]["tta_points"]
    emit(f"recipe_ablation_{name}" if name in ("digits", "sample") else "recipe_ablation",
         dataset=name, quick=args.quick, seconds_per_run=seconds, seeds=seeds,
         num_train=bundle.num_train, num_test=bundle.num_test, **flat,
         variants=summary, machine=machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
