"""`CNNHyperModel`: the search space of `kerascnn.search_space` as a keras-tuner `HyperModel`."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import keras_tuner

from kerascnn.augment import augmentation_layers
from kerascnn.builders import build_cnn
from kerascnn.checks import InputError, received
from kerascnn.search_space import SearchSpace
from kerascnn.spec import CNNSpec
from kerascnn.training import compile_model

logger = logging.getLogger(__name__)


class CNNHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` over `CNNSpec`s.

    Args:
        input_shape: tuple of int. The network's input shape (after any
            resizing by `preprocessing`), channels last.
        num_classes: int. Number of classes.
        preprocessing: a function returning a new list of Keras layers
            (rescaling, resizing) to put after the `Input` of each model.
            Defaults to `None`.
        raw_input_shape: tuple of int. Shape of the `Input` when
            `preprocessing` resizes. Defaults to `input_shape`.
        per_block_filters: bool. Search `filters_<b>` per block under
            conditional scopes instead of `filters` and `filters_growth`.
            Defaults to `False`.
        augmentation: list. Augmentation entries scaled by
            `augmentation_strength`. Defaults to `None` (see
            `kerascnn.search_space.SearchSpace`).
        max_params: int. Candidates with more parameters are rejected before
            training (resampled by kerascnn's oracles). Defaults to `None`.
        max_macs: int. The same for multiply-accumulates per image.
            Defaults to `None`.
        seed: int. Seed of the augmentation layers. Defaults to `None`.
        name: str. Name of the hypermodel. Defaults to `None`.
        **space: the hyperparameters, each fixed, a list of choices or a
            `(min, max)` range; `None` or absent means the default
            (`kerascnn.search_space.DEFAULT_SPACE`, docs/tuning.md).

    Raises:
        InputError: an unknown hyperparameter, a bad value, or a range with
            min > max.

    Example:

    >>> hm = CNNHyperModel((28, 28, 1), 10, conv_blocks=(1, 6), padding="valid")
    >>> hp = keras_tuner.HyperParameters()
    >>> hm.declare_hyperparameters(hp)
    >>> hm.spec(hp).conv_blocks
    1
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *,
                 preprocessing: Optional[Callable[[], list]] = None,
                 raw_input_shape: Optional[Sequence[int]] = None,
                 per_block_filters: bool = False, augmentation: Any = None,
                 max_params: Optional[int] = None, max_macs: Optional[int] = None,
                 seed: Optional[int] = None, name: Optional[str] = None, **space: Any):
        super().__init__(name=name, tunable=True)
        self.space = SearchSpace(input_shape, num_classes, per_block_filters=per_block_filters,
                                 augmentation=augmentation, max_params=max_params,
                                 max_macs=max_macs, **space)
        if preprocessing is not None and not callable(preprocessing):
            raise InputError("preprocessing must be a function that returns a new list of "
                             f"Keras layers for each model. "
                             f"{received('preprocessing', preprocessing)}")
        self.preprocessing = preprocessing
        self.raw_input_shape = tuple(raw_input_shape) if raw_input_shape else None
        self.seed = seed

    def declare_hyperparameters(self, hp) -> None:
        """Declare the whole space (every conditional scope) on `hp`, building nothing."""
        self.space.declare(hp)

    def spec(self, hp) -> CNNSpec:
        """The `CNNSpec` of a trial's hyperparameters (a `HyperParameters` or dict)."""
        values = hp.values if hasattr(hp, "values") else hp
        return self.space.spec(self.space.values_from(values))

    def build(self, hp):
        values = self.space.declare(hp)
        reason = self.space.check(values)
        if reason is not None:
            raise keras_tuner.errors.FailedTrialError(
                f"Candidate rejected by the analysis (no model built): {reason}")
        spec = self.space.spec(values)
        layers = list(self.preprocessing()) if self.preprocessing else []
        layers += augmentation_layers(spec.augmentation, 1.0, seed=self.seed)
        model = build_cnn(spec, preprocessing=layers or None,
                          raw_input_shape=self.raw_input_shape)
        compile_model(model, optimizer=values["optimizer"],
                      learning_rate=values["learning_rate"])
        return model
