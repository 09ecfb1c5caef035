"""kerascnn.data: every source, splits, the pipeline, preprocessing layers, bad input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerascnn.checks import InputError
from kerascnn.data import (DatasetBundle, list_datasets, load_dataset, network_input_shape,
                           preprocessing_layers, stratified_split)
from kerascnn.data.builtin import FASHION_MNIST_CLASSES, IDX_FILES, SAMPLE_PATH
from kerascnn.data.idx import read_idx, write_idx

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------- helpers


def _labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % classes).astype(np.uint8)


def write_idx_dataset(folder: Path, n_train: int = 120, n_test: int = 40, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": RNG.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": _labels(n_train, 10, 1),
        "x_test": RNG.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": _labels(n_test, 10, 2),
    }
    for key, fname in IDX_FILES.items():
        write_idx(folder / fname, arrays[key])
    return folder


def split_y(bundle: DatasetBundle, split: str) -> np.ndarray:
    return np.concatenate([y for _, y in getattr(bundle, split).as_numpy_iterator()])


def split_x(bundle: DatasetBundle, split: str) -> np.ndarray:
    return np.concatenate([x for x, _ in getattr(bundle, split).as_numpy_iterator()])


# ---------------------------------------------------------------------------- bundled sample


def test_bundled_sample_is_the_default():
    bundle = load_dataset()
    assert bundle.source == "fashion_mnist_sample"
    assert bundle.input_shape == (28, 28, 1)
    assert bundle.class_names == FASHION_MNIST_CLASSES
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (5400, 600, 1000)
    assert bundle.kind == "image" and bundle.dtype == "uint8"
    x, y = next(iter(bundle.train))
    assert x.shape == (128, 28, 28, 1) and x.dtype.name == "uint8" and y.dtype.name == "int32"
    # stratified: 60 validation images of every class, test 100 of every class
    assert np.bincount(split_y(bundle, "validation")).tolist() == [60] * 10
    assert np.bincount(bundle.arrays("test")[1]).tolist() == [100] * 10
    # numpy access is the arrays themselves
    xa, ya = bundle.arrays("validation")
    assert xa.shape == (600, 28, 28, 1) and np.array_equal(ya, split_y(bundle, "validation"))
    assert bundle.arrays("train", limit=7)[0].shape == (7, 28, 28, 1)


def test_bundled_sample_file_and_licence():
    assert SAMPLE_PATH.stat().st_size < 5_000_000
    licence = (SAMPLE_PATH.parent / "LICENSE.fashion-mnist").read_text()
    assert "MIT License" in licence and "Zalando SE" in licence and "1708.07747" in licence
    with np.load(SAMPLE_PATH, allow_pickle=False) as f:
        assert f["x_train"].shape == (6000, 28, 28) and f["x_test"].shape == (1000, 28, 28)
        assert np.bincount(f["y_train"]).tolist() == [600] * 10


def test_sample_matches_the_original_files():
    """Every sample image is an original Fashion-MNIST test image with its label."""
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / IDX_FILES["x_test"]).exists():
        pytest.skip("Fashion-MNIST idx files not installed")
    x_test, y_test = read_idx(folder / IDX_FILES["x_test"]), read_idx(folder / IDX_FILES["y_test"])
    index = {img.tobytes(): label for img, label in zip(x_test, y_test)}
    with np.load(SAMPLE_PATH) as f:
        for img, label in zip(f["x_test"][:50], f["y_test"][:50]):
            assert index[img.tobytes()] == label


# ---------------------------------------------------------------------------- splits


def test_stratified_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [100, 50, 20, 10])
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(180))
    assert np.bincount(labels[held]).tolist() == [20, 10, 4, 2]
    kept2, held2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(held, held2) and np.array_equal(kept, kept2)
    assert not np.array_equal(np.sort(held), np.sort(stratified_split(labels, 0.2, seed=4)[1]))
    assert len(stratified_split(labels, 0.0, seed=0)[1]) == 0


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.integers(0, 5), min_size=1, max_size=300),
       fraction=st.floats(0.0, 0.95), seed=st.integers(0, 2**31))
def test_stratified_split_property(labels, fraction, seed):
    labels = np.array(labels)
    kept, held = stratified_split(labels, fraction, seed)
    # a partition of all positions
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    # every class gives round(fraction * its count) examples to the held-out part
    for c in np.unique(labels):
        assert np.sum(labels[held] == c) == round(fraction * np.sum(labels == c))


def test_determinism_and_fingerprint():
    a = load_dataset(seed=1, batch_size=256)
    b = load_dataset(seed=1, batch_size=64)
    c = load_dataset(seed=2)
    assert a.fingerprint == b.fingerprint  # the batch size does not change the data
    assert np.array_equal(a.arrays("validation")[1], b.arrays("validation")[1])
    assert np.array_equal(split_x(a, "validation"), split_x(b, "validation"))
    assert c.fingerprint != a.fingerprint
    assert not np.array_equal(a.arrays("validation")[1], c.arrays("validation")[1])
    # the test split never depends on the seed
    assert np.array_equal(a.arrays("test")[0], c.arrays("test")[0])
    assert load_dataset(validation_split=0.2, seed=1).fingerprint != a.fingerprint
    # training order: reshuffled every epoch, the same sequence for the same seed
    first, second = split_y(a, "train"), split_y(a, "train")
    assert not np.array_equal(first, second)
    assert np.array_equal(first, split_y(load_dataset(seed=1, batch_size=256), "train"))


def test_no_validation_split():
    bundle = load_dataset(validation_split=0.0)
    assert bundle.validation is None and bundle.num_validation == 0 and bundle.num_train == 6000
    assert bundle.arrays("validation")[0].shape == (0, 28, 28, 1)


# ---------------------------------------------------------------------------- idx files


def test_idx_roundtrip_and_corrupt_file(tmp_path):
    a = RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", a)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte", a)), a)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="Cannot read the idx file .*bad.gz"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "trunc").write_bytes((tmp_path / "a-idx3-ubyte").read_bytes()[:-7])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(tmp_path / "trunc")
    (tmp_path / "noidx").write_bytes(b"\x01\x02\x03\x04abc")
    with pytest.raises(InputError, match="is not an idx file"):
        read_idx(tmp_path / "noidx")


def test_fashion_mnist_from_idx_files_in_data_dir(tmp_path):
    write_idx_dataset(tmp_path / "fashion_mnist")
    bundle = load_dataset("fashion_mnist", data_dir=tmp_path, validation_split=0.25, seed=5)
    assert str(tmp_path / "fashion_mnist") in bundle.location
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (90, 30, 40)
    assert bundle.input_shape == (12, 12, 1) and bundle.class_names == FASHION_MNIST_CLASSES
    assert np.bincount(bundle.arrays("validation")[1]).tolist() == [3] * 10


def test_mnist_from_env_dir_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASCNN_DATA_DIR", str(write_idx_dataset(tmp_path / "env")))
    bundle = load_dataset("mnist", color_mode="rgb")
    assert bundle.class_names == tuple("0123456789") and bundle.input_shape == (12, 12, 3)
    assert [r for r in list_datasets() if r["name"] == "mnist"][0]["available"]
    monkeypatch.setenv("KERASCNN_DATA_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    start = time.monotonic()
    with pytest.raises(InputError, match=r"Dataset 'mnist' is not on this machine and "
                                         r"download=False.*pass --download"):
        load_dataset("mnist")
    assert time.monotonic() - start < 10
    row = [r for r in list_datasets() if r["name"] == "mnist"][0]
    assert not row["available"] and row["source_kind"] == "download"


# ---------------------------------------------------------------------------- npz


def test_npz_keras_layout_and_class_names(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=RNG.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8),
             y_train=_labels(60, 3).reshape(-1, 1),  # cifar-style (N, 1) labels
             x_test=RNG.integers(0, 256, (15, 8, 8, 3), dtype=np.uint8), y_test=_labels(15, 3),
             class_names=np.array(["a", "b", "c"]))
    bundle = load_dataset(path, validation_split=0.2, batch_size=16)
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (48, 12, 15)
    assert bundle.class_names == ("a", "b", "c") and bundle.input_shape == (8, 8, 3)
    gray = load_dataset(str(path), color_mode="grayscale")
    assert gray.input_shape == (8, 8, 1) and gray.arrays()[0].dtype == np.uint8


def test_npz_x_y_carves_a_stratified_test_split(tmp_path):
    path = tmp_path / "xy.npz"
    y = _labels(100, 4)
    np.savez(path, x=RNG.integers(0, 256, (100, 6, 6), dtype=np.uint8), y=y)
    bundle = load_dataset(path, validation_split=0.25, seed=9)
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (60, 20, 20)
    assert np.bincount(bundle.arrays("test")[1]).tolist() == [5, 5, 5, 5]
    assert np.bincount(bundle.arrays("validation")[1]).tolist() == [5, 5, 5, 5]
    assert bundle.input_shape == (6, 6, 1)  # uint8 rank 3: gray images
    # the carved test split is the same for every seed
    other = load_dataset(path, validation_split=0.25, seed=10)
    assert np.array_equal(bundle.arrays("test")[0], other.arrays("test")[0])


def test_npz_signals_and_volumes(tmp_path):
    np.savez(tmp_path / "sig.npz", x=RNG.normal(size=(40, 50, 2)).astype("float32"),
             y=_labels(40, 2))
    sig = load_dataset(tmp_path / "sig.npz", batch_size=8)
    assert sig.kind == "signal" and sig.input_shape == (50, 2) and sig.dtype == "float32"
    x, _ = next(iter(sig.train))
    assert x.dtype.name == "float32" and x.shape == (8, 50, 2)
    assert preprocessing_layers(sig) == []  # float signals: no rescaling
    assert network_input_shape(sig) == (50, 2)

    np.savez(tmp_path / "vol.npz", x=RNG.integers(0, 256, (30, 4, 6, 6, 1), dtype=np.uint8),
             y=_labels(30, 3))
    vol = load_dataset(tmp_path / "vol.npz")
    assert vol.kind == "volume" and vol.input_shape == (4, 6, 6, 1)
    assert [layer.name for layer in preprocessing_layers(vol)] == ["rescaling"]


# ---------------------------------------------------------------------------- folders


def test_folder_of_pngs(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    bundle = load_dataset(root, validation_split=0.2, batch_size=4)
    assert bundle.class_names == ("cat", "dog", "eel")
    assert bundle.input_shape == (10, 12, 3)
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (18, 6, 6)
    assert np.bincount(bundle.arrays("test")[1]).tolist() == [2, 2, 2]
    x, y = next(iter(bundle.train))
    assert x.dtype.name == "uint8" and x.shape == (4, 10, 12, 3)
    # the pixels are the files' pixels
    from PIL import Image

    xs, ys = bundle.arrays("validation")
    originals = {np.asarray(Image.open(p)).tobytes() for p in root.rglob("*.png")}
    assert all(img.tobytes() in originals for img in xs)
    gray = load_dataset(root, color_mode="grayscale")
    assert gray.input_shape == (10, 12, 1)


def test_folder_grayscale_detected_and_train_test_layout(tmp_path, make_image_folder):
    make_image_folder(tmp_path / "d" / "train", classes=("a", "b"), per_class=6, mode="L")
    make_image_folder(tmp_path / "d" / "test", classes=("a", "b"), per_class=3, mode="L")
    bundle = load_dataset(tmp_path / "d", validation_split=0.5)
    assert bundle.input_shape == (10, 12, 1)
    assert (bundle.num_train, bundle.num_validation, bundle.num_test) == (6, 6, 6)


def test_folder_mixed_sizes_need_image_size(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "m", classes=("a", "b"), per_class=4)
    make_image_folder(root, classes=("b",), per_class=2, size=(20, 16))  # overwrites 2 of b
    with pytest.raises(InputError, match=r"have 2 different sizes .*pass image_size"):
        load_dataset(root)
    bundle = load_dataset(root, image_size=(9, 9), validation_split=0.0)
    assert bundle.input_shape == (9, 9, 3) and bundle.image_size == (9, 9)
    assert bundle.arrays("train")[0].shape[1:] == (9, 9, 3)
    assert network_input_shape(bundle) == (9, 9, 3)
    assert "resizing" not in [layer.name for layer in preprocessing_layers(bundle)]


def test_folder_bad_inputs(tmp_path, make_image_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no class subfolders"):
        load_dataset(empty)
    loose = tmp_path / "loose"
    make_image_folder(loose, classes=("x",), per_class=2)
    for p in (loose / "x").iterdir():
        p.rename(loose / p.name)
    (loose / "x").rmdir()
    with pytest.raises(InputError, match="holds 2 images directly: move them into one subfolder"):
        load_dataset(loose)
    root = make_image_folder(tmp_path / "r", classes=("a", "b"), per_class=3)
    (root / "c").mkdir()
    (root / "c" / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"class folder '.*/c' holds no images"):
        load_dataset(root)
    (root / "c" / "readme.md").unlink()
    (root / "c").rmdir()
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(InputError, match=r"Could not read image '.*b/broken.png'"):
        load_dataset(root)
    one = make_image_folder(tmp_path / "one", classes=("a",), per_class=3)
    with pytest.raises(InputError, match="at least 2 class subfolders"):
        load_dataset(one)


# ---------------------------------------------------------------------------- tfds


def _prepare_mock_metadata(data_dir: Path, name: str = "mnist", num_examples: int = 40):
    """Write the metadata of a prepared copy; mock_data supplies the examples."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0,
                            filename_template=None) for s in ("train", "test")]))
    Path(builder.data_path).mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


