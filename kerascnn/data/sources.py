"""Where examples come from: arrays, files in class folders, tensorflow-datasets.

Each loader checks its input completely before any training can start and
returns a `RawData`: a training pool, a test pool (or None: then the pipeline
carves the test split out of the training pool), class names, the raw shape
of one example and an identity string for the fingerprint. Pools are in
`kerascnn.data.pools`. Everything a loader refuses raises `InputError`.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow_datasets as tfds

from kerascnn.checks import InputError, received
from kerascnn.data import builtin as _builtin
from kerascnn.data.idx import read_idx
from kerascnn.data.pools import ArrayPool, FilePool, TfdsPool
from kerascnn.images import check_image

logger = logging.getLogger(__name__)

# what keras.utils.image_dataset_from_directory reads
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
TFDS_PREFIX = "tfds:"


@dataclass
class RawData:
    """What a source loader found; the pipeline splits and batches it."""

    train: Any
    test: Any | None
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    dtype: str  # "uint8" (pixels, rescaled in the model) or "float32"
    identity: str  # content digest for the fingerprint
    location: str
    image_size: tuple[int, int] | None = None  # set when images were resized while loading
    value_range: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return {2: "signal", 3: "image", 4: "volume"}[len(self.input_shape)]


# ---------------------------------------------------------------------------- helpers


def suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.shape, part.dtype.str)).encode())
            h.update(np.ascontiguousarray(part).data)
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def _labels(y: Any, what: str, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # keras.datasets.cifar10 keeps labels as (N, 1)
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{what} must hold one integer class id per example, shape (N,) or "
                         f"(N, 1). Received: {what}.shape={y.shape} in {source}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError(f"{what} must hold integer class ids 0..C-1. Received: "
                             f"non-integer values such as {y[y != np.round(y)][:3].tolist()} "
                             f"in {source}")
    elif y.dtype.kind not in "iub":
        raise InputError(f"{what} must hold integer class ids 0..C-1. Received: "
                         f"dtype={y.dtype} in {source}")
    return y.astype(np.int64)


def _examples(x: Any, what: str, source: str) -> np.ndarray:
    """Images (N,H,W,C), signals (N,L,C) or volumes (N,D,H,W,C) as uint8 or float32."""
    x = np.asarray(x)
    if x.dtype.kind not in "uif" or x.dtype.kind == "b":
        raise InputError(f"{what} must be numbers (uint8 pixels or floats). Received: "
                         f"dtype={x.dtype} in {source}")
    if x.ndim == 3 and x.dtype == np.uint8:
        # keras.datasets.mnist keeps gray images as (N, H, W): add the channel axis
        x = x[..., None]
    if x.ndim not in (3, 4, 5):
        raise InputError(
            f"{what} must be images (N, height, width, channels), signals (N, length, "
            f"channels) or volumes (N, depth, height, width, channels); uint8 arrays of rank 3 "
            f"are gray images (N, height, width). Received: {what}.shape={x.shape} in {source}")
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        if x.size and 0 <= x.min() and x.max() <= 255:
            x = x.astype(np.uint8)
        else:
            x = x.astype(np.float32)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise InputError(f"{what} holds NaN or infinite values; allowed: finite numbers. "
                             f"Received: {int(np.sum(~np.isfinite(x)))} non-finite values in "
                             f"{source}")
    return x


def check_arrays(x_train, y_train, x_test, y_test, class_names, source: str) -> RawData:
    """Validate arrays and wrap them as pools (x_test/y_test may be None)."""
    x_train = _examples(x_train, "x_train" if x_test is not None else "x", source)
    y_train = _labels(y_train, "y_train" if x_test is not None else "y", source)
    pairs = [("x_train", x_train, "y_train", y_train)] if x_test is not None else \
        [("x", x_train, "y", y_train)]
    if x_test is not None:
        x_test = _examples(x_test, "x_test", source)
        y_test = _labels(y_test, "y_test", source)
        pairs.append(("x_test", x_test, "y_test", y_test))
    for xn, x, yn, y in pairs:
        if len(x) != len(y):
            raise InputError(f"{xn} and {yn} must have one label per example. Received: "
                             f"{len(x)} examples and {len(y)} labels in {source}")
        if len(x) == 0:
            raise InputError(f"{xn} is empty; a dataset needs examples. Received: "
                             f"{xn}.shape={x.shape} in {source}")
    if x_test is not None and x_test.shape[1:] != x_train.shape[1:]:
        raise InputError(f"x_train and x_test must have the same example shape. Received: "
                         f"{x_train.shape[1:]} and {x_test.shape[1:]} in {source}")
    if x_test is not None and x_test.dtype != x_train.dtype:
        x_test = x_test.astype(np.float32)
        x_train = x_train.astype(np.float32)
    all_y = y_train if y_test is None else np.concatenate([y_train, y_test])
    if class_names is not None:
        class_names = tuple(str(c) for c in np.asarray(class_names).ravel())
    num_classes = len(class_names) if class_names else int(all_y.max()) + 1
    bad = all_y[(all_y < 0) | (all_y >= num_classes)]
    if bad.size:
        raise InputError(f"Labels must be class ids 0..{num_classes - 1} ({num_classes} "
                         f"classes). Received: labels {sorted(set(bad.tolist()))[:5]} in {source}")
    if num_classes < 2:
        raise InputError(f"A classification dataset needs at least 2 classes. Received: "
                         f"{num_classes} class in {source}")
    if not class_names:
        class_names = tuple(str(i) for i in range(num_classes))
    value_range = None
    if x_train.dtype == np.float32:
        value_range = (float(x_train.min()), float(x_train.max()))
    identity = _digest(x_train, y_train, x_test if x_test is not None else "carved",
                       y_test if y_test is not None else "", class_names)
    return RawData(
        train=ArrayPool(x_train, y_train.astype(np.int32)),
        test=None if x_test is None else ArrayPool(x_test, y_test.astype(np.int32)),
        class_names=class_names, input_shape=tuple(int(d) for d in x_train.shape[1:]),
        dtype=str(x_train.dtype), identity=identity, location=source,
        value_range=value_range)


def convert_color(raw: RawData, color_mode: str | None) -> RawData:
    """Gray <-> RGB conversion of in-memory images (`color_mode` of an array source)."""
    if color_mode is None:
        return raw
    if raw.kind != "image":
        raise InputError(f"color_mode applies to images only; this {raw.kind} data has shape "
                         f"{raw.input_shape}. Received: color_mode={color_mode!r}")
    want, have = COLOR_MODES[color_mode], raw.input_shape[-1]
    if want == have:
        return raw
    if (have, want) not in ((1, 3), (3, 1)):
        raise InputError(f"color_mode={color_mode!r} cannot be made from images with {have} "
                         f"channels; allowed: grayscale <-> rgb. Received: "
                         f"color_mode={color_mode!r}")

    def convert(x: np.ndarray) -> np.ndarray:
        if want == 3:
            return np.repeat(x, 3, axis=-1)
        gray = x.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
        gray = gray[..., None]
        return np.clip(np.round(gray), 0, 255).astype(np.uint8) if x.dtype == np.uint8 \
            else gray.astype(np.float32)

    raw.train = ArrayPool(convert(raw.train.x), raw.train.y)
    if raw.test is not None:
        raw.test = ArrayPool(convert(raw.test.x), raw.test.y)
    raw.input_shape = raw.input_shape[:-1] + (want,)
    return raw


# ---------------------------------------------------------------------------- sources


def load_builtin(name: str, data_dir, download: bool, color_mode: str | None = None) -> RawData:
    """A built-in dataset by name (see `kerascnn.data.builtin`)."""
    info = _builtin.BUILTINS[name]
    if name == "fashion_mnist_sample":
        return convert_color(load_npz(_builtin.SAMPLE_PATH, label=name), color_mode)
    where = _builtin.locate(name, data_dir)
    if where.kind == "idx":
        folder = Path(where.path)
    elif where.kind == "tfds":
        return load_tfds(info.tfds_name, None, data_dir=str(Path(where.path).parents[1]),
                         download=False, image_size=None, color_mode=color_mode, label=name)
    elif download:
        folder = download_builtin(name, data_dir)
    else:
        searched = [str(d) for d in _builtin.search_dirs(name, data_dir)]
        raise InputError(
            f"Dataset {name!r} is not on this machine and download=False. kerascnn looked for "
            f"its idx .gz files ({', '.join(_builtin.IDX_FILES.values())}) in "
            f"{', '.join(searched) or '(no folder)'} and for a prepared tensorflow-datasets "
            f"copy. Put the files in --data-dir or ${_builtin.ENV_DATA_DIR}"
            + (" (or `apt install dataset-fashion-mnist`)" if name == "fashion_mnist" else "")
            + ", or pass --download. Received: "
              f"source={name!r}, data_dir={str(data_dir) if data_dir else None!r}")
    logger.info("Reading %s from %s", name, folder)
    arrays = {key: read_idx(_builtin.idx_file(folder, fname))
              for key, fname in _builtin.IDX_FILES.items()}
    raw = check_arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       info.class_names, source=str(folder))
    raw.location = f"idx files in {folder}"
    return convert_color(raw, color_mode)


def download_builtin(name: str, data_dir: str | os.PathLike | None) -> Path:
    """Download the idx files of the built-in `name` (checked by MD5); return their folder."""
    builtin = _builtin.BUILTINS[name]
    root = _builtin.download_root(data_dir)
    md5 = dict(builtin.md5)
    for fname in _builtin.IDX_FILES.values():
        logger.info("Downloading %s%s", builtin.url, fname)
        keras.utils.get_file(fname, origin=builtin.url + fname, file_hash=md5.get(fname),
                             hash_algorithm="md5", cache_dir=str(root), cache_subdir=name)
    return root / name


def load_npz(path: Path, label: str | None = None) -> RawData:
    """An `.npz` in the keras.datasets layout, or with `x` and `y` (test carved)."""
    source = str(path)
    if not zipfile.is_zipfile(path):
        raise InputError(f"{source!r} is not a readable .npz file (not a zip archive of .npy "
                         f"arrays, as numpy.savez writes). Received: {source!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as e:
        raise InputError(f"Cannot read {source!r} without pickle ({e}); save plain numeric "
                         f"arrays with numpy.savez. Received: {source!r}") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{source!r} is not a readable .npz file ({e}). Received: "
                         f"{source!r}") from None
    keys = set(data)
    class_names = data.get("class_names")
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        raw = check_arrays(data["x_train"], data["y_train"], data["x_test"], data["y_test"],
                           class_names, source)
    elif {"x", "y"} <= keys:
        raw = check_arrays(data["x"], data["y"], None, None, class_names, source)
    else:
        raise InputError(
            f"{source!r} lacks the expected arrays; allowed layouts: x_train, y_train, x_test, "
            f"y_test (as keras.datasets) or x, y (a test split is carved out), optionally "
            f"class_names. Received: keys {sorted(keys)}")
    raw.location = f"package data {source}" if label else source
    return raw


def _scan_class_dirs(root: Path) -> tuple[list[str], list[list[Path]]]:
    try:
        entries = sorted(root.iterdir())
    except OSError as e:
        raise InputError(f"Cannot read the folder {str(root)!r} ({e}). Received: "
                         f"{str(root)!r}") from None
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not class_dirs:
        loose = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = (f" It holds {len(loose)} images directly: move them into one subfolder per "
                f"class.") if loose else ""
        raise InputError(f"The folder {str(root)!r} has no class subfolders; a folder dataset "
                         f"has one subfolder of images per class.{hint} Received: "
                         f"{len(entries)} entries and no subfolder")
    files = []
    for d in class_dirs:
        images = sorted(p for p in d.rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise InputError(
                f"The class folder {str(d)!r} holds no images; allowed: "
                f"{', '.join(IMAGE_EXTENSIONS)} files. Remove the folder or add images. "
                f"Received: {sum(1 for _ in d.iterdir())} other entries")
        files.append(images)
    return [d.name for d in class_dirs], files


def _inspect_images(paths: list[Path]) -> tuple[dict[tuple[int, int], Path], set[str], int]:
    """Open every image's header (and verify it): its size and mode; a bad one is named."""
    sizes: dict[tuple[int, int], Path] = {}
    modes: set[str] = set()
    total = 0
    for path in paths:
        size, mode = check_image(path, verify=True)  # InputError naming the file
        sizes.setdefault(size, path)
        modes.add(mode)
        total += path.stat().st_size
    return sizes, modes, total


