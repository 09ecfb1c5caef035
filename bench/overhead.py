"""What `kerascnn.train` costs over plain Keras, and what its defaults buy.

The same network (the `simple` preset: two blocks of two 3x3 convolutions with
batch norm, 32 and 64 filters, max pooling, one dense layer of 128 with dropout)
trained on the same data, in one run, each figure the median of several
repetitions, with the configurations interleaved so that a change in the
machine's load hits them all alike:

* `kerascnn`: `kerascnn.train(spec, dataset=bundle, output_dir=...)` with its
  defaults (batch 128 from the bundle, Adam 1e-3, early stopping, best
  checkpoint, BackupAndRestore, history.csv rewritten every epoch, TerminateOnNaN).
* `keras`: the same layers written by hand with `keras.layers`, compiled with the
  same settings (Adam 1e-3, sparse categorical cross-entropy, accuracy), and
  `model.fit` on the same `tf.data` batches with the same validation set.
* `keras_defaults`: the hand-written model as a Keras user would train it from
  numpy arrays with Keras's defaults (`batch_size=32`).

Throughput is images per second of the training epochs after the first (the
first one traces the train step), validation included, timed by the same
callback in all three. Images per CPU second (the process's CPU time, all
threads) are reported beside them: on a machine whose cores other jobs share,
wall-clock figures follow the scheduler, CPU time follows the work done; cores
busy (CPU time / wall time) shows a run that left a core idle (issue 15).
`ratio` = kerascnn / keras (target >= 0.97);
`speedup_vs_keras_defaults` = kerascnn / keras_defaults. Without `--quick`,
also `kerascnn.train(mixed_precision=True)` (mixed_bfloat16 on this CPU) and
`kerascnn.train(jit=True)` (XLA) against kerascnn's float32 default.

Usage: python bench/overhead.py [--quick] [--repeats N] [--epochs E] [--train-size N]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import bench_parser, emit, machine, median, say, spread, target  # noqa: E402


def epoch_timer():
    """A callback recording each epoch's wall time (the same one for every configuration)."""
    import time

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []
            self.cpu_seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            self._cpu = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append(time.process_time() - self._cpu)

    return EpochTimer()


def steady_images_per_second(timer, num_train: int) -> tuple[float, float, float]:
    """Images per wall-clock second, per CPU second, and cores busy (CPU / wall time),
    over the epochs after the first."""
    wall = timer.seconds[1:] or timer.seconds
    cpu = timer.cpu_seconds[1:] or timer.cpu_seconds
    return num_train / median(wall), num_train / median(cpu), sum(cpu) / sum(wall)


