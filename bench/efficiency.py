"""Training FLOP/s of a reference CNN as a fraction of this machine's matmul peak.

The reference network is a small VGG-style net built by `kerascnn.build_cnn`
(3 blocks of two 3x3 convolutions, 32-64-128 filters, max pooling, one
128-wide dense layer) on 32x32x3 images at batch 128, compiled by
`kerascnn.training.compile_model` (Adam, kerascnn's defaults). It trains on
real data: Fashion-MNIST converted to 32x32 RGB (the bundled sample with
`--quick`; otherwise 20,000 images of the full set, from its idx files).

Training work per image is `analyze(spec).total_macs` x 2 FLOPs per MAC x 3
(forward, plus backward for the inputs and for the weights). The peak is
TensorFlow's own `tf.linalg.matmul` of large square float32 and bfloat16
matrices, timed in the same process just before each chunk of training, so
every figure is a ratio of two things measured a few seconds apart (the
machine is shared; absolute numbers move, ratios much less). Each figure is
also given per CPU-second (`time.process_time()`, all threads), which follows
the work done rather than the scheduler.

Two copies of the network start from the same weights and see the same
batches in the same order: one in float32, one under `mixed_bfloat16`. They
train in alternating chunks of `--chunk` steps; the first chunk of each
(tracing) is not timed. Figures (medians over the timed chunks):

- `fraction_of_peak`: float32 training FLOP/s / float32 matmul peak
  (target >= 0.6); `fraction_of_peak_cpu` the same per CPU-second
- `bf16_speedup`: mixed_bfloat16 images/s / float32 images/s of back-to-back
  chunks (target >= 1.4); `bf16_speedup_cpu` per CPU-second
- `accuracy_delta`: mixed_bfloat16 test accuracy - float32 test accuracy,
  in points (target: within +-0.5)

    python bench/efficiency.py [--quick] [--jit] [--batch-size 128]
        [--steps-per-execution 1] [--filters 32,64,128] [--steps 480] [--chunk 20]
        [--no-bf16]

oneDNN is TensorFlow's choice on x86; compare with
`TF_ENABLE_ONEDNN_OPTS=0 python bench/efficiency.py ...`.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (bench_parser, bfloat16_missing, emit, machine, median, say,  # noqa: E402
                     spread, target)


def parse_args(argv=None):
    parser = bench_parser(__doc__, repeats=5, quick_repeats=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--filters", default="32,64,128",
                        help="filters of the three blocks (comma-separated)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per precision (default 480, 50 with --quick)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="steps per timed chunk; the two precisions alternate chunks and "
                             "the first chunk of each (tracing) is not timed (default 20, "
                             "10 with --quick)")
    parser.add_argument("--dataset", default=None,
                        help="kerascnn dataset (default fashion_mnist, "
                             "fashion_mnist_sample with --quick)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use at most this many training images (default: 20000, "
                             "all of the sample with --quick)")
    parser.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile)")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of the square matrices timed for the peak "
                             "(default 3072, 2048 with --quick)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="float32 only (skip the mixed_bfloat16 copy)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (50 if args.quick else 480)
    args.chunk = args.chunk or (10 if args.quick else 20)
    args.dataset = args.dataset or ("fashion_mnist_sample" if args.quick else "fashion_mnist")
    if args.train_limit is None and not args.quick:
        args.train_limit = 20000
    args.matmul_size = args.matmul_size or (2048 if args.quick else 3072)
    args.filters = tuple(int(f) for f in args.filters.split(","))
    if args.chunk < 1 or args.steps < 2 * args.chunk:
        parser.error(f"--steps must be at least twice --chunk (the first chunk is not "
                     f"timed). Received: --steps {args.steps} --chunk {args.chunk}")
    return args


def clocks() -> tuple[float, float]:
    """(wall seconds, CPU seconds of all this process's threads)."""
    return time.perf_counter(), time.process_time()


def matmul_peak(tf, n: int, dtype, repeats: int) -> tuple[float, float]:
    """FLOP/s of `tf.linalg.matmul` of two n x n `dtype` matrices: (per wall s, per CPU s).

    Medians of `repeats` calls, each at least 0.2 s of repeated products.
    """
    a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
    b = tf.cast(tf.random.normal((n, n), seed=2), dtype)

    @tf.function
    def mm(x, y):
        # a sliver of the product keeps the op alive and makes .numpy() wait for it
        return tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1], tf.float32))

    start = time.perf_counter()
    mm(a, b).numpy()  # trace and warm up
    per_call = time.perf_counter() - start
    calls = max(1, int(0.2 / max(per_call, 1e-4)))
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = clocks()
        for _ in range(calls):
            mm(a, b).numpy()
        wall_end, cpu_end = clocks()
        walls.append(wall_end - wall)
        cpus.append(cpu_end - cpu)
    flops = 2 * n ** 3 * calls
    return flops / median(walls), flops / median(cpus)


