"""Optimizers by name and the compile settings shared by train, finetune and tune."""

from __future__ import annotations

from typing import Any

import keras

from kerascnn.checks import OPTIMIZERS, check_choice


def check_optimizer(name: Any) -> str:
    """The lower-case optimizer name, or `InputError` listing `OPTIMIZERS`."""
    return check_choice("optimizer", str(name).lower(), OPTIMIZERS)


def make_optimizer(name: str = "adam", learning_rate=1e-3, *, weight_decay: float | None = None,
                   momentum: float = 0.9) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name.

    Args:
        name: str. One of `adam`, `adamw`, `sgd` (Nesterov), `rmsprop`,
            `nadam`. Defaults to `"adam"`.
        learning_rate: float or a `keras.optimizers.schedules` schedule.
            Defaults to 1e-3.
        weight_decay: float. Decoupled weight decay of `adamw`. Defaults to
            1e-4 for `adamw`, unused otherwise.
        momentum: float. Momentum of `sgd`. Defaults to 0.9.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        InputError: an unknown optimizer name.
    """
    name = check_optimizer(name)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Nadam(learning_rate)


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model's last layer applies a softmax (its outputs are probabilities)."""
    activation = getattr(model.layers[-1], "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


def compile_model(model: keras.Model, *, optimizer="adam", learning_rate=1e-3,
                  weight_decay: float | None = None, jit_compile: bool = False,
                  steps_per_execution: int = 1,
                  from_logits: bool | None = None) -> keras.Model:
    """Compile a classifier with sparse categorical cross-entropy and accuracy.

    Args:
        model: the `keras.Model` to compile (in place).
        optimizer: str or `keras.optimizers.Optimizer`. A name goes through
            `make_optimizer` with `learning_rate` and `weight_decay`.
            Defaults to `"adam"`.
        learning_rate: float or schedule, for an optimizer given by name.
        weight_decay: float, for `adamw`.
        jit_compile: bool. Compile the train step with XLA. Defaults to `False`.
        steps_per_execution: int. Defaults to 1.
        from_logits: bool. Defaults to whether the last layer has no softmax.

    Returns:
        The model, compiled.
    """
    if from_logits is None:
        from_logits = not ends_in_softmax(model)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's rate now (a schedule evaluated at the current step)."""
    lr = model.optimizer.learning_rate  # a Keras variable, also for schedules
    try:
        return float(lr)
    except TypeError:  # under a tf.distribute strategy the value is a MirroredVariable
        return float(lr.value.read_value().numpy())
