"""Shared fixtures: quiet TensorFlow, seeded Keras, no network, slow-test switch, tiny data.

Tiny data and models for every test file live here, so each file does not make
its own:

* `quadrant_images(n, size, classes, channels, seed)` (also the fixture
  `make_images`): uint8 images whose class is the bright quadrant, a problem a
  one-block CNN learns in a couple of epochs;
* `write_npz(path, ...)` (fixture `make_npz`): such images as an `.npz` in the
  keras.datasets layout;
* `write_image_folder(root, ...)` (fixture `make_image_folder`): a folder of
  class subfolders of PNG files;
* ready-made files, made once per session and shared (do not modify them):
  `gray_npz` (28x28x1, 4 classes), `rgb_npz` (16x16x3, 3 classes),
  `quadrant_npz` (12x12x1, 3 named classes, learnable), `sample_npz` (a few
  hundred real Fashion-MNIST images from the bundled sample), `png_folder`
  (3 class folders of 10x12 RGB PNGs);
* `tiny_bundle`: the real `kerascnn.load_dataset` of `gray_npz`;
  `tiny_spec` / `tiny_model`: a one-block CNN for it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# never let a test reach a dataset host: tensorflow-datasets reads from here only
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-kerascnn-tfds")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _keras_session():
    """Seed Keras before, and clear its session after, tests that use Keras.

    Tests that never touch Keras pay nothing; the session is cleared without a
    full garbage collection (seconds on a loaded machine), which
    `_collect_garbage` does once per module instead.
    """
    import sys

    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(0)
    yield
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage():
    yield
    import gc

    gc.collect()


@pytest.fixture
def keras_seed():
    import keras

    keras.utils.set_random_seed(0)
    return 0


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


# ---------------------------------------------------------------------------- tiny data


def quadrant_images(n: int, size: int = 12, classes: int = 3, channels: int = 1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images `(n, size, size, channels)` whose class is the bright quadrant.

    Background pixels are 0..59, the quadrant of class c (0 top left, 1 top right,
    2 bottom left, 3 bottom right) gets +180. Labels are int64, every class
    present when `n >= classes` (class ids cycle, then are shuffled).
    """
    if not 2 <= classes <= 4:
        raise ValueError(f"quadrant images have 2 to 4 classes, not {classes}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = rng.integers(0, 60, size=(n, size, size, channels))
    half = size // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 180
    return x.astype(np.uint8), y


def write_npz(path: str | os.PathLike, *, n_train: int = 120, n_test: int = 40,
              size: int = 12, classes: int = 3, channels: int = 1, seed: int = 0,
              class_names: list[str] | None = None, squeeze: bool = False) -> Path:
    """Quadrant images as an `.npz` in the keras.datasets layout; returns the path.

    `squeeze=True` stores gray images as (N, H, W), as keras.datasets.mnist does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x_train, y_train = quadrant_images(n_train, size, classes, channels, seed)
    x_test, y_test = quadrant_images(n_test, size, classes, channels, seed + 1)
    if squeeze and channels == 1:
        x_train, x_test = x_train[..., 0], x_test[..., 0]
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    if class_names is not None:
        arrays["class_names"] = np.array(class_names)
    np.savez(path, **arrays)
    return path


def write_image_folder(root: str | os.PathLike, classes=("cat", "dog", "eel"),
                       per_class: int = 10, size=(10, 12), mode: str = "RGB",
                       seed: int = 1, ext: str = "png") -> Path:
    """A folder of class subfolders, `per_class` random images of `size` each."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(
                root / c / f"{i:03d}.{ext}")
    return root


@pytest.fixture(scope="session")
def make_images():
    """`quadrant_images` for tests that want other sizes."""
    return quadrant_images


@pytest.fixture(scope="session")
def make_npz():
    """`write_npz(path, ...)` for tests that want their own `.npz`."""
    return write_npz


@pytest.fixture(scope="session")
def make_image_folder():
    """`write_image_folder(root, ...)` for tests that want their own class folders."""
    return write_image_folder


@pytest.fixture(scope="session")
def gray_npz(tmp_path_factory) -> Path:
    """28x28 gray uint8 images (stored (N, 28, 28)), 4 classes: 160 train, 40 test."""
    return write_npz(tmp_path_factory.mktemp("data") / "gray.npz", n_train=160, n_test=40,
                     size=28, classes=4, squeeze=True)


@pytest.fixture(scope="session")
def rgb_npz(tmp_path_factory) -> Path:
    """16x16 RGB uint8 images, 3 classes: 90 train, 30 test."""
    return write_npz(tmp_path_factory.mktemp("data") / "rgb.npz", n_train=90, n_test=30,
                     size=16, channels=3, classes=3)


@pytest.fixture(scope="session")
def quadrant_npz(tmp_path_factory) -> Path:
    """12x12 gray images, 3 classes named top_left/top_right/bottom_left: 240 train, 60 test."""
    return write_npz(tmp_path_factory.mktemp("data") / "quadrants.npz", n_train=240,
                     n_test=60, size=12, classes=3,
                     class_names=["top_left", "top_right", "bottom_left"])


@pytest.fixture(scope="session")
def sample_npz(tmp_path_factory) -> Path:
    """360 train / 100 test real 28x28 Fashion-MNIST images from the bundled sample."""
    from kerascnn.data import builtin

    path = tmp_path_factory.mktemp("data") / "fashion_small.npz"
    with np.load(builtin.SAMPLE_PATH) as f:
        np.savez(path, x_train=f["x_train"][:360], y_train=f["y_train"][:360],
                 x_test=f["x_test"][:100], y_test=f["y_test"][:100])
    return path


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory) -> Path:
    """Class folders cat/, dog/, eel/ of 10 random 10x12 RGB PNGs each."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "pets")


@pytest.fixture
def tiny_bundle(gray_npz):
    """`kerascnn.load_dataset(gray_npz)`: 120 train, 40 validation, 40 test, batches of 16."""
    from kerascnn.data import load_dataset

    return load_dataset(gray_npz, validation_split=0.25, batch_size=16)


@pytest.fixture(scope="session")
def tiny_spec():
    """A one-block CNN for 28x28x1 images and 4 classes (a few thousand parameters)."""
    from kerascnn.spec import CNNSpec

    return CNNSpec(input_shape=(28, 28, 1), num_classes=4, conv_blocks=1, convs_per_block=1,
                   filters=4, dense_units=(8,))


@pytest.fixture
def tiny_model(tiny_spec):
    """`build_cnn(tiny_spec)` with a `Rescaling(1/255)` input layer: takes raw uint8 pixels."""
    import keras

    from kerascnn.builders import build_cnn

    return build_cnn(tiny_spec, preprocessing=[keras.layers.Rescaling(1 / 255)])
