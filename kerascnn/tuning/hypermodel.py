"""`CNNHyperModel`: the search space of `kerascnn.search_space` as a keras-tuner `HyperModel`.

Every trial trains with the recipe its values describe: the optimizer at its
learning rate, a schedule (`one-cycle` by default) that ends with the trial's
last step, label smoothing. A trial of the successive-halving tuner trains on
the fraction of the training images and for the epochs its `tuner/fraction`
and `tuner/epochs` values say (`kerascnn.tuning.fidelity`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import keras
import keras_tuner

from kerascnn.builders import build_cnn
from kerascnn.checks import InputError, received
from kerascnn.data.preprocessing import augmentation_layers
from kerascnn.schedules import make_schedule
from kerascnn.search_space import SearchSpace
from kerascnn.spec import CNNSpec
from kerascnn.training import make_optimizer

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
        fidelity: `kerascnn.tuning.fidelity.Subsets` of the training data:
            the dataset of a trial's `tuner/fraction` and its steps per
            epoch (for the schedule). Defaults to `None` (train on what
            `fit` is given; schedules assume `steps_per_epoch`).
        epochs: int. Epochs of a trial whose values do not say. Defaults to 1.
        steps_per_epoch: int. Steps per epoch without `fidelity`.
            Defaults to 1.
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
                 seed: Optional[int] = None, fidelity: Any = None, epochs: int = 1,
                 steps_per_epoch: int = 1, name: Optional[str] = None, **space: Any):
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
        self.fidelity = fidelity
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch

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
        model = self.network(spec)
        extra = hp.values
        epochs = int(extra.get("tuner/epochs", self.epochs)) - int(
            extra.get("tuner/initial_epoch", 0))
        fraction = float(extra.get("tuner/fraction", 1.0))
        steps = self.fidelity.steps_per_epoch(fraction) if self.fidelity is not None \
            else self.steps_per_epoch
        learning_rate, _ = make_schedule(values["schedule"], values["learning_rate"],
                                         epochs=max(1, epochs), steps_per_epoch=steps)
        compile_trial(model, spec, optimizer=values["optimizer"], learning_rate=learning_rate,
                      label_smoothing=values["label_smoothing"])
        return model

    def network(self, spec: CNNSpec) -> keras.Model:
        """The uncompiled model of `spec`: this search's preprocessing, then its augmentation."""
        layers = list(self.preprocessing()) if self.preprocessing else []
        layers += augmentation_layers(spec.augmentation, 1.0, seed=self.seed)
        return build_cnn(spec, preprocessing=layers or None,
                         raw_input_shape=self.raw_input_shape)

    def fit(self, hp, model, *args, **kwargs):
        """Keras's `fit`, on the trial's fraction of the training images."""
        fraction = hp.values.get("tuner/fraction")
        if fraction is not None and self.fidelity is not None:
            if args:
                args = (self.fidelity.dataset(fraction), *args[1:])
            else:
                kwargs["x"] = self.fidelity.dataset(fraction)
        return model.fit(*args, **kwargs)


class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer labels.

    Keras's `SparseCategoricalCrossentropy` has no label smoothing; this one
    one-hot encodes the labels and uses `CategoricalCrossentropy`'s.

    Args:
        num_classes: int. Number of classes.
        label_smoothing: float in [0, 1). Defaults to 0.1.
        from_logits: bool. Defaults to `False`.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.1,
                 from_logits: bool = False, name: str = "sparse_smoothed_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits,
            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def compile_trial(model, spec: CNNSpec, *, optimizer: str, learning_rate: Any,
                  label_smoothing: float = 0.0):
    """Compile a trial's model: its optimizer and schedule, smoothed cross-entropy, accuracy."""
    from_logits = spec.classifier_activation is None
    if label_smoothing:
        loss = SparseSmoothedCrossentropy(spec.num_classes, label_smoothing, from_logits)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model
