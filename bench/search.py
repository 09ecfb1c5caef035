"""Benchmark: `kerascnn tune` against a fixed recipe, at equal wall time, in one run.

    python bench/search.py --quick                       # bundled sample, tune's default budget
    python bench/search.py --dataset digits --budget 3m  # scikit-learn's 8x8 digits
    python bench/search.py --dataset patches --budget 3m # colour 32x32 crops of two photos
    python bench/search.py --dataset fashion_mnist --budget 15m

Two contenders, the same data, split and budget (issue 12):

1. **kerascnn**: the command line, `python -m kerascnn tune --dataset D
   --time-budget B` (no budget with `--quick`: tune's default), run as a
   subprocess of this script with the checkout this script lives in first on
   `PYTHONPATH`. Its wall time is measured from the start of the subprocess to
   its end (Python and TensorFlow start-up, data loading, search, final
   training, test evaluation, writing the results), its CPU time from the
   kernel's accounting of the child. Its test accuracy is `best/metrics.json`'s.
2. **the recipe**: the keras.io "simple MNIST convnet" (Conv2D 32 3x3 relu,
   MaxPooling 2, Conv2D 64 3x3 relu, MaxPooling 2, Flatten, Dropout 0.5,
   Dense softmax; adam at Keras's default rate, batch 128), trained plainly
   in Keras, in this process, on the same training split as kerascnn's
   search (`kerascnn.load_dataset` with the same `validation_split` and
   `seed`: the fingerprints are checked to be equal), validated after every
   epoch on the same validation split, for as many epochs as kerascnn's
   measured wall time allows: an epoch starts only if the time left holds one
   more epoch as long as the slowest one so far. The weights of the epoch
   with the best validation accuracy are kept and tested once. On inputs
   below 28x28 (8x8 digits) the convolutions use `same` padding, the only way
   the recipe fits.

**Fairness.** The two run one after the other on the same machine (kerascnn
first, since its wall time is the recipe's budget), each with the cores to
itself, with the same thread settings (`kerascnn.runtime.start`). Running them
side by side would halve each one's cores and hide the cost of each behind
the other's, and the search cannot be interleaved epoch by epoch with a
single training run. The recipe's clock starts when its model is built, with
TensorFlow imported and the arrays in memory, so its budget leaves out the
start-up and data loading that kerascnn's includes: where the load is
steady, the comparison is tilted toward the recipe, never toward kerascnn.
The load average before and after each contender and both CPU times are
printed and recorded, so that a change of load between the two shows.

`architectures` counts the distinct architectures the search trained (the
leaderboard's completed trials, keyed by their architecture hyperparameters,
parameter count and MACs; the same network trained again at a later rung
or with another learning rate counts once); `candidates` counts completed
trials.

The last line printed is one JSON object (`_common.emit`: `targets`, `met`,
recorded in `bench/results/search.jsonl` for Fashion-MNIST,
`search_sample.jsonl`, `search_digits.jsonl`); `--check` exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (add_bench_options, describe, emit, machine, say, target,  # noqa: E402
                     use_options)

from kerascnn import runtime  # noqa: E402

runtime.start()  # TensorFlow, quietly, with kerascnn's thread settings

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from kerascnn.data import load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"sample": "fashion_mnist_sample", "fashion_mnist_sample": "fashion_mnist_sample",
            "fashion_mnist": "fashion_mnist", "digits": "digits", "patches": "patches"}
VALIDATION_SPLIT = 0.1
SEED = 0
RECIPE_BATCH_SIZE = 128
# the spec fields that make an architecture (learning rate, optimizer and
# augmentation are training settings; per-block copies are `filters_2` etc.)
ARCHITECTURE_NAMES = ("conv_blocks", "convs_per_block", "filters", "filters_growth",
                      "kernel_size", "strides", "padding", "dilation_rate", "activation",
                      "batch_norm", "spatial_dropout", "pooling", "pool_size", "pool_strides",
                      "block_type", "head", "dense_layers", "dense_units", "dropout")
_PER_BLOCK = re.compile(r"^(filters|dense_units|kernel_size)_\d+$")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def write_digits_npz(path: Path, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """scikit-learn's 8x8 digits as an `.npz` of uint8 images with a fixed test split.

    Pixel values 0..16 become 0..255 (`round(v * 255 / 16)`); the test split
    is stratified by class with `random_state=seed`, so it is the same on
    every run and machine.
    """
    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def write_patches_npz(path: Path, size: int = 32, train_per_class: int = 250,
                      test_per_class: int = 80, seed: int = 0) -> Path:
    """Colour texture patches from scikit-learn's two bundled photos, as an `.npz`.

    Each photo (427x640 RGB: a temple, a flower) is cut into a 2x4 grid of
    regions, one class each (16 classes: roof, sky, trees, petals, leaves...).
    Each region is cut again into four bands of rows, alternately for training
    and for testing, and a class's `size`x`size` crops are drawn inside the
    bands of their split: test crops come from the whole region, like the
    training ones, but no test pixel is ever seen in training. The crops are
    drawn with `seed`: the same file on every run and machine.
    """
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    splits: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    names = []
    for photo, image in zip(("temple", "flower"), load_sample_images().images):
        height, width = image.shape[0] // 2, image.shape[1] // 4
        for r in range(2):
            for c in range(4):
                label, region = len(names), image[r * height:(r + 1) * height,
                                                  c * width:(c + 1) * width]
                names.append(f"{photo}_{r}{c}")
                bands = np.array_split(region, 4, axis=0)
                for part, chosen, n in (("train", bands[0::2], train_per_class),
                                        ("test", bands[1::2], test_per_class)):
                    for i in range(n):
                        band = chosen[i % 2]
                        top = rng.integers(0, band.shape[0] - size + 1)
                        left = rng.integers(0, band.shape[1] - size + 1)
                        splits[f"x_{part}"].append(band[top:top + size, left:left + size])
                        splits[f"y_{part}"].append(label)
    arrays = {k: np.asarray(v, dtype=np.uint8 if k[0] == "x" else np.int32)
              for k, v in splits.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays, class_names=np.array(names))
    return path


def resolve_dataset(name: str, directory: Path) -> str:
    """What to pass as `--dataset`: a built-in name or the path of the digits or patches
    `.npz`."""
    if name == "digits":
        return str(write_digits_npz(directory / "digits.npz"))
    if name == "patches":
        return str(write_patches_npz(directory / "patches.npz"))
    return DATASETS.get(name, name)


# ---------------------------------------------------------------------------
# kerascnn tune, as a user runs it
# ---------------------------------------------------------------------------


def run_kerascnn(dataset: str, budget: Optional[str], directory: Path,
                 extra: list[str]) -> dict[str, Any]:
    """Run `kerascnn tune` as a subprocess; its wall and CPU seconds and its output log."""
    command = [sys.executable, "-m", "kerascnn", "tune", "--dataset", dataset,
               "--directory", str(directory), "--project-name", "search", "--overwrite",
               "--seed", str(SEED), *(["--time-budget", budget] if budget else []), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log_path = directory / "kerascnn-tune.log"
    say(f"kerascnn: {' '.join(command[1:])}")
    load_before = os.getloadavg()[0]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=str(directory))
        for line in proc.stdout:  # progress to our stderr, all of it to the log
            log.write(line)
            log.flush()
            sys.stderr.write(line)
        code = proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    if code != 0:
        raise SystemExit(f"kerascnn tune exited with {code}; see {log_path}")
    return {"wall_seconds": wall, "cpu_seconds": cpu, "log": str(log_path),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "project_dir": directory / "search"}


def architecture_key(row: dict[str, Any]) -> tuple:
    """What identifies a leaderboard row's network, apart from how it was trained."""
    names = sorted(k for k in row if k in ARCHITECTURE_NAMES or _PER_BLOCK.match(k))
    return (tuple((k, json.dumps(row[k], sort_keys=True, default=str)) for k in names),
            row.get("params"), row.get("macs"))


