"""Cheap rungs: stratified, nested subsets of the training split.

The successive-halving tuner trains early rungs on a fraction of the training
images (`tuner/fraction` in a trial's hyperparameters). `Subsets` holds the
training arrays once and hands out a `tf.data.Dataset` per fraction:

- **stratified**: every class keeps its share of the images;
- **nested**: the images of a smaller fraction are among those of a larger
  one, so a promoted candidate sees more of the same data, not other data;
- **made once**: the arrays are read on the first use of a fraction below 1,
  each fraction's dataset is built on first use and reused by every trial
  (memory stays flat across trials).

A fraction of 1 is the bundle's own training dataset.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from kerascnn.checks import InputError, received


class Subsets:
    """Stratified nested subsets of a `DatasetBundle`'s training split.

    Args:
        bundle: `DatasetBundle`. Its `arrays("train")` are read once.
        max_fraction: float. The largest fraction below 1 that will be asked
            for (only that many images are read from folder sources).
            Defaults to 0.5.
        seed: int. Seed of the subset choice and of the shuffling.
            Defaults to 0.
    """

    def __init__(self, bundle: Any, *, max_fraction: float = 0.5, seed: int = 0):
        self.bundle = bundle
        self.num_train = int(bundle.num_train)
        self.batch_size = int(bundle.batch_size)
        self.seed = seed
        self.max_fraction = max_fraction
        self._x = self._y = None
        self._by_class: dict[int, np.ndarray] = {}
        self._datasets: dict[float, Any] = {}

    def _read(self) -> None:
        """Read the training arrays once, on the first use of a fraction below 1."""
        if self._y is not None:
            return
        limit = min(self.num_train, math.ceil(self.max_fraction * self.num_train))
        self._x, self._y = self.bundle.arrays("train", limit=limit)
        rng = np.random.default_rng(self.seed)
        labels = np.asarray(self._y).reshape(-1)
        # per class, its images in a random order: a fraction takes a prefix of each
        self._by_class = {int(c): rng.permutation(np.flatnonzero(labels == c))
                          for c in np.unique(labels)}

    def size(self, fraction: float) -> int:
        """How many training images a fraction holds."""
        if fraction >= 1:
            return self.num_train
        return int(sum(self._counts(fraction).values()))

    def steps_per_epoch(self, fraction: float) -> int:
        return max(1, math.ceil(self.size(fraction) / self.batch_size))

    def _counts(self, fraction: float) -> dict[int, int]:
        self._read()
        pool = len(self._y)
        wanted = min(pool, max(len(self._by_class), round(fraction * self.num_train)))
        return {c: max(1, min(len(ids), round(wanted * len(ids) / pool)))
                for c, ids in self._by_class.items()}

    def indices(self, fraction: float) -> np.ndarray:
        """The positions (in the arrays read) of the images of a fraction below 1."""
        counts = self._counts(fraction)
        return np.sort(np.concatenate([ids[:counts[c]] for c, ids in self._by_class.items()]))

    def dataset(self, fraction: float):
        """The batched, shuffled `tf.data.Dataset` of a fraction of the training images."""
        if not 0 < fraction <= 1:
            raise InputError(f"A training fraction is in (0, 1]. {received('fraction', fraction)}")
        if fraction >= 1:
            return self.bundle.train
        key = round(float(fraction), 6)
        if key not in self._datasets:
            idx = self.indices(key)
            data = tf.data.Dataset.from_tensor_slices((self._x[idx], self._y[idx]))
            data = data.shuffle(len(idx), seed=self.seed, reshuffle_each_iteration=True)
            self._datasets[key] = data.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
        return self._datasets[key]