def load_folder(root: Path, *, image_size, color_mode) -> RawData:
    """A folder of class subfolders, or with `train/` and `test/` folders of class subfolders.

    Same layout, extensions, colour modes and bilinear resizing as
    `keras.utils.image_dataset_from_directory`; kerascnn indexes the files itself
    so that the validation split is stratified and bad files are named before
    any training starts.
    """
    subdirs = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    split_layout = {"train", "test"} <= subdirs and all(
        any(q.is_dir() for q in (root / s).iterdir()) for s in ("train", "test"))
    if split_layout:
        class_names, train_files = _scan_class_dirs(root / "train")
        test_names, test_files = _scan_class_dirs(root / "test")
        extra = sorted(set(test_names) - set(class_names))
        if extra:
            raise InputError(f"{str(root / 'test')!r} has classes that train/ lacks; allowed: "
                             f"{', '.join(class_names)}. Received: {', '.join(extra)}")
        test_files = [test_files[test_names.index(c)] if c in test_names else []
                      for c in class_names]
    else:
        class_names, train_files = _scan_class_dirs(root)
        test_files = None
    if len(class_names) < 2:
        raise InputError(f"A classification dataset needs at least 2 class subfolders. "
                         f"Received: {class_names} in {str(root)!r}")
    all_paths = [p for group in train_files + (test_files or []) for p in group]
    logger.info("Checking %d images in %s", len(all_paths), root)
    sizes, modes, total_bytes = _inspect_images(all_paths)
    if color_mode is None:
        color_mode = "grayscale" if modes <= {"L", "1", "I", "I;16", "F"} else "rgb"
    channels = COLOR_MODES[color_mode]
    load_size = None
    if len(sizes) > 1:
        if image_size is None:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise InputError(
                f"The images in {str(root)!r} have {len(sizes)} different sizes (e.g. "
                f"{s1[0]}x{s1[1]} {str(p1)!r} and {s2[0]}x{s2[1]} {str(p2)!r}); pass "
                f"image_size (--image-size H,W) to resize them while loading. Received: "
                f"image_size=None")
        load_size = tuple(image_size)
        input_shape = (*load_size, channels)
    else:
        (h, w), = sizes
        input_shape = (h, w, channels)

    def pool(groups: list[list[Path]]) -> FilePool:
        paths = np.array([str(p) for g in groups for p in g])
        labels = np.array([c for c, g in enumerate(groups) for _ in g], dtype=np.int32)
        return FilePool(paths, labels, channels, load_size, tuple(input_shape[:2]))

    rel = sorted((str(p.relative_to(root)), p.stat().st_size) for p in all_paths)
    raw = RawData(
        train=pool(train_files), test=pool(test_files) if test_files is not None else None,
        class_names=tuple(class_names), input_shape=input_shape, dtype="uint8",
        identity=_digest(rel, color_mode, load_size), location=str(root), image_size=load_size)
    raw.notes.append(f"{len(all_paths)} images, {total_bytes / 1e6:.1f} MB")
    if raw.test is not None and len(raw.test) == 0:
        raise InputError(f"{str(root / 'test')!r} holds no images. Received: an empty test/")
    for files in (raw.train, raw.test):
        bad = files.undecodable() if files is not None else ()
        if len(bad):
            path = str(files.paths[bad[0]])
            more = f" ({len(bad) - 1} more such files)" if len(bad) > 1 else ""
            raise InputError(
                f"Could not decode image {path!r} as {color_mode} with TensorFlow{more}: its "
                f"data is corrupt or truncated, or it decodes to another size than its header "
                f"says. Allowed: image files that decode whole. Remove or replace it. "
                f"{received('image', path)}")
    return raw