def test_tfds_source_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path)):
        _prepare_mock_metadata(tmp_path)
        bundle = load_dataset("tfds:mnist", data_dir=tmp_path, validation_split=0.25,
                              batch_size=8)
        assert bundle.input_shape == (28, 28, 1) and bundle.num_classes == 10
        assert bundle.num_validation + bundle.num_train == 40 and bundle.num_test == 40
        assert bundle.num_validation in range(6, 15)  # per class rounding of random labels
        x, y = next(iter(bundle.train))
        assert x.dtype.name == "uint8" and y.dtype.name == "int32" and x.shape[1:] == (28, 28, 1)
        xv, yv = bundle.arrays("validation")
        assert len(yv) == bundle.num_validation and np.array_equal(
            np.sort(yv), np.sort(split_y(bundle, "validation")))
        assert "tensorflow-datasets mnist" in bundle.location
        rgb = load_dataset("tfds:mnist", data_dir=tmp_path, color_mode="rgb")
        assert rgb.input_shape == (28, 28, 3)
        assert next(iter(rgb.test))[0].shape[1:] == (28, 28, 3)


def test_builtin_from_a_prepared_tfds_copy(tmp_path, monkeypatch):
    """mnist without idx files anywhere: a prepared tensorflow-datasets copy is used."""
    import tensorflow_datasets as tfds

    if Path("/usr/share/datasets/mnist").exists():
        pytest.skip("the system folder would be found first")
    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    with tfds.testing.mock_data(num_examples=30, data_dir=str(tmp_path)):
        _prepare_mock_metadata(tmp_path, "mnist", num_examples=30)
        row = [r for r in list_datasets(tmp_path) if r["name"] == "mnist"][0]
        assert row["available"] and row["source_kind"] == "tfds"
        bundle = load_dataset("mnist", data_dir=tmp_path, validation_split=0.2)
        assert bundle.source == "mnist" and "tensorflow-datasets mnist" in bundle.location
        assert bundle.num_train + bundle.num_validation == 30 and bundle.num_test == 30
        assert next(iter(bundle.train))[0].shape[1:] == (28, 28, 1)