def plain_keras_simple(input_shape, num_classes):
    """The `simple` preset written by hand with keras.layers (no kerascnn code)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def compile_plain(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model


def main() -> None:
    parser = bench_parser(__doc__, repeats=5, quick_repeats=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per measurement (default 4, 3 with --quick)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="training images from the bundled sample (default 6000, "
                             "1200 with --quick)")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 4)
    train_size = args.train_size or (1200 if args.quick else 6000)
    if epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")

    import numpy as np

    import kerascnn
    from kerascnn.data import network_input_shape

    sample = Path(kerascnn.__file__).parent / "data" / "fashion_mnist_sample.npz"
    work = Path(tempfile.mkdtemp(prefix="kerascnn-overhead-"))
    with np.load(sample) as f:
        arrays = {k: f[k] for k in f.files}
    data = work / "sample.npz"
    np.savez(data, x_train=arrays["x_train"][:train_size], y_train=arrays["y_train"][:train_size],
             x_test=arrays["x_test"], y_test=arrays["y_test"])
    bundle = kerascnn.load_dataset(str(data), batch_size=128, validation_split=0.1, seed=0)
    spec = kerascnn.get_preset("simple", input_shape=network_input_shape(bundle),
                               num_classes=bundle.num_classes)
    x_train, y_train = bundle.arrays("train")
    x_val, y_val = bundle.arrays("validation")

    check = plain_keras_simple(bundle.input_shape, bundle.num_classes)
    from kerascnn.training import build_model

    ours = build_model(spec, bundle)
    if check.count_params() != ours.count_params():
        raise SystemExit(f"the hand-written network has {check.count_params()} parameters, "
                         f"kerascnn's {ours.count_params()}: not the same network")
    del check, ours
    say(f"simple preset, {ours_params(spec):,} parameters; {bundle.num_train} training and "
        f"{bundle.num_validation} validation images; {epochs} epochs x {args.repeats} "
        f"repetitions per configuration")

    run_index = iter(range(10_000))

    def run_kerascnn(**options) -> tuple[float, float, float]:
        timer = epoch_timer()
        kerascnn.train(spec, dataset=bundle, epochs=epochs,
                       output_dir=work / f"run{next(run_index)}",
                       seed=0, callbacks=[timer], **options)
        return steady_images_per_second(timer, bundle.num_train)

    def run_keras() -> tuple[float, float, float]:
        import keras

        keras.utils.set_random_seed(0)
        model = compile_plain(plain_keras_simple(bundle.input_shape, bundle.num_classes))
        timer = epoch_timer()
        model.fit(bundle.train, validation_data=bundle.validation, epochs=epochs, verbose=0,
                  callbacks=[timer])
        return steady_images_per_second(timer, bundle.num_train)

    def run_keras_defaults() -> tuple[float, float, float]:
        import keras

        keras.utils.set_random_seed(0)
        model = compile_plain(plain_keras_simple(bundle.input_shape, bundle.num_classes))
        timer = epoch_timer()
        model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, verbose=0,
                  callbacks=[timer])  # batch_size=32, Keras's default
        return steady_images_per_second(timer, bundle.num_train)

    configs = {"kerascnn": run_kerascnn, "keras": run_keras,
               "keras_defaults": run_keras_defaults}
    if not args.quick:
        configs["kerascnn_mixed_precision"] = lambda: run_kerascnn(mixed_precision=True)
        configs["kerascnn_jit"] = lambda: run_kerascnn(jit=True)

    import keras

    # one untimed short fit first: the process's one-time costs (kernel selection, thread
    # pools, tf.function machinery) must not land on whichever configuration runs first
    warm = compile_plain(plain_keras_simple(bundle.input_shape, bundle.num_classes))
    warm.fit(bundle.train.take(8), epochs=1, verbose=0)
    del warm
    keras.backend.clear_session()

    results: dict[str, list[float]] = {name: [] for name in configs}
    cpu_results: dict[str, list[float]] = {name: [] for name in configs}
    cores_busy: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no fixed slot
        for name in order:
            wall, cpu, cores = configs[name]()
            results[name].append(wall)
            cpu_results[name].append(cpu)
            cores_busy[name].append(cores)
            keras.backend.clear_session()
        say(f"repetition {rep + 1}/{args.repeats}: " + ", ".join(
            f"{n} {results[n][-1]:,.0f} ({cores_busy[n][-1]:.2f} cores)" for n in names)
            + " images/s")

    ips = {name: median(values) for name, values in results.items()}
    cpu_ips = {name: median(values) for name, values in cpu_results.items()}
    for name in names:
        say(f"{name:>26}: {ips[name]:8,.0f} images/s (median; spread "
            f"{spread(results[name]):.2f}); {cpu_ips[name]:8,.0f} images per CPU second; "
            f"cores busy {median(cores_busy[name]):.2f} of {os.cpu_count()}")
    ratio = ips["kerascnn"] / ips["keras"]
    speedup = ips["kerascnn"] / ips["keras_defaults"]
    # the ratio of medians, and the median of the per-repetition ratios (pairs run back to back)
    paired = median([a / b for a, b in zip(results["kerascnn"], results["keras"])])
    # per CPU second: what each configuration costs, whatever share of the cores it got
    ratio_cpu = cpu_ips["kerascnn"] / cpu_ips["keras"]
    say(f"ratio kerascnn / plain Keras, same settings: {ratio:.3f} (paired median {paired:.3f}; "
        f"per CPU second {ratio_cpu:.3f}; target >= 0.97)")
    say(f"speedup_vs_keras_defaults (batch 128 vs Keras's 32): {speedup:.2f} "
        f"(per CPU second {cpu_ips['kerascnn'] / cpu_ips['keras_defaults']:.2f})")
    figures = {
        "ratio": ratio, "ratio_paired": paired, "ratio_cpu": ratio_cpu,
        "speedup_vs_keras_defaults": speedup,
        "speedup_vs_keras_defaults_cpu": cpu_ips["kerascnn"] / cpu_ips["keras_defaults"],
        "kerascnn_images_per_s": ips["kerascnn"], "keras_images_per_s": ips["keras"],
        "keras_defaults_images_per_s": ips["keras_defaults"],
        **{f"{name}_cores_busy": median(values) for name, values in cores_busy.items()},
    }
    if not args.quick:
        for key, name in (("mixed_precision_speedup", "kerascnn_mixed_precision"),
                          ("jit_speedup", "kerascnn_jit")):
            figures[key] = ips[name] / ips["kerascnn"]
            figures[f"{key}_cpu"] = cpu_ips[name] / cpu_ips["kerascnn"]
        say(f"--mixed-precision (mixed_bfloat16): x{figures['mixed_precision_speedup']:.2f} "
            f"(per CPU second x{figures['mixed_precision_speedup_cpu']:.2f}); --jit (XLA): "
            f"x{figures['jit_speedup']:.2f} (per CPU second x{figures['jit_speedup_cpu']:.2f}) "
            f"against kerascnn float32")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    emit("overhead", **figures, epochs=epochs, repeats=args.repeats,
         num_train=bundle.num_train, spread=spread(results["kerascnn"]), quick=args.quick,
         cores=os.cpu_count(), machine=machine(), targets={"ratio": target(">=", 0.97)})


def ours_params(spec) -> int:
    from kerascnn.analysis import analyze

    return analyze(spec).total_params


if __name__ == "__main__":
    main()