def parse_tfds(source: str) -> tuple[str, str | None]:
    spec = source[len(TFDS_PREFIX):].strip()
    name, _, config = spec.partition(":")
    if "/" in name and not config:
        name, _, config = name.partition("/")
    if not name or (_ and not config) or ":" in config:
        raise InputError(f"A tensorflow-datasets source is written tfds:NAME or "
                         f"tfds:NAME:CONFIG, e.g. tfds:mnist or tfds:cifar10. Received: "
                         f"{source!r}")
    return name, config or None


def _not_prepared(name: str, config: str | None, data_dir, source: str) -> InputError:
    directory = str(data_dir) if data_dir else (
        os.environ.get("TFDS_DATA_DIR") or str(Path.home() / "tensorflow_datasets"))
    full = name + (f"/{config}" if config else "")
    return InputError(
        f"The tensorflow-datasets dataset {full!r} is not prepared in {directory}, and "
        f"kerascnn does not download without download=True (offline, tfds.load would retry "
        f"for minutes). Prepare it where there is internet with `tfds build {full} "
        f"--data_dir DIR` (or tfds.builder({full!r}, data_dir=DIR).download_and_prepare()), "
        f"copy DIR here and pass --data-dir DIR; or pass --download. Received: "
        f"source={source!r}, data_dir={str(data_dir) if data_dir else None!r}")


