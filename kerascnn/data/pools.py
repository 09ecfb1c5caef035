"""Pools: sets of examples that can be cut by index and read as a `tf.data.Dataset`.

* `ArrayPool`: numpy arrays in memory (built-ins, `.npz`).
* `FilePool`: image files decoded on the fly (folders of class subfolders).
* `TfdsPool`: a split of a prepared tensorflow-datasets dataset.

The pipeline (`kerascnn.data.pipeline`) splits a source's pools by index
(the stratified splits) and batches their datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from kerascnn import runtime


@dataclass
class ArrayPool:
    """Examples held in numpy arrays."""

    x: np.ndarray
    y: np.ndarray
    needs_cache = False

    @property
    def labels(self) -> np.ndarray:
        return self.y

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "ArrayPool":
        return ArrayPool(self.x[index], self.y[index])

    def dataset(self):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y))

    def arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.x[:limit], self.y[:limit]


@dataclass
class FilePool:
    """Image files decoded (and resized if `image_size`) in the pipeline's map step."""

    paths: np.ndarray
    y: np.ndarray
    channels: int
    image_size: tuple[int, int] | None = None  # resize while loading (mixed sizes)
    shape: tuple[int, int] | None = None  # the one (height, width) of every file, if known
    needs_cache = True

    @property
    def labels(self) -> np.ndarray:
        return self.y

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "FilePool":
        return FilePool(self.paths[index], self.y[index], self.channels, self.image_size,
                        self.shape)

    def _decode(self, path):
        data = tf.io.read_file(path)
        channels = self.channels
        if channels == 3:
            return tf.io.decode_image(data, channels=3, expand_animations=False)

        def gif():  # TensorFlow decodes GIF to RGB only: convert as for the other formats
            rgb = tf.io.decode_image(data, channels=3, expand_animations=False)
            if channels == 1:  # ITU-R 601-2 luma, as Pillow and kerascnn.images
                return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))),
                               tf.uint8)
            alpha = tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0), tf.constant(255, tf.uint8))
            return tf.concat([rgb, alpha], -1)

        return tf.cond(tf.strings.substr(data, 0, 3) == "GIF", gif,
                       lambda: tf.io.decode_image(data, channels=channels,
                                                  expand_animations=False))

    def undecodable(self) -> np.ndarray:
        """Positions of the files TensorFlow cannot decode as the pipeline will.

        Every file is decoded once (in parallel) by the decoder the pipeline
        uses; a file fails when decoding raises or, without `image_size`, when
        it decodes to another (height, width) than `shape`. Pillow's header
        check passes some damaged files (e.g. a corrupt PNG data stream) that
        would otherwise stop training at the first epoch.
        """
        expected = None if self.image_size is not None or self.shape is None \
            else tf.constant(self.shape, tf.int32)

        def check(i, path):
            image = self._decode(path)
            ok = tf.constant(True) if expected is None else \
                tf.reduce_all(tf.shape(image)[:2] == expected)
            return i, ok

        ds = tf.data.Dataset.from_tensor_slices((np.arange(len(self)), self.paths))
        ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        good = np.zeros(len(self), dtype=bool)
        for index, ok in ds.batch(4096).as_numpy_iterator():
            good[index] = ok
        return np.flatnonzero(~good)

    def dataset(self):
        channels, size = self.channels, self.image_size
        static = tuple(size or self.shape or (None, None))

        def load(path, label):
            image = self._decode(path)
            if size is not None:
                image = _resize_uint8(image, size)
            image.set_shape((*static, channels))
            return image, label

        ds = tf.data.Dataset.from_tensor_slices((self.paths, self.y))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)

    def arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return _collect(self.dataset(), limit)


@dataclass
class TfdsPool:
    """A split of a prepared tensorflow-datasets dataset, optionally cut by index."""

    builder: Any
    split: str
    image_key: str
    label_key: str
    y: np.ndarray  # labels in the split's order (read once, images not decoded)
    index: np.ndarray | None = None  # kept example positions, ascending; None = all
    image_size: tuple[int, int] | None = None
    channels: int | None = None  # convert to this many channels
    needs_cache = True

    @property
    def labels(self) -> np.ndarray:
        return self.y if self.index is None else self.y[self.index]

    def __len__(self) -> int:
        return len(self.y) if self.index is None else len(self.index)

    def subset(self, index: np.ndarray) -> "TfdsPool":
        base = np.arange(len(self.y)) if self.index is None else self.index
        return TfdsPool(self.builder, self.split, self.image_key, self.label_key, self.y,
                        np.sort(base[index]), self.image_size, self.channels)

    def dataset(self):
        ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        image_key, label_key = self.image_key, self.label_key
        if self.index is not None:
            keep = np.zeros(len(self.y), dtype=bool)
            keep[self.index] = True
            keep = tf.constant(keep)
            ds = ds.enumerate().filter(lambda i, ex: tf.gather(keep, i)).map(lambda i, ex: ex)
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(self.index)))
        size, channels = self.image_size, self.channels

        def convert(ex):
            image = ex[image_key]
            if image.dtype != tf.uint8:
                image = tf.cast(image, tf.float32)
            if channels is not None:
                image = _convert_channels(image, channels)
            if size is not None:
                image = _resize_uint8(image, size)
            return image, tf.cast(ex[label_key], tf.int32)

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return _collect(self.dataset(), limit)


def _resize_uint8(image, size):
    """Bilinear resize (as image_dataset_from_directory), back to uint8 pixels."""
    resized = tf.image.resize(image, size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _convert_channels(image, channels: int):
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have in (3, 4) and channels == 1:
        return tf.image.rgb_to_grayscale(image[..., :3])
    if have == 4 and channels == 3:
        return image[..., :3]
    return image


def _collect(ds, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    if limit is not None:
        ds = ds.take(limit)
    xs, ys = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0,)), np.zeros((0,), dtype=np.int32)
    return np.concatenate(xs), np.concatenate(ys)
