"""Training: compile settings shared by `train` and `tune`, callbacks, schedules."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")


def make_optimizer(name: str = "adam", learning_rate=1e-3, *, weight_decay: float | None = None,
                   momentum: float = 0.9):
    """A Keras optimizer by name. `learning_rate` may be a float or a schedule."""
    import keras

    name = str(name).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer; allowed: {', '.join(OPTIMIZERS)}. "
                         f"Received: optimizer={name!r}")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Nadam(learning_rate)


def compile_model(model, *, optimizer="adam", learning_rate=1e-3, weight_decay=None,
                  jit_compile=False, steps_per_execution: int = 1, from_logits: bool | None = None):
    """Compile a classifier with sparse categorical cross-entropy and accuracy.

    `from_logits` defaults to whether the last layer has no softmax.
    """
    import keras

    if from_logits is None:
        last = model.layers[-1]
        act = getattr(last, "activation", None)
        from_logits = not (act is not None and getattr(act, "__name__", "") == "softmax")
    opt = optimizer if not isinstance(optimizer, str) else make_optimizer(
        optimizer, learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model