def load_tfds(name: str, config: str | None, *, data_dir, download: bool, image_size,
              color_mode, label: str | None = None) -> RawData:
    """A tensorflow-datasets dataset, refused within seconds if it is not prepared."""
    source = label or f"{TFDS_PREFIX}{name}" + (f":{config}" if config else "")
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # "Variant folder ... has no dataset_info.json"
    try:
        builder = tfds.builder(name, config=config, data_dir=str(data_dir) if data_dir else None,
                               try_gcs=False)
        prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError, config errors, ...
        known = tfds.list_builders(with_community_datasets=False)
        if name not in known:
            raise InputError(f"Unknown tensorflow-datasets dataset {name!r}.{suggest(name, known)} "
                             f"See `tfds.list_builders()`. Received: source={source!r}") from None
        configs = [c.name for c in getattr(tfds.builder_cls(name), "BUILDER_CONFIGS", [])]
        raise InputError(f"tensorflow-datasets cannot make {name!r} with config {config!r} "
                         f"({type(e).__name__}: {e}); allowed configs: "
                         f"{', '.join(configs) or 'none'}. Received: source={source!r}") from None
    finally:
        absl_logger.setLevel(level)
    if not prepared:
        if not download:
            raise _not_prepared(name, config, data_dir, source)
        logger.info("Downloading and preparing %s with tensorflow-datasets", name)
        builder.download_and_prepare()
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise InputError(f"{source!r} has no (input, label) pair (supervised_keys); kerascnn "
                         f"trains classifiers. Received: supervised_keys={keys!r}")
    image_key, label_key = keys
    features = info.features
    label_feature = features[label_key]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise InputError(f"{source!r}: the label {label_key!r} is not a class label; kerascnn "
                         f"trains classifiers. Received: {type(label_feature).__name__}")
    image_feature = features[image_key]
    shape = tuple(image_feature.shape)
    if not isinstance(image_feature, tfds.features.Image):
        if any(d is None for d in shape) or len(shape) not in (2, 3, 4):
            raise InputError(f"{source!r}: the input {image_key!r} must be images, signals or "
                             f"volumes of one shape. Received: shape={shape}")
    splits = info.splits
    if "train" not in splits:
        raise InputError(f"{source!r} has no 'train' split. Received: splits "
                         f"{sorted(splits)}")
    channels = None
    if color_mode is not None:
        if not isinstance(image_feature, tfds.features.Image):
            raise InputError(f"color_mode applies to images only. Received: "
                             f"color_mode={color_mode!r} for {source!r}")
        channels = COLOR_MODES[color_mode]
        if channels == 4 and shape[-1] != 4:
            raise InputError(f"color_mode='rgba' needs images with 4 channels. Received: "
                             f"{shape[-1]} channels in {source!r}")
    load_size = None
    if any(d is None for d in shape[:-1]):
        if image_size is None:
            raise InputError(f"The images of {source!r} have different sizes; pass image_size "
                             f"(--image-size H,W) to resize them while loading. Received: "
                             f"image_size=None")
        load_size = tuple(image_size)
        shape = (*load_size, shape[-1])
    if channels is not None:
        shape = (*shape[:-1], channels)

    def labels_of(split: str) -> np.ndarray:
        decoders = {image_key: tfds.decode.SkipDecoding()} \
            if isinstance(image_feature, tfds.features.Image) else None
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        ys = [b for b in ds.map(lambda ex: ex[label_key]).batch(8192).as_numpy_iterator()]
        return np.concatenate(ys).astype(np.int32)

    def pool(split: str) -> TfdsPool:
        return TfdsPool(builder, split, image_key, label_key, labels_of(split),
                        image_size=load_size, channels=channels)

    train = pool("train")
    test = pool("test") if "test" in splits else None
    dtype = "uint8" if isinstance(image_feature, tfds.features.Image) else "float32"
    identity = _digest(info.full_name, {s: splits[s].num_examples for s in splits},
                       train.y, None if test is None else test.y, load_size, channels)
    return RawData(train=train, test=test, class_names=tuple(label_feature.names),
                   input_shape=tuple(int(d) for d in shape), dtype=dtype, identity=identity,
                   location=f"tensorflow-datasets {info.full_name} in {builder.data_dir}",
                   image_size=load_size)
