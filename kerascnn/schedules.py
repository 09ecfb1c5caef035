"""Learning-rate schedules for `train`: constant, cosine, one-cycle, plateau.

Every schedule is made of Keras's own pieces, so a saved model's optimizer
deserializes with plain `keras.saving.load_model` and no kerascnn import:

- `constant`: the rate stays at `learning_rate`.
- `cosine`: `keras.optimizers.schedules.CosineDecay` from `learning_rate` to 0
  over all training steps (Loshchilov & Hutter, SGDR).
- `one-cycle`: Leslie Smith's one-cycle policy as fastai's `fit_one_cycle`
  runs it: the rate rises from `learning_rate / 25` to `learning_rate` over the
  first 30% of the steps, then anneals by a cosine to `learning_rate / 25e4`.
  Keras's `CosineDecay` with `warmup_target` gives exactly this shape, except
  that the warm-up is linear (as in Smith's paper) rather than a cosine.
  `learning_rate` is the peak rate: `kerascnn lr-find` suggests one.
  Momentum is not cycled.
- `plateau`: `keras.callbacks.ReduceLROnPlateau` halves the rate when the
  monitored loss has not improved for `patience` epochs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras

from kerascnn.checks import SCHEDULES, InputError

logger = logging.getLogger(__name__)

# one-cycle shape, as in fastai's fit_one_cycle
ONE_CYCLE_WARMUP_FRACTION = 0.3
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4

PLATEAU_FACTOR = 0.5
PLATEAU_MIN_LR = 1e-6


def validate_schedule(name: str) -> str:
    """Normalise a schedule name (`one_cycle` is accepted for `one-cycle`)."""
    key = str(name).strip().lower().replace("_", "-")
    if key == "onecycle":
        key = "one-cycle"
    if key not in SCHEDULES:
        raise InputError(f"Unknown learning-rate schedule; allowed: {', '.join(SCHEDULES)}. "
                         f"Received: schedule={name!r}")
    return key


def make_schedule(name: str, learning_rate: float, *, epochs: int, steps_per_epoch: int,
                  monitor: str = "val_loss", plateau_patience: int = 2) -> tuple[Any, list]:
    """The optimizer's learning rate and the callbacks a schedule needs.

    Args:
        name: str. One of `constant`, `cosine`, `one-cycle`, `plateau`.
        learning_rate: float. The base rate (the peak rate for `one-cycle`).
        epochs: int. Number of epochs the schedule spans.
        steps_per_epoch: int. Optimizer steps per epoch.
        monitor: str. Metric that `plateau` watches. Defaults to `"val_loss"`.
        plateau_patience: int. Epochs without improvement before `plateau`
            halves the rate. Defaults to 2.

    Returns:
        `(learning_rate_or_schedule, callbacks)`: pass the first to the
        optimizer and the second to `fit`.

    Raises:
        InputError: unknown schedule, or a non-positive rate or step count.
    """
    name = validate_schedule(name)
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0
            and math.isfinite(learning_rate)):
        raise InputError(f"learning_rate must be a positive number. "
                         f"Received: learning_rate={learning_rate!r}")
    if int(epochs) < 1 or int(steps_per_epoch) < 1:
        raise InputError(f"A schedule needs at least one epoch of at least one step. "
                         f"Received: epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
    total = int(epochs) * int(steps_per_epoch)
    if name == "constant":
        return float(learning_rate), []
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            float(learning_rate), decay_steps=total, alpha=0.0), []
    if name == "one-cycle":
        warmup = max(1, int(round(total * ONE_CYCLE_WARMUP_FRACTION)))
        start = float(learning_rate) / ONE_CYCLE_DIV
        return keras.optimizers.schedules.CosineDecay(
            start, decay_steps=max(1, total - warmup),
            alpha=1.0 / (ONE_CYCLE_DIV * ONE_CYCLE_FINAL_DIV),
            warmup_target=float(learning_rate), warmup_steps=warmup), []
    return float(learning_rate), [keras.callbacks.ReduceLROnPlateau(
        monitor=monitor, factor=PLATEAU_FACTOR, patience=max(1, int(plateau_patience)),
        min_lr=min(PLATEAU_MIN_LR, float(learning_rate)), verbose=0)]


def learning_rate_at(schedule: Any, step: int) -> float:
    """The rate a float or a Keras schedule gives at optimizer step `step`."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    return float(schedule(step))
