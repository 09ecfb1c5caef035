"""The input pipeline alone against the training throughput of the `simple` preset.

The pipeline must never be what a training run waits for: `ratio` is the
images per second that `bundle.train` delivers when it is only iterated,
divided by the images per second that `model.fit` trains the `simple` preset
on the same batches (the performance issue asks for at least 5).

Measured in one run, each as the median of several repetitions:

* `pipeline_images_per_s`: one epoch of `load_dataset(...).train` (map, cache,
  shuffle, batch, prefetch), batches pulled as `model.fit` pulls them;
* `train_images_per_s`: `model.fit` of `kerascnn.get_preset("simple")` built by
  `build_cnn` with the data's preprocessing layers, compiled by
  `kerascnn.training.compile_model`, on the first `--train-steps` batches of the
  same pipeline (after a warm-up fit that traces and compiles);
* a folder of PNGs written from the same images: the first epoch (decoding)
  and a later epoch (served from the cache), to show what `cache` buys.

Usage: python bench/pipeline.py [--quick] [--dataset NAME] [--batch-size 128]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (bench_parser, emit, machine, median, repeat_timed, say,  # noqa: E402
                     spread, target)


def iterate(dataset) -> int:
    """Pull every batch of `dataset` (as model.fit would); return the number of images."""
    n = 0
    for x, _ in dataset:
        n += int(x.shape[0])
    return n


def write_png_folder(bundle, root: Path, limit: int) -> int:
    from PIL import Image

    x, y = bundle.arrays("train", limit=limit)
    for c in range(bundle.num_classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y)):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            root / f"class_{label}" / f"{i:05d}.png")
    return len(y)


def main() -> None:
    parser = bench_parser(__doc__, repeats=5, quick_repeats=3)
    parser.add_argument("--dataset", default="fashion_mnist_sample",
                        help="any kerascnn dataset source (default: the bundled sample)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="batches per timed training repetition (default 40, 15 with --quick)")
    args = parser.parse_args()
    steps = args.train_steps or (15 if args.quick else 40)

    import keras
    import tensorflow as tf

    import kerascnn
    from kerascnn.data import load_dataset, network_input_shape, preprocessing_layers
    from kerascnn.training import compile_model

    keras.utils.set_random_seed(0)
    say(f"machine: {machine()}")
    bundle = load_dataset(args.dataset, batch_size=args.batch_size, seed=0)
    say(f"data: {bundle.source}, {bundle.num_train} training images {bundle.input_shape}, "
        f"batch {args.batch_size}")

    # -- the pipeline alone: whole epochs of bundle.train
    epoch_images = iterate(bundle.train)  # warm-up (fills any cache)
    seconds = repeat_timed(lambda: iterate(bundle.train), repeats=args.repeats, warmup=0)
    pipeline_rate = epoch_images / median(seconds)
    say(f"pipeline alone: {pipeline_rate:,.0f} images/s (median of {len(seconds)} epochs, "
        f"spread {spread(seconds):.0%})")

    # -- training the simple preset on the same pipeline
    spec = kerascnn.get_preset("simple", input_shape=network_input_shape(bundle),
                               num_classes=bundle.num_classes)
    model = kerascnn.build_cnn(spec, preprocessing=preprocessing_layers(bundle),
                               raw_input_shape=bundle.input_shape)
    compile_model(model)
    steps = min(steps, int(bundle.train.cardinality()))
    batches = bundle.train.take(steps)
    model.fit(batches.take(3), epochs=1, verbose=0, shuffle=False)  # trace and compile
    train_images = steps * args.batch_size if steps < int(bundle.train.cardinality()) \
        else epoch_images
    seconds = repeat_timed(lambda: model.fit(batches, epochs=1, verbose=0, shuffle=False),
                           repeats=args.repeats, warmup=0)
    train_rate = train_images / median(seconds)
    say(f"training simple ({model.count_params():,} params): {train_rate:,.0f} images/s "
        f"(median of {len(seconds)} x {steps} batches, spread {spread(seconds):.0%})")
    ratio = pipeline_rate / train_rate
    say(f"ratio pipeline / training: {ratio:.1f} (target >= 5)")

    # -- a folder of PNGs: decoding in the first epoch, the cache afterwards
    limit = 1000 if args.quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        n = write_png_folder(bundle, Path(tmp) / "pngs", limit)
        folder = load_dataset(Path(tmp) / "pngs", batch_size=args.batch_size,
                              validation_split=0.0)
        start = time.perf_counter()
        first_images = iterate(folder.train)
        first_rate = first_images / (time.perf_counter() - start)
        seconds = repeat_timed(lambda: iterate(folder.train), repeats=args.repeats, warmup=0)
        cached_rate = first_images / median(seconds)
    say(f"folder of {n} PNGs: first epoch (decode) {first_rate:,.0f} images/s, "
        f"cached epochs {cached_rate:,.0f} images/s ({cached_rate / first_rate:.1f}x)")

    emit("pipeline", ratio=ratio, pipeline_images_per_s=pipeline_rate,
         train_images_per_s=train_rate, folder_first_epoch_images_per_s=first_rate,
         folder_cached_images_per_s=cached_rate, dataset=bundle.source,
         batch_size=args.batch_size, train_steps=steps, repeats=args.repeats, quick=args.quick,
         tensorflow=tf.__version__, cores=os.cpu_count(), targets={"ratio": target(">=", 5)})


if __name__ == "__main__":
    main()
