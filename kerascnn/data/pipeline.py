"""`load_dataset`: a source by name, folder, file or tfds, split and batched.

The `tf.data` pipeline follows the order of the TFDS performance guide
(https://www.tensorflow.org/datasets/performances): **map** (decode, convert,
resize while loading; in parallel with AUTOTUNE), **cache** (decoded examples
kept in memory after the first epoch; arrays already in memory skip it),
**shuffle** (training split only, by seed, reshuffled every epoch), **batch**,
**prefetch** (AUTOTUNE). The guide's *augment* step between batch and prefetch
lives in the model instead: `preprocessing_layers` returns Keras augmentation
layers that run on batches inside `model.fit` and are inactive at inference, so
a saved model takes raw pixels and augments nothing when it predicts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from kerascnn import runtime
from kerascnn.checks import InputError, check_image_size, check_seed, is_int, received
from kerascnn.data import builtin as _builtin
from kerascnn.data import sources as _sources
from kerascnn.data.bundle import SPLITS, DatasetBundle, stratified_split

logger = logging.getLogger(__name__)

TEST_SPLIT = 0.2  # fraction carved out as the test split when a source has none
TEST_SEED = 0  # the carved test split never depends on `seed`
CACHE_LIMIT_BYTES = 2 * 1024**3  # decoded examples above this are not cached in memory
SHUFFLE_BUFFER_BYTES = 256 * 1024**2


# ---------------------------------------------------------------------------- arguments


def _check_args(validation_split, image_size, color_mode, batch_size, data_dir, seed):
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not math.isfinite(validation_split) or not 0 <= validation_split < 1:
        raise InputError(f"validation_split must be a fraction in [0, 1). "
                         f"{received('validation_split', validation_split)}")
    if not is_int(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer. "
                         f"{received('batch_size', batch_size)}")
    seed = check_seed(seed)
    if color_mode is not None and color_mode not in tuple(_sources.COLOR_MODES):
        raise InputError(f"color_mode must be one of {', '.join(_sources.COLOR_MODES)} or "
                         f"None. {received('color_mode', color_mode)}")
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise InputError(f"data_dir must be a folder path or None. "
                             f"{received('data_dir', data_dir)}")
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise InputError(f"The data folder {str(data_dir)!r} {what}; pass an existing "
                             f"folder as --data-dir (or leave it out). Received: "
                             f"data_dir={str(data_dir)!r}")
        data_dir = path
    return float(validation_split), check_image_size(image_size), int(batch_size), \
        data_dir, int(seed)


def _read_source(source: Any, *, data_dir, download, image_size, color_mode
                 ) -> tuple[_sources.RawData, str]:
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"source must be a dataset name, tfds:NAME, a folder or an .npz file. "
                         f"Received: source={source!r}")
    text = os.fspath(source)
    if isinstance(source, str) and text.startswith(_sources.TFDS_PREFIX):
        name, config = _sources.parse_tfds(text)
        return _sources.load_tfds(name, config, data_dir=data_dir, download=download,
                                  image_size=image_size, color_mode=color_mode), text
    if isinstance(source, str) and text in _builtin.BUILTINS:
        return _sources.load_builtin(text, data_dir, download, color_mode), text
    path = Path(text).expanduser()
    if path.is_dir():
        return _sources.load_folder(path, image_size=image_size, color_mode=color_mode), text
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"A dataset file must be an .npz (keras.datasets layout or x, y); "
                             f"for images use a folder of class subfolders. Received: "
                             f"source={text!r}")
        return _sources.convert_color(_sources.load_npz(path), color_mode), text
    names = list(_builtin.BUILTINS)
    if os.sep in text or "/" in text or path.suffix or text.startswith((".", "~")):
        raise InputError(f"The dataset path {text!r} does not exist; pass an existing folder of "
                         f"class subfolders or an .npz file, or one of the names "
                         f"{', '.join(names)}. Received: source={text!r}")
    raise InputError(f"Unknown dataset {text!r}; allowed: {', '.join(names)}, tfds:NAME[:CONFIG], "
                     f"a folder of class subfolders or an .npz file.{_sources.suggest(text, names)}"
                     f" Received: source={text!r}")


def _pipeline(pool, *, training: bool, batch_size: int, seed: int, example_bytes: int):
    n = len(pool)
    ds = pool.dataset()  # map: decode / convert / resize (parallel, AUTOTUNE)
    if pool.needs_cache:
        if n * example_bytes <= CACHE_LIMIT_BYTES:
            ds = ds.cache()
        else:
            logger.info("Not caching %d examples (%.1f GB) in memory", n,
                        n * example_bytes / 1e9)
    if training:
        buffer = min(n, max(1024, SHUFFLE_BUFFER_BYTES // max(example_bytes, 1)))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # tf.data autotuning off unless the user asks (issue 15): kerascnn.runtime decides
    return runtime.configure_dataset(ds.prefetch(tf.data.AUTOTUNE))


def load_dataset(
    source: str | os.PathLike = "fashion_mnist_sample",
    *,
    validation_split: float = 0.1,
    image_size: int | tuple[int, int] | None = None,
    color_mode: str | None = None,
    batch_size: int = 128,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
) -> DatasetBundle:
    """Load a dataset, split it three ways and batch it for training.

    Sources:

    * a built-in name (`kerascnn datasets` lists them): `fashion_mnist_sample`
      (shipped with the package), `fashion_mnist`, `mnist` (idx `.gz` files from
      `data_dir`, `$KERASCNN_DATA_DIR`, the Debian package's folder, or a prepared
      tensorflow-datasets copy; downloaded only when `download=True`);
    * `tfds:NAME[:CONFIG]`: a prepared tensorflow-datasets dataset in `data_dir`
      (or TFDS's default folder). An unprepared one is refused at once with how
      to prepare it, unless `download=True`;
    * a folder with one subfolder of images per class (or `train/` and `test/`
      folders of class subfolders), as `keras.utils.image_dataset_from_directory`
      reads: `.png`, `.jpg`, `.jpeg`, `.bmp`, `.gif`;
    * an `.npz` with `x_train`, `y_train`, `x_test`, `y_test` (the keras.datasets
      layout) or `x`, `y`, optionally `class_names`. `x` holds images
      (N, H, W, C), gray images (N, H, W) as uint8, signals (N, length, channels)
      as floats, or volumes (N, depth, height, width, channels).

    Splits: the validation split is carved from the training data, stratified by
    class, chosen by `seed`. Sources without a test split (`x`/`y` arrays, a
    folder without `test/`) give `TEST_SPLIT` (20%) of each class to the test
    split, with a fixed seed so the test split never changes with `seed`. The
    test split is for the final report only.

    Pipeline: map, cache, shuffle, batch, prefetch (see the module docstring);
    augmentation is in the model (`preprocessing_layers`).

    Args:
        source: str or path, what to load. Defaults to `"fashion_mnist_sample"`.
        validation_split: float in [0, 1), fraction of the training data held out
            for validation (0: no validation split). Defaults to 0.1.
        image_size: int, `(height, width)` or None: the size the network sees.
            Images of one size keep their raw size in the bundle and are resized
            inside the model (`preprocessing_layers`); images of mixed sizes are
            resized to `image_size` while loading (then it is required).
            Defaults to None (the raw size).
        color_mode: `"grayscale"`, `"rgb"`, `"rgba"` or None: channels of the
            images (folders and tfds decode to it; arrays convert gray <-> RGB).
            Defaults to None (folders: grayscale if every image is, else rgb).
        batch_size: int, examples per batch. Defaults to 128.
        data_dir: str, path or None: folder searched first for dataset files (must
            exist). Defaults to None.
        download: bool, allow downloading a dataset that is not on this machine.
            Defaults to False.
        seed: int >= 0, seed of the validation split and the shuffling.
            Defaults to 0.

    Returns:
        A `DatasetBundle`.

    Raises:
        InputError: for an unknown name (close names are suggested), a missing
            path or `data_dir`, an unprepared tfds dataset, an empty folder or
            class folder, an unreadable image (named), images of mixed sizes
            without `image_size`, an `.npz` without the expected arrays, x/y
            length mismatch, labels outside 0..C-1, or a bad argument.

    Example:
        >>> bundle = load_dataset("fashion_mnist_sample", validation_split=0.1)
        >>> bundle.input_shape, bundle.num_classes, bundle.num_train
        ((28, 28, 1), 10, 5400)
    """
    validation_split, image_size, batch_size, data_dir, seed = _check_args(
        validation_split, image_size, color_mode, batch_size, data_dir, seed)
    runtime.start()  # kerascnn's TensorFlow settings before the first tensor (issue 15)
    raw, label = _read_source(source, data_dir=data_dir, download=download,
                              image_size=image_size, color_mode=color_mode)
    if image_size is not None and raw.kind != "image":
        raise InputError(f"image_size applies to images only; this {raw.kind} data has shape "
                         f"{raw.input_shape}. Received: image_size={image_size!r}")

    train_pool, test_pool = raw.train, raw.test
    if test_pool is None:
        keep, held = stratified_split(train_pool.labels, TEST_SPLIT, TEST_SEED)
        train_pool, test_pool = train_pool.subset(keep), train_pool.subset(held)
    keep, held = stratified_split(train_pool.labels, validation_split, seed)
    val_pool = train_pool.subset(held) if len(held) else None
    train_pool = train_pool.subset(keep)
    if len(train_pool) == 0 or len(test_pool) == 0:
        raise InputError(f"{label!r} is too small to split: {len(train_pool)} training and "
                         f"{len(test_pool)} test examples are left; a dataset needs at least "
                         f"one of each. Received: {len(raw.train)} examples, "
                         f"validation_split={validation_split}")

    example_bytes = int(np.prod(raw.input_shape)) * (1 if raw.dtype == "uint8" else 4)
    kw = {"batch_size": batch_size, "seed": seed, "example_bytes": example_bytes}
    fingerprint = hashlib.sha256(repr((
        raw.identity, raw.input_shape, raw.class_names, validation_split, seed, image_size,
        color_mode)).encode()).hexdigest()[:16]
    bundle = DatasetBundle(
        train=_pipeline(train_pool, training=True, **kw),
        validation=_pipeline(val_pool, training=False, **kw) if val_pool is not None else None,
        test=_pipeline(test_pool, training=False, **kw),
        input_shape=raw.input_shape, num_classes=len(raw.class_names),
        class_names=raw.class_names, num_train=len(train_pool),
        num_validation=len(val_pool) if val_pool is not None else 0, num_test=len(test_pool),
        fingerprint=fingerprint, source=label, image_size=image_size or raw.image_size,
        kind=raw.kind, dtype=raw.dtype, location=raw.location, batch_size=batch_size,
        seed=seed, validation_split=validation_split, value_range=raw.value_range,
        _pools={"train": train_pool, "validation": val_pool, "test": test_pool})
    logger.info("Dataset %s: %d train, %d validation, %d test, %s, %d classes (%s)", label,
                bundle.num_train, bundle.num_validation, bundle.num_test, raw.input_shape,
                bundle.num_classes, raw.location)
    return bundle


def as_bundle(dataset: Any, **options: Any) -> "DatasetBundle":
    """`dataset` itself if it is already loaded, else `load_dataset(dataset, **options)`.

    For the functions that accept either a source (a name or a path) or a
    `DatasetBundle` (`train`, `lr_find`, `finetune`).

    Raises:
        InputError: `dataset` is neither, or `load_dataset` refuses it.
    """
    if isinstance(dataset, (str, os.PathLike)):
        return load_dataset(str(dataset), **options)
    if isinstance(dataset, DatasetBundle):
        return dataset
    raise InputError("dataset must be a dataset name or path, or a DatasetBundle (from "
                     f"kerascnn.load_dataset or made from tf.data pipelines). "
                     f"Received: {type(dataset).__name__}")