def count_architectures(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(distinct architectures trained, completed trials) of a leaderboard."""
    trained = [r for r in rows if r.get("status") == "COMPLETED"]
    return len({architecture_key(r) for r in trained}), len(trained)


def cost_model_error(rows: list[dict[str, Any]]) -> Optional[float]:
    """Median of |predicted / measured - 1| over the trials with both seconds."""
    errors = sorted(abs(r["predicted_seconds"] / r["seconds"] - 1.0) for r in rows
                    if r.get("predicted_seconds") and r.get("seconds"))
    if not errors:
        return None
    mid = len(errors) // 2
    return errors[mid] if len(errors) % 2 else (errors[mid - 1] + errors[mid]) / 2


def read_search(project_dir: Path) -> dict[str, Any]:
    """The figures of a finished search folder."""
    metrics = json.loads((project_dir / "best" / "metrics.json").read_text())
    rows = json.loads((project_dir / "leaderboard.json").read_text())
    manifest = json.loads((project_dir / "manifest.json").read_text())
    search = yaml.safe_load((project_dir / "search.yaml").read_text()) or {}
    architectures, candidates = count_architectures(rows)
    return {"test_accuracy": float(metrics["test_accuracy"]),
            "final_model": metrics.get("final_model"),
            "final_model_reason": metrics.get("final_model_reason"),
            "cost_model_error": cost_model_error(rows),
            "architectures": architectures, "candidates": candidates,
            "budget_seconds": search.get("time_budget"),
            "fingerprint": manifest.get("dataset_fingerprint"),
            "best": rows[0] if rows else {}}


# ---------------------------------------------------------------------------
# The fixed recipe, trained plainly in Keras
# ---------------------------------------------------------------------------


def recipe_model(input_shape: tuple[int, ...], num_classes: int):
    """The keras.io simple MNIST convnet (`same` padding below 28x28 pixels)."""
    padding = "valid" if min(input_shape[:2]) >= 28 else "same"
    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu", padding=padding),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu", padding=padding),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes, activation="softmax"),
    ]), padding


def run_recipe(dataset: str, seconds: float) -> dict[str, Any]:
    """Train the recipe for `seconds` of wall time; test the best validation epoch."""
    bundle = load_dataset(dataset, validation_split=VALIDATION_SPLIT, seed=SEED,
                          batch_size=RECIPE_BATCH_SIZE)
    x_train, y_train = bundle.arrays("train")
    x_val, y_val = bundle.arrays("validation")
    x_test, y_test = bundle.arrays("test")
    keras.utils.set_random_seed(SEED)
    load_before = os.getloadavg()[0]
    cpu_start, start = time.process_time(), time.perf_counter()
    model, padding = recipe_model(tuple(x_train.shape[1:]), bundle.num_classes)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    keeper = _BestWithin(start, seconds)
    model.fit(x_train, y_train, batch_size=RECIPE_BATCH_SIZE, epochs=1_000_000,
              validation_data=(x_val, y_val), callbacks=[keeper], verbose=0)
    model.set_weights(keeper.best_weights)
    _, test_accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    return {"test_accuracy": float(test_accuracy), "epochs": keeper.epochs,
            "best_epoch": keeper.best_epoch, "val_accuracy": keeper.best,
            "wall_seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start, "padding": padding,
            "fingerprint": bundle.fingerprint, "load_before": load_before,
            "load_after": os.getloadavg()[0], "num_train": int(len(y_train))}


class _BestWithin(keras.callbacks.Callback):
    """Stop before an epoch that would not finish by the deadline; remember the best epoch."""

    def __init__(self, start: float, seconds: float):
        super().__init__()
        self.start, self.seconds = start, seconds
        self.best, self.best_loss, self.best_epoch, self.best_weights = -1.0, None, 0, None
        self.epochs, self.slowest, self._epoch_start = 0, 0.0, start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        # the first epoch's time includes tracing the model: count from the clock's start
        self.slowest = max(self.slowest, now - (self.start if epoch == 0 else self._epoch_start))
        self.epochs = epoch + 1
        accuracy, loss = float(logs["val_accuracy"]), float(logs["val_loss"])
        if accuracy > self.best or (accuracy == self.best and loss < self.best_loss):
            self.best, self.best_loss, self.best_epoch = accuracy, loss, epoch + 1
            self.best_weights = self.model.get_weights()
        if now - self.start + self.slowest > self.seconds:
            self.model.stop_training = True


# ---------------------------------------------------------------------------
# Targets (issue 12, "Done when")
# ---------------------------------------------------------------------------


def targets_for(name: str, budget_seconds: Optional[float]) -> dict[str, dict[str, Any]]:
    """The issue's targets for this data set (`_common.target` records)."""
    if name == "fashion_mnist":
        targets = {"difference_points": target(">=", 1.0),
                   "kerascnn_test_accuracy": target(">=", 0.930),
                   "architectures": target(">=", 16)}
    elif name in ("sample", "fashion_mnist_sample"):
        targets = {"difference_points": target(">=", 1.0)}
    elif name == "digits":
        targets = {"difference_points": target(">=", 0.0)}
    else:
        targets = {}
    if budget_seconds:
        targets["wall_seconds"] = target("<=", round(budget_seconds * 1.05, 1))
    return targets


def bench_name(dataset: str) -> str:
    """The record's name: one results file per data set (`bench/results/NAME.jsonl`)."""
    return {"fashion_mnist": "search", "sample": "search_sample",
            "fashion_mnist_sample": "search_sample", "digits": "search_digits",
            "patches": "search_patches"}.get(
                dataset, "search_other")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        epilog="The last line printed is one JSON object with the figures.")
    parser.add_argument("--quick", action="store_true",
                        help="the bundled 6,000-image sample with tune's default budget")
    parser.add_argument("--dataset", default=None,
                        help="sample, fashion_mnist, digits, patches (colour 32x32 crops of "
                             "scikit-learn's two photos), or anything kerascnn reads "
                             "(default: fashion_mnist; sample with --quick)")
    parser.add_argument("--budget", default=None,
                        help="kerascnn's --time-budget, e.g. 3m or 15m (default: 15m; "
                             "tune's own default with --quick)")
    parser.add_argument("--directory", default=None,
                        help="keep the search and its log here (default: a new temp folder)")
    parser.add_argument("--tune-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument for kerascnn tune (repeatable), "
                             "e.g. --tune-arg=--max-trials --tune-arg=4")
    add_bench_options(parser)
    args = use_options(parser.parse_args(argv))
    if args.dataset is None:
        args.dataset = "sample" if args.quick else "fashion_mnist"
    if args.budget is None and not args.quick:
        args.budget = "15m"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    directory = Path(args.directory or tempfile.mkdtemp(prefix="kerascnn-bench-search-"))
    directory.mkdir(parents=True, exist_ok=True)
    dataset = resolve_dataset(args.dataset, directory)

    tuned = run_kerascnn(dataset, args.budget, directory, args.tune_arg)
    search = read_search(tuned["project_dir"])
    say(f"kerascnn: test accuracy {search['test_accuracy']:.4f}, {search['candidates']} "
        f"candidates ({search['architectures']} architectures), "
        f"{tuned['wall_seconds']:.0f}s wall, {tuned['cpu_seconds']:.0f} CPU-s")

    recipe = run_recipe(dataset, tuned["wall_seconds"])
    if search["fingerprint"] and search["fingerprint"] != recipe["fingerprint"]:
        raise SystemExit(f"the recipe saw other data than kerascnn (fingerprint "
                         f"{recipe['fingerprint']} != {search['fingerprint']})")
    say(f"recipe ({recipe['padding']} padding): test accuracy {recipe['test_accuracy']:.4f}, "
        f"{recipe['epochs']} epochs (best {recipe['best_epoch']}), "
        f"{recipe['wall_seconds']:.0f}s wall, {recipe['cpu_seconds']:.0f} CPU-s")
    difference = 100.0 * (search["test_accuracy"] - recipe["test_accuracy"])
    say(f"difference: {difference:+.2f} points (kerascnn - recipe)")

    budget_seconds = search["budget_seconds"]
    figures = {
        "dataset": args.dataset, "quick": args.quick, "budget_seconds": budget_seconds,
        "wall_seconds": tuned["wall_seconds"], "cpu_seconds": tuned["cpu_seconds"],
        "kerascnn_test_accuracy": search["test_accuracy"],
        "recipe_test_accuracy": recipe["test_accuracy"],
        "difference_points": difference,
        "architectures": search["architectures"], "candidates": search["candidates"],
        "final_model": search["final_model"],
        "final_model_reason": search["final_model_reason"],
        "cost_model_median_error": search["cost_model_error"],
        "recipe_epochs": recipe["epochs"], "recipe_best_epoch": recipe["best_epoch"],
        "recipe_wall_seconds": recipe["wall_seconds"],
        "recipe_cpu_seconds": recipe["cpu_seconds"], "recipe_padding": recipe["padding"],
        "num_train": recipe["num_train"],
        "load_avg": {"kerascnn": [tuned["load_before"], tuned["load_after"]],
                     "recipe": [recipe["load_before"], recipe["load_after"]]},
    }
    targets = targets_for(args.dataset, budget_seconds)
    for key, spec in targets.items():
        say("target: " + describe(key, figures.get(key), spec))
    emit(bench_name(args.dataset), **figures,
         method="sequential: kerascnn, then the recipe for its wall time",
         directory=str(directory), machine=machine(),
         targets=targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
