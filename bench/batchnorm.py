"""How much faster batch norm trains on TensorFlow's fused kernel (`kerascnn.batchnorm`).

For a few conv nets with batch norm, as `kerascnn.build_cnn` makes them
(28x28x1 input, 10 classes, adam, batch 128), the steady training speed in
images per second with Keras's own `BatchNormalization` computation and with
the fused kernel, the two interleaved in each repetition (median kept). The
first epoch of each model (tracing) is not timed.

    python bench/batchnorm.py [--quick] [--repeats N]

Target: the fused kernel at least 1.2x faster on the median network.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import bench_parser, emit, machine, median, say, target  # noqa: E402

from kerascnn import runtime  # noqa: E402

runtime.start()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerascnn import build_cnn  # noqa: E402

NETS = {  # conv_blocks, convs_per_block, filters
    "2x1 blocks, 32 filters": (2, 1, 32),
    "2x2 blocks, 16 filters": (2, 2, 16),
    "2x2 blocks, 32 filters": (2, 2, 32),
    "3x2 blocks, 32 filters": (3, 2, 32),
}


def images_per_second(model, data, images: int, epochs: int) -> float:
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    return images * epochs / (time.perf_counter() - start)


def unfused(model) -> None:
    """Give the model's batch norm layers Keras's own computation back."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            vars(layer).pop("call", None)


def main(argv=None) -> int:
    args = bench_parser(__doc__, repeats=3, quick_repeats=1).parse_args(argv)
    images = 2560 if args.quick else 10240
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, images)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(128).prefetch(2)
    nets = dict(list(NETS.items())[:2]) if args.quick else NETS
    rows = {}
    for name, (blocks, convs, filters) in nets.items():
        speeds = {"keras": [], "fused": []}
        models = {}
        for kind in speeds:
            keras.utils.set_random_seed(0)
            model = build_cnn(input_shape=(28, 28, 1), num_classes=10, conv_blocks=blocks,
                              convs_per_block=convs, filters=filters, batch_norm=True,
                              preprocessing=[keras.layers.Rescaling(1 / 255)])
            if kind == "keras":
                unfused(model)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            model.fit(data, epochs=1, verbose=0)  # tracing, not timed
            models[kind] = model
        for _ in range(args.repeats):  # interleaved: a change of load hits both
            for kind, model in models.items():
                speeds[kind].append(images_per_second(model, data, images, 1))
        keras_speed, fused_speed = median(speeds["keras"]), median(speeds["fused"])
        rows[name] = {"keras_images_per_s": keras_speed, "fused_images_per_s": fused_speed,
                      "speedup": fused_speed / keras_speed}
        say(f"{name}: Keras {keras_speed:.0f} images/s, fused {fused_speed:.0f} images/s, "
            f"{fused_speed / keras_speed:.2f}x")
        keras.backend.clear_session()
    speedup = median([r["speedup"] for r in rows.values()])
    emit("batchnorm", quick=args.quick, repeats=args.repeats, images=images,
         median_speedup=speedup, networks=rows, machine=machine(),
         targets={"median_speedup": target(">=", 1.2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
