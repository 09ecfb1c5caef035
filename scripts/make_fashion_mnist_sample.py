"""Build kerascnn's bundled sample of Fashion-MNIST, reproducibly.

The sample is a stratified subset of the original Fashion-MNIST files
(Zalando Research, MIT licence): 600 training images of each of the 10 classes
(6,000) and 100 test images of each class (1,000), 28x28 grayscale, picked by a
fixed seed and kept in their original order. It is written as a compressed
`.npz` in the `keras.datasets` layout (`x_train`, `y_train`, `x_test`, `y_test`,
plus `class_names`), with fixed zip timestamps so that the same input files
always give the same bytes.

Usage:

    python scripts/make_fashion_mnist_sample.py \
        [--source /usr/share/datasets/fashion-mnist] \
        [--output kerascnn/data/fashion_mnist_sample.npz]

The original files are the idx `.gz` files from
https://github.com/zalandoresearch/fashion-mnist (Debian/Ubuntu:
`apt install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from kerascnn.data.builtin import FASHION_MNIST_CLASSES
from kerascnn.data.idx import read_idx

SEED = 20170825  # Fashion-MNIST's release date
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
REPO = Path(__file__).resolve().parents[1]


def stratified_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of every class, chosen by `rng`, in ascending order."""
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picked))


def write_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez_compressed`, but with fixed zip timestamps (same input -> same bytes)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compresslevel=9)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                        help="folder with the four Fashion-MNIST idx .gz files")
    parser.add_argument("--output", type=Path,
                        default=REPO / "kerascnn" / "data" / "fashion_mnist_sample.npz")
    args = parser.parse_args()

    x_train = read_idx(args.source / "train-images-idx3-ubyte.gz")
    y_train = read_idx(args.source / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(args.source / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(args.source / "t10k-labels-idx1-ubyte.gz")
    if x_train.shape != (60000, 28, 28) or x_test.shape != (10000, 28, 28):
        raise SystemExit(f"{args.source} does not hold the Fashion-MNIST files: shapes "
                         f"{x_train.shape} and {x_test.shape}")

    rng = np.random.default_rng(SEED)
    train = stratified_subset(y_train, TRAIN_PER_CLASS, rng)
    test = stratified_subset(y_test, TEST_PER_CLASS, rng)
    arrays = {
        "x_train": x_train[train], "y_train": y_train[train],
        "x_test": x_test[test], "y_test": y_test[test],
        "class_names": np.array(FASHION_MNIST_CLASSES),
    }
    write_npz_reproducibly(args.output, arrays)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes, sha256 {digest})")
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=10)
        print(f"  {split}: {len(arrays[f'y_{split}'])} images, per class {counts.tolist()}")


if __name__ == "__main__":
    main()