def test_tfds_unprepared_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(InputError, match=r"'mnist' is not prepared in .*tfds build mnist "
                                         r"--data_dir DIR.*or pass --download"):
        load_dataset("tfds:mnist", data_dir=tmp_path)
    assert time.monotonic() - start < 10


def test_tfds_bad_names():
    for source, match in [
        ("tfds:", r"written tfds:NAME or tfds:NAME:CONFIG"),
        ("tfds:a:b:c", r"written tfds:NAME or tfds:NAME:CONFIG"),
        ("tfds:mnsit", r"Unknown tensorflow-datasets dataset 'mnsit'. Did you mean 'mnist'"),
        ("tfds:mnist:nosuchconfig", r"cannot make 'mnist' with config 'nosuchconfig'"),
    ]:
        with pytest.raises(InputError, match=match):
            load_dataset(source)


# ---------------------------------------------------------------------------- preprocessing


def test_preprocessing_layers_in_a_model():
    import keras

    bundle = load_dataset(batch_size=256)
    layers = preprocessing_layers(bundle, image_size=32, normalize=True,
                                  augmentation=["flip", {"name": "zoom", "factor": 0.1}],
                                  augmentation_strength=0.5)
    assert [layer.name for layer in layers] == ["rescaling", "resizing", "augment_flip",
                                                "augment_zoom", "normalization"]
    assert network_input_shape(bundle, 32) == (32, 32, 1)
    inputs = keras.Input(bundle.input_shape, dtype="uint8")
    x = inputs
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    assert model.output_shape == (None, 32, 32, 1)
    xs, _ = bundle.arrays("train", limit=2000)
    out = np.asarray(model(xs, training=False))
    # normalization was adapted on training data: about zero mean, unit variance
    assert abs(out.mean()) < 0.1 and abs(out.std() - 1) < 0.1
    assert [layer.name for layer in preprocessing_layers(bundle)] == ["rescaling"]