def load_data(args):
    """(x_train, y_train, x_test, y_test): float32 32x32x3 in [0, 1], int labels."""
    import numpy as np
    import tensorflow as tf

    import kerascnn

    bundle = kerascnn.load_dataset(args.dataset, validation_split=0.0 if args.dataset !=
                                   "fashion_mnist_sample" else 0.1, batch_size=1024, seed=0)

    def arrays(dataset, limit=None):
        xs, ys, count = [], [], 0
        for x, y in dataset:
            x = tf.image.resize(tf.cast(x, tf.float32) / 255.0, (32, 32))
            if x.shape[-1] == 1:
                x = tf.image.grayscale_to_rgb(x)
            xs.append(x.numpy())
            ys.append(y.numpy())
            count += len(ys[-1])
            if limit and count >= limit:
                break
        x, y = np.concatenate(xs), np.concatenate(ys)
        return (x[:limit], y[:limit]) if limit else (x, y)

    x_train, y_train = arrays(bundle.train, args.train_limit)
    x_test, y_test = arrays(bundle.test)
    return x_train, y_train, x_test, y_test, bundle.num_classes


def main(argv=None) -> dict:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    import kerascnn
    from kerascnn.training import compile_model, dtype_policy

    keras.utils.set_random_seed(0)
    info = machine()
    say(f"machine: {info['cpu']}, {info['cores']} cores, load {info.get('load_avg_1m', '?')}, "
        f"tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}")

    x_train, y_train, x_test, y_test, num_classes = load_data(args)
    spec = kerascnn.CNNSpec(input_shape=(32, 32, 3), num_classes=num_classes, conv_blocks=3,
                            convs_per_block=2, filters=args.filters)
    analysis = kerascnn.analyze(spec)
    flops_per_image = analysis.total_macs * 2 * 3
    say(f"reference: VGG-style {args.filters} on 32x32x3, {analysis.total_params:,} params, "
        f"{analysis.total_macs / 1e6:.1f} M MACs/image forward, "
        f"{flops_per_image / 1e9:.3f} GFLOP/image training; batch {args.batch_size}, "
        f"jit={args.jit}, steps_per_execution={args.steps_per_execution}")
    say(f"data: {args.dataset} as 32x32 RGB, {len(x_train)} train / {len(x_test)} test "
        f"images; {args.steps} steps per precision in chunks of {args.chunk} "
        f"(first not timed)")

    precisions = ["float32"] if args.no_bf16 else ["float32", "mixed_bfloat16"]
    models, datasets = {}, {}
    weights = None
    for precision in precisions:
        with dtype_policy(precision):
            keras.utils.set_random_seed(0)
            model = kerascnn.build_cnn(spec)
            compile_model(model, jit_compile=args.jit,
                          steps_per_execution=args.steps_per_execution)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)
        models[precision] = model
        # identical pipelines (same shuffle seed): the same batches in the same order
        datasets[precision] = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                               .shuffle(len(x_train), seed=0, reshuffle_each_iteration=True)
                               .repeat().batch(args.batch_size, drop_remainder=True)
                               .prefetch(tf.data.AUTOTUNE))

    dtypes = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16}
    # per timed chunk: images/s, FLOP/s, peak FLOP/s (wall clock), FLOP/CPU-s, peak FLOP/CPU-s
    rows = {p: [] for p in precisions}
    chunks = args.steps // args.chunk
    images = args.chunk * args.batch_size
    for chunk in range(chunks):
        for precision in precisions:
            peak, peak_cpu = matmul_peak(tf, args.matmul_size, dtypes[precision], args.repeats)
            wall, cpu = clocks()
            models[precision].fit(datasets[precision], epochs=chunk + 1, initial_epoch=chunk,
                                  steps_per_epoch=args.chunk, verbose=0)
            wall_end, cpu_end = clocks()
            rate = images / (wall_end - wall)
            flops, flops_cpu = rate * flops_per_image, images * flops_per_image / (cpu_end - cpu)
            cores = (cpu_end - cpu) / (wall_end - wall)
            if chunk > 0:
                rows[precision].append((rate, flops, peak, flops_cpu, peak_cpu, cores))
            say(f"chunk {chunk + 1:2d} {precision:14s} {rate:6.0f} images/s "
                f"{flops / 1e9:6.1f} GFLOP/s, matmul {peak / 1e9:6.1f}: {flops / peak:.2f} of "
                f"peak; per CPU-second {flops_cpu / 1e9:6.1f} vs {peak_cpu / 1e9:6.1f}: "
                f"{flops_cpu / peak_cpu:.2f}; cores busy {cores:.2f}"
                + ("" if chunk else "  (tracing, not timed)"))

    figures = {}
    for precision in precisions:
        r = rows[precision]
        _, test_acc = models[precision].evaluate(x_test, y_test, batch_size=256, verbose=0)
        figures[precision] = {
            "images_per_s": median([x[0] for x in r]),
            "gflops": median([x[1] for x in r]) / 1e9,
            "peak_gflops": median([x[2] for x in r]) / 1e9,
            "fraction_of_peak": median([x[1] / x[2] for x in r]),
            "fraction_of_peak_cpu": median([x[3] / x[4] for x in r]),
            "gflops_per_cpu_s": median([x[3] for x in r]) / 1e9,
            "peak_gflops_per_cpu_s": median([x[4] for x in r]) / 1e9,
            "spread": spread([x[0] for x in r]),
            "cores_busy": median([x[5] for x in r]),
            "test_accuracy": float(test_acc),
        }
    f32 = figures["float32"]
    say(f"float32: {f32['images_per_s']:.0f} images/s, {f32['gflops']:.1f} GFLOP/s of "
        f"{f32['peak_gflops']:.1f} matmul peak: fraction_of_peak {f32['fraction_of_peak']:.2f} "
        f"(target >= 0.6; per CPU-second {f32['fraction_of_peak_cpu']:.2f}); test accuracy "
        f"{100 * f32['test_accuracy']:.2f}%; chunk rates spread {100 * f32['spread']:.0f}%; "
        f"cores busy {f32['cores_busy']:.2f} of {os.cpu_count()}")
    record = {
        "fraction_of_peak": f32["fraction_of_peak"],
        "fraction_of_peak_cpu": f32["fraction_of_peak_cpu"],
        "float32_images_per_s": f32["images_per_s"],
        "float32_gflops": f32["gflops"],
        "float32_matmul_peak_gflops": f32["peak_gflops"],
        "float32_gflops_per_cpu_s": f32["gflops_per_cpu_s"],
        "float32_matmul_peak_gflops_per_cpu_s": f32["peak_gflops_per_cpu_s"],
        "float32_test_accuracy": f32["test_accuracy"],
        "float32_cores_busy": f32["cores_busy"],
    }
    targets = {"fraction_of_peak": target(">=", 0.6)}
    if "mixed_bfloat16" in figures:
        bf = figures["mixed_bfloat16"]
        # chunk pairs ran back to back: their ratio cancels most of the machine's drift
        speedups = [b[0] / f[0] for b, f in zip(rows["mixed_bfloat16"], rows["float32"])]
        speedups_cpu = [b[3] / f[3] for b, f in zip(rows["mixed_bfloat16"], rows["float32"])]
        delta = 100 * (bf["test_accuracy"] - f32["test_accuracy"])
        say(f"mixed_bfloat16: {bf['images_per_s']:.0f} images/s, {bf['gflops']:.1f} GFLOP/s "
            f"of {bf['peak_gflops']:.1f} bf16 matmul peak ({bf['fraction_of_peak']:.2f}); "
            f"test accuracy {100 * bf['test_accuracy']:.2f}%")
        say(f"bf16_speedup {median(speedups):.2f} (target >= 1.4; per CPU-second "
            f"{median(speedups_cpu):.2f}), accuracy_delta {delta:+.2f} points "
            f"(target within 0.5)")
        record.update({
            "bf16_speedup": median(speedups),
            "bf16_speedup_cpu": median(speedups_cpu),
            "accuracy_delta": delta,
            "bf16_images_per_s": bf["images_per_s"],
            "bf16_gflops": bf["gflops"],
            "bf16_matmul_peak_gflops": bf["peak_gflops"],
            "bf16_gflops_per_cpu_s": bf["gflops_per_cpu_s"],
            "bf16_matmul_peak_gflops_per_cpu_s": bf["peak_gflops_per_cpu_s"],
            "bf16_fraction_of_bf16_peak": bf["fraction_of_peak"],
            "bf16_test_accuracy": bf["test_accuracy"],
            "bf16_matmul_speedup": bf["peak_gflops"] / f32["peak_gflops"],
            "bf16_cores_busy": bf["cores_busy"],
        })
        # bfloat16 only pays where the hardware has it; elsewhere it is emulated
        targets["bf16_speedup"] = target(">=", 1.4, unless=bfloat16_missing())
        # --quick trains 50 steps and tests on 1,000 images: one image is 0.1 point
        targets["accuracy_delta"] = target("within", 0.5, unless=(
            "--quick: 50 steps and 1,000 test images, too few for a 0.5-point claim"
            if args.quick else None))
    record.update({
        "batch_size": args.batch_size, "jit": args.jit,
        "steps_per_execution": args.steps_per_execution, "filters": list(args.filters),
        "steps": chunks * args.chunk, "chunk": args.chunk, "train_images": len(x_train),
        "test_images": len(x_test), "rate_spread": f32["spread"], "quick": args.quick,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "cores": os.cpu_count(), "load_avg_1m": machine().get("load_avg_1m"),
    })
    return emit("efficiency", targets=targets, **record)


if __name__ == "__main__":
    main()
