"""How fast `kerascnn predict` goes through a folder of images.

Writes N random 28x28 grayscale PNGs (Fashion-MNIST's size) and N 96x80 RGB
JPEGs to a temporary folder, saves LeNet-5 (raw 28x28 pixels, rescaled and
resized to 32x32 inside the model) and a 64x64 RGB `simple` network, and times
`kerascnn.predict` on each folder (first call, which traces the model, and a
second one), against one `model.predict` call per image (what a naive loop
does). Process start-up and the TensorFlow import are not counted.

    python bench/predict_speed.py [--quick] [--images 1000] [--batch-size 64]

`--quick`: 200 images, 20 timed one by one. No target: the figures show what
batching buys (`speedup` = batched / one at a time).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_parser, emit, say  # noqa: E402


def write_images(folder: Path, n: int, size, mode: str, ext: str) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shape = size if mode == "L" else (*size, 3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"{i:05d}.{ext}")


def bench(name: str, model_path: Path, folder: Path, n: int, batch_size: int,
          naive: int) -> dict:
    import numpy as np

    import kerascnn
    from kerascnn.evaluation import find_images, load_image

    model = kerascnn.load_model(model_path, compile=False)
    start = time.perf_counter()
    kerascnn.predict(model, [folder], batch_size=batch_size)  # cold: includes tracing
    cold = time.perf_counter() - start
    start = time.perf_counter()
    result = kerascnn.predict(model, [folder], batch_size=batch_size)
    batched = time.perf_counter() - start
    assert len(result) == n and np.allclose(result.probabilities.sum(1), 1, atol=1e-4)

    h, w, c = model.inputs[0].shape[1:]
    files = find_images([folder])[:naive]
    start = time.perf_counter()
    for f in files:
        model.predict(load_image(f, (h, w), c)[None].astype("float32"), verbose=0)
    one_by_one = (time.perf_counter() - start) / len(files)
    say(f"{name:28s} {n} images: {n / batched:6.0f} images/s batched (batch {batch_size}; "
        f"first call, with tracing: {n / cold:.0f}/s); one model.predict per image: "
        f"{1 / one_by_one:.0f} images/s (timed on {len(files)})")
    return {"batched_images_per_s": n / batched, "cold_images_per_s": n / cold,
            "one_by_one_images_per_s": 1 / one_by_one, "speedup": one_by_one * n / batched}


def main() -> None:
    parser = bench_parser(__doc__, repeats=1, quick_repeats=1)
    parser.add_argument("--images", type=int, default=None,
                        help="images per folder (default 1000, 200 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--naive", type=int, default=None,
                        help="images timed with one model.predict call each "
                             "(default 100, 20 with --quick)")
    args = parser.parse_args()
    args.images = args.images or (200 if args.quick else 1000)
    args.naive = args.naive or (20 if args.quick else 100)

    import keras

    import kerascnn
    from kerascnn.runs import save_model

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gray, rgb = tmp / "gray", tmp / "rgb"
        write_images(gray, args.images, (28, 28), "L", "png")
        write_images(rgb, args.images, (96, 80), "RGB", "jpg")
        lenet = kerascnn.build_cnn("lenet5", raw_input_shape=(28, 28, 1), preprocessing=[
            keras.layers.Rescaling(1 / 255), keras.layers.Resizing(32, 32)])
        save_model(lenet, tmp / "lenet5.keras", class_names=[str(i) for i in range(10)])
        simple = kerascnn.build_cnn("simple", input_shape=(64, 64, 3), num_classes=10,
                                    preprocessing=[keras.layers.Rescaling(1 / 255)])
        save_model(simple, tmp / "simple.keras")
        say(f"cpu cores: {os.cpu_count()}")
        lenet = bench("lenet5, 28x28 gray PNG", tmp / "lenet5.keras", gray, args.images,
                      args.batch_size, args.naive)
        simple = bench("simple, 96x80 JPEG -> 64x64", tmp / "simple.keras", rgb, args.images,
                       args.batch_size, args.naive)
    emit("predict_speed", **{f"lenet5_{k}": v for k, v in lenet.items()},
         **{f"simple_{k}": v for k, v in simple.items()}, images=args.images,
         batch_size=args.batch_size, quick=args.quick, cores=os.cpu_count(), targets={})


if __name__ == "__main__":
    main()