def test_image_size_on_load_resizes_in_the_model():
    bundle = load_dataset(image_size=(20, 24))
    assert bundle.input_shape == (28, 28, 1) and bundle.image_size == (20, 24)
    assert network_input_shape(bundle) == (20, 24, 1)
    assert [layer.name for layer in preprocessing_layers(bundle)] == ["rescaling", "resizing"]


def test_preprocessing_bad_input(tmp_path):
    np.savez(tmp_path / "sig.npz", x=RNG.normal(size=(20, 30, 1)).astype("float32"),
             y=_labels(20, 2))
    sig = load_dataset(tmp_path / "sig.npz")
    with pytest.raises(InputError, match=r"augmentation applies to images only.*Received: "
                                         r"augmentation=\['flip'\]"):
        preprocessing_layers(sig, augmentation=["flip"])
    with pytest.raises(InputError, match="image_size applies to images only"):
        network_input_shape(sig, 16)
    with pytest.raises(InputError, match="Unknown augmentation 'flop'"):
        preprocessing_layers(load_dataset(), augmentation=["flop"])


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_npz(tmp_path):
    def write(name, **arrays):
        path = tmp_path / name
        np.savez(path, **arrays)
        return path
    return write


def test_npz_bad_inputs(bad_npz, tmp_path):
    x = RNG.integers(0, 256, (10, 4, 4), dtype=np.uint8)
    cases = [
        (bad_npz("keys.npz", images=x, labels=_labels(10, 2)),
         r"lacks the expected arrays; allowed layouts: x_train.*Received: keys \['images', "
         r"'labels'\]"),
        (bad_npz("len.npz", x=x, y=_labels(9, 2)),
         r"x and y must have one label per example. Received: 10 examples and 9 labels"),
        (bad_npz("range.npz", x=x, y=np.array([0, 1, 2, 5, 0, 1, 2, 0, 1, -1]),
                 class_names=np.array(["a", "b", "c"])),
         r"Labels must be class ids 0..2 \(3 classes\). Received: labels \[-1, 5\]"),
        (bad_npz("neg.npz", x=x, y=np.array([0, 1] * 4 + [-1, 1])),
         r"Labels must be class ids 0..1"),
        (bad_npz("float_y.npz", x=x, y=np.linspace(0, 1, 10)),
         r"must hold integer class ids 0..C-1. Received: non-integer"),
        (bad_npz("rank.npz", x=np.zeros((10, 4), "float32"), y=_labels(10, 2)),
         r"must be images .* Received: x.shape=\(10, 4\)"),
        (bad_npz("shape.npz", x_train=x, y_train=_labels(10, 2),
                 x_test=np.zeros((4, 5, 5), np.uint8), y_test=_labels(4, 2)),
         r"x_train and x_test must have the same example shape"),
        (bad_npz("empty.npz", x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, np.int64)),
         r"x is empty"),
        (bad_npz("one.npz", x=x, y=np.zeros(10, np.int64)), r"at least 2 classes"),
        (bad_npz("nan.npz", x=np.full((10, 4, 1), np.nan, "float32"), y=_labels(10, 2)),
         r"holds NaN or infinite values"),
        (bad_npz("str.npz", x=np.array(["a"] * 10), y=_labels(10, 2)), r"must be numbers"),
    ]
    for path, match in cases:
        with pytest.raises(InputError, match=match):
            load_dataset(path)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "pickle.npz", "w") as z:
        z.write(tmp_path / "pickled.npy", "x.npy")
    with pytest.raises(InputError, match="without pickle"):
        load_dataset(tmp_path / "pickle.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="is not a readable .npz file"):
        load_dataset(tmp_path / "junk.npz")


BAD_ARGUMENTS = [
    ({"source": "fashon_mnist"}, r"Unknown dataset 'fashon_mnist'.*Did you mean 'fashion_mnist'"),
    ({"source": "cifar"}, r"Unknown dataset 'cifar'; allowed: fashion_mnist_sample"),
    ({"source": "/no/such/folder"}, r"The dataset path '/no/such/folder' does not exist"),
    ({"source": "missing.npz"}, r"The dataset path 'missing.npz' does not exist"),
    ({"source": 3}, r"source must be a dataset name"),
    ({"data_dir": "/no/such/dir"}, r"The data folder '/no/such/dir' does not exist"),
    ({"data_dir": 5}, r"data_dir must be a folder path or None. Received: data_dir=5"),
    ({"color_mode": ["rgb"]}, r"color_mode must be one of"),
    ({"validation_split": "0.1"}, r"validation_split must be a fraction"),
    ({"seed": 1.5}, r"seed must be an integer from 0 to 4294967295"),
    ({"seed": 2**32}, r"seed must be an integer from 0 to 4294967295. Received: seed=4294967296"),
    ({"validation_split": 1.0}, r"validation_split must be a fraction in \[0, 1\)"),
    ({"validation_split": -0.1}, r"validation_split must be a fraction"),
    ({"batch_size": 0}, r"batch_size must be a positive integer. Received: batch_size=0"),
    ({"batch_size": 2.5}, r"batch_size must be a positive integer"),
    ({"seed": -1}, r"seed must be an integer from 0 to 4294967295"),
    ({"color_mode": "cmyk"}, r"color_mode must be one of grayscale, rgb, rgba"),
    ({"color_mode": "rgba"}, r"color_mode='rgba' cannot be made from images with 1 channels"),
    ({"image_size": (0, 4)}, r"image_size must be \(height, width\) of integers from 1 to 32768"),
    # TensorFlow's resize counts in int32: 2**32 became a 0x0 image (exit 1)
    ({"image_size": 2**32}, r"image_size must be .* from 1 to 32768.* Received: image_size=4294967296"),
    ({"image_size": (1, 2, 3)}, r"image_size must be"),
    ({"image_size": "big"}, r"image_size must be"),
]


def test_load_dataset_bad_arguments():
    # one test for all cases: each is refused before anything is read
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(InputError, match=match):
            load_dataset(**kwargs)


def test_other_files_and_data_dir_file(tmp_path):
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"A dataset file must be an .npz"):
        load_dataset(tmp_path / "a.csv")
    with pytest.raises(InputError, match=r"is a file, not a folder"):
        load_dataset(data_dir=tmp_path / "a.csv")
    with pytest.raises(InputError, match=r"does not exist or is not a folder"):
        list_datasets(tmp_path / "nope")
    with pytest.raises(InputError, match=r"Received: data_dir='3'"):
        list_datasets(3)


