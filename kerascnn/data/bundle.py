"""`DatasetBundle`, the stratified split, and the shape the network sees (numpy only).

What `load_dataset` returns, described without TensorFlow: the bundle holds
`tf.data` pipelines, but this module only stores them, so code that merely
reads a bundle's fields (and `import kerascnn.data`) stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from kerascnn.checks import InputError, check_image_size, is_int, received

SPLITS = ("train", "validation", "test")
KINDS = {2: "signal", 3: "image", 4: "volume"}  # rank of one example -> kind


@dataclass(eq=False)
class DatasetBundle:
    """A dataset split three ways, batched and ready for `model.fit`.

    `load_dataset` fills every field. A bundle can also be made by hand from
    three `tf.data` pipelines of `(x, y)` batches and the nine fields without a
    default; the others are then derived or left empty (`kind` from the rank
    of `input_shape`, `dtype` from the pipeline's element spec,
    `validation_split` from the counts), and `arrays()` collects the
    examples from the pipelines.

    Attributes:
        train: `tf.data.Dataset` of `(x, y)` batches, shuffled every epoch by seed.
        validation: `tf.data.Dataset` of batches, or None when `validation_split=0`.
        test: `tf.data.Dataset` of batches; for the final report only, never for
            model selection.
        input_shape: tuple, raw shape of one `x` (what a saved model takes).
        num_classes: int.
        class_names: tuple of str, one per class id.
        num_train, num_validation, num_test: int, examples per split.
        fingerprint: str, the same data, split and seed give the same string
            (`""` for a bundle made by hand).
        source: str, what was asked for (name, path, `tfds:NAME`).
        image_size: `(height, width)` the network sees, or None for the raw size.
        kind: `"image"`, `"signal"` (1D) or `"volume"` (3D).
        dtype: `"uint8"` (pixels, rescaled inside the model) or `"float32"`.
        location: str, where the data was read from.
        batch_size: int, examples per batch, or None if unknown (made by hand).
        seed: int, seed of the validation split and the shuffling.
        validation_split: float, fraction of the training data held out.
        value_range: `(min, max)` of float training data, or None for uint8 pixels.
    """

    train: Any = field(repr=False)
    validation: Any = field(repr=False)
    test: Any = field(repr=False)
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    num_train: int
    num_validation: int
    num_test: int
    fingerprint: str = ""
    source: str = ""
    image_size: Optional[tuple[int, int]] = None
    kind: Optional[str] = None
    dtype: Optional[str] = None
    location: str = ""
    batch_size: Optional[int] = None
    seed: int = 0
    validation_split: Optional[float] = None
    value_range: Optional[tuple[float, float]] = None
    _pools: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.class_names = tuple(str(c) for c in self.class_names)
        if len(self.input_shape) not in KINDS:
            raise InputError(f"A dataset's examples have rank 2 (signals), 3 (images) or 4 "
                             f"(volumes). {received('input_shape', self.input_shape)}")
        if self.kind is None:
            self.kind = KINDS[len(self.input_shape)]
        if self.dtype is None:
            spec = getattr(self.train, "element_spec", None)
            name = getattr(getattr(spec[0], "dtype", None), "name", None) \
                if isinstance(spec, tuple) and spec else None
            self.dtype = "uint8" if name in (None, "uint8") else "float32"
        if self.validation_split is None:
            held = self.num_validation + self.num_train
            self.validation_split = self.num_validation / held if held else 0.0
        if self.image_size is not None:
            self.image_size = check_image_size(self.image_size)

    def arrays(self, split: str = "train", limit: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The examples of one split as numpy arrays `(x, y)`, unbatched, unshuffled.

        Array sources (built-ins, `.npz`) return views of the arrays in memory at
        no cost. Folder and tensorflow-datasets sources decode their examples, so
        pass `limit` when a sample is enough. A bundle made by hand collects the
        batches of its pipeline.

        Args:
            split: `"train"`, `"validation"` or `"test"`. Defaults to `"train"`.
            limit: int or None, at most this many examples (the split is in random
                order, so the first ones are a random sample). Defaults to None (all).

        Returns:
            `(x, y)`: x raw values (uint8 pixels or float32), y int32 class ids.

        Raises:
            InputError: an unknown split or a negative limit.
        """
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}. "
                             f"{received('split', split)}")
        if limit is not None and (not is_int(limit) or limit < 0):
            raise InputError(f"limit must be an int >= 0 or None. {received('limit', limit)}")
        if split in self._pools:
            pool = self._pools[split]
            if pool is not None:
                return pool.arrays(limit)
        else:
            dataset = getattr(self, split)
            if dataset is not None:
                return _collect_batches(dataset, limit)
        return (np.zeros((0, *self.input_shape), dtype=self.dtype),
                np.zeros((0,), dtype=np.int32))

    def class_counts(self) -> dict[str, list[int]]:
        """Examples per class id in each split (from the labels, no decoding for loaded data)."""
        counts = {}
        for split in SPLITS:
            if split in self._pools:
                pool = self._pools[split]
                if pool is None:
                    continue
                labels = pool.labels
            elif getattr(self, split) is not None:
                labels = self.arrays(split)[1]
            else:
                continue
            counts[split] = np.bincount(labels, minlength=self.num_classes).tolist()
        return counts

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for manifests and `kerascnn datasets`)."""
        return {
            "source": self.source, "location": self.location, "fingerprint": self.fingerprint,
            "kind": self.kind, "dtype": self.dtype, "input_shape": list(self.input_shape),
            "image_size": list(self.image_size) if self.image_size else None,
            "num_classes": self.num_classes, "class_names": list(self.class_names),
            "num_train": self.num_train, "num_validation": self.num_validation,
            "num_test": self.num_test, "validation_split": self.validation_split,
            "seed": self.seed, "batch_size": self.batch_size,
            "class_counts": self.class_counts(),
        }


def _collect_batches(dataset: Any, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the `(x, y)` batches of a pipeline, stopping after `limit` examples."""
    xs, ys, n = [], [], 0
    for x, y in dataset.as_numpy_iterator():
        xs.append(np.asarray(x))
        ys.append(np.asarray(y).astype(np.int32))
        n += len(ys[-1])
        if limit is not None and n >= limit:
            break
    if not xs:
        return np.zeros((0,)), np.zeros((0,), dtype=np.int32)
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def stratified_split(labels: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Split positions `0..len(labels)-1` into (kept, held out), class by class.

    Each class gives `round(fraction * its count)` examples to the held-out part,
    chosen by `seed`; both parts come back in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(members)))
        held.append(members[:k])
        kept.append(members[k:])
    kept_idx = rng.permutation(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    held_idx = rng.permutation(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return kept_idx, held_idx


def target_size(bundle: DatasetBundle, image_size: Any) -> Optional[tuple[int, int]]:
    """The `(height, width)` the network sees: `image_size`, else the bundle's, else None.

    Raises:
        InputError: a bad `image_size`, or one for data that are not images.
    """
    size = check_image_size(image_size) if image_size is not None else bundle.image_size
    if size is not None and bundle.kind != "image":
        raise InputError(f"image_size applies to images only; this {bundle.kind} data has "
                         f"shape {bundle.input_shape}. {received('image_size', image_size)}")
    return size


def network_input_shape(bundle: DatasetBundle, image_size: int | Sequence[int] | None = None
                        ) -> tuple[int, ...]:
    """The shape the CNN body sees after `preprocessing_layers(bundle, image_size=...)`.

    Args:
        bundle: a `DatasetBundle`.
        image_size: int, `(height, width)` or None. Defaults to None
            (`bundle.image_size`, else the raw size).

    Returns:
        `bundle.input_shape` with height and width replaced by the image size:
        use it as the spec's `input_shape`.

    Raises:
        InputError: a bad `image_size`, or one for data that are not images.
    """
    size = target_size(bundle, image_size)
    if size is None:
        return tuple(bundle.input_shape)
    return (*size, bundle.input_shape[-1])