def test_arrays_bad_split():
    bundle = load_dataset()
    with pytest.raises(InputError, match="split must be one of train, validation, test"):
        bundle.arrays("val")
    with pytest.raises(InputError, match="limit must be an int >= 0"):
        bundle.arrays("train", limit=-1)


# ---------------------------------------------------------------------------- CLI


def test_cli_lists_datasets(runner, tmp_path, monkeypatch):
    from kerascnn.cli import main

    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    write_idx_dataset(tmp_path / "mnist")
    result = runner.invoke(main, ["datasets", "--data-dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {"fashion_mnist_sample", "fashion_mnist", "mnist"}
    assert rows["fashion_mnist_sample"]["available"]
    assert rows["mnist"]["available"]
    assert rows["mnist"]["location"].endswith(str(tmp_path / "mnist"))
    assert rows["mnist"]["size_bytes"] > 0
    table = runner.invoke(main, ["datasets"])
    assert table.exit_code == 0 and "fashion_mnist_sample  yes" in table.output


def test_cli_describes_a_source_and_refuses_bad_ones(runner, tmp_path):
    from kerascnn.cli import main

    np.savez(tmp_path / "d.npz", x=RNG.integers(0, 256, (50, 5, 5), dtype=np.uint8),
             y=_labels(50, 5))
    result = runner.invoke(main, ["datasets", str(tmp_path / "d.npz"), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_test"] == 10 and info["class_counts"]["test"] == [2] * 5
    for args, words in [
        (["datasets", "fashon_mnist"], "Did you mean 'fashion_mnist'"),
        (["datasets", "--data-dir", str(tmp_path / "nope")], "does not exist"),
        (["datasets", str(tmp_path / "missing")], "does not exist"),
    ]:
        bad = runner.invoke(main, args)
        assert bad.exit_code == 2, bad.output
        lines = [line for line in bad.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0]
        assert "Traceback" not in bad.output


def test_import_does_not_load_tensorflow():
    import subprocess
    import sys

    code = ("import sys, kerascnn.data, kerascnn.cli.data; "
            "from kerascnn.data import DatasetBundle, list_datasets, network_input_shape; "
            "list_datasets(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.split() == ["False", "False"]


def test_bundle_made_by_hand_from_tf_data(make_images):
    """A DatasetBundle from three tf.data pipelines: the fields it lacks are derived."""
    import tensorflow as tf

    from kerascnn.data import as_bundle

    x, y = make_images(40, size=12, classes=2)

    def ds(a, b):
        return tf.data.Dataset.from_tensor_slices((a, b)).batch(8)

    bundle = DatasetBundle(ds(x[:24], y[:24]), ds(x[24:32], y[24:32]), ds(x[32:], y[32:]),
                           [12, 12, 1], 2, ["a", "b"], 24, 8, 8)
    assert (bundle.kind, bundle.dtype, bundle.batch_size) == ("image", "uint8", None)
    assert bundle.input_shape == (12, 12, 1) and bundle.class_names == ("a", "b")
    assert bundle.validation_split == pytest.approx(0.25)
    xs, ys = bundle.arrays("validation")
    assert np.array_equal(xs, x[24:32]) and np.array_equal(ys, y[24:32])
    assert bundle.arrays("train", limit=5)[0].shape == (5, 12, 12, 1)
    assert bundle.class_counts()["test"] == np.bincount(y[32:], minlength=2).tolist()
    assert as_bundle(bundle) is bundle
    layers = preprocessing_layers(bundle, normalize=True)
    assert [layer.name for layer in layers] == ["rescaling", "normalization"]
    floats = DatasetBundle(ds(x.astype("float32"), y), None, ds(x.astype("float32"), y),
                           (12, 12, 1), 2, ("a", "b"), 40, 0, 40)
    assert floats.dtype == "float32" and floats.validation_split == 0.0
    assert floats.arrays("validation")[0].shape == (0, 12, 12, 1)
    with pytest.raises(InputError, match=r"rank 2 \(signals\), 3 \(images\) or 4"):
        DatasetBundle(None, None, None, (5,), 2, ("a", "b"), 1, 0, 1)


def test_download_only_when_asked(tmp_path, monkeypatch):
    """download=True fetches the four idx files (keras.utils.get_file) into data_dir/<name>."""
    import keras

    monkeypatch.delenv("KERASCNN_DATA_DIR", raising=False)
    source = write_idx_dataset(tmp_path / "server")
    calls = []

    def fake_get_file(fname, origin, file_hash=None, hash_algorithm="auto", cache_dir=None,
                      cache_subdir="datasets"):
        calls.append((fname, origin, file_hash))
        target = Path(cache_dir) / cache_subdir / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / fname).read_bytes())
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(InputError, match="not on this machine and download=False"):
        load_dataset("mnist", data_dir=data_dir)
    assert calls == []
    bundle = load_dataset("mnist", data_dir=data_dir, download=True)
    assert bundle.num_test == 40 and str(data_dir / "mnist") in bundle.location
    assert [c[0] for c in calls] == list(IDX_FILES.values())
    assert all(c[1].startswith("https://") and len(c[2]) == 32 for c in calls)
    # the next load finds the files without downloading
    calls.clear()
    assert load_dataset("mnist", data_dir=data_dir).fingerprint == bundle.fingerprint
    assert calls == []


def test_as_bundle_passes_bundles_through_and_loads_names(gray_npz, tiny_bundle):
    from kerascnn.data import as_bundle

    bundle = as_bundle(gray_npz, batch_size=16)  # a PathLike is a source
    assert bundle.num_classes == 4 and bundle.input_shape == (28, 28, 1)
    assert bundle.fingerprint == load_dataset(str(gray_npz)).fingerprint
    assert as_bundle(tiny_bundle) is tiny_bundle
    with pytest.raises(InputError, match=r"dataset name or path.*Received: int"):
        as_bundle(42)


def test_shared_fixtures_load(gray_npz, rgb_npz, quadrant_npz, sample_npz, png_folder):
    """The conftest data every test file shares loads as described there."""
    expected = [(gray_npz, (28, 28, 1), 4, 160, 40), (rgb_npz, (16, 16, 3), 3, 90, 30),
                (quadrant_npz, (12, 12, 1), 3, 240, 60), (sample_npz, (28, 28, 1), 10, 360, 100),
                (png_folder, (10, 12, 3), 3, 24, 6)]
    for source, shape, classes, n_train, n_test in expected:
        bundle = load_dataset(source, validation_split=0.0)
        assert (bundle.input_shape, bundle.num_classes) == (shape, classes), source
        assert (bundle.num_train, bundle.num_test) == (n_train, n_test), source
    assert load_dataset(quadrant_npz).class_names == ("top_left", "top_right", "bottom_left")
    # the quadrant images are learnable: the bright quadrant is the class
    x, y = load_dataset(quadrant_npz).arrays("test")
    quadrants = np.stack([x[:, :6, :6].mean((1, 2, 3)), x[:, :6, 6:].mean((1, 2, 3)),
                          x[:, 6:, :6].mean((1, 2, 3))], axis=1)
    assert np.array_equal(quadrants.argmax(axis=1), y)
