"""`lr_find`: the learning-rate range test (Leslie Smith, 2015; fastai's `lr_find`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerascnn import runtime
from kerascnn.plotting import check_output_path, plot_lr_find
from kerascnn.checks import (LR_FIND_METHODS, InputError, check_choice, check_float,
                             check_int, check_seed, received)
from kerascnn.data import DatasetBundle
from kerascnn.training.optimizers import check_optimizer, compile_model, make_optimizer
from kerascnn.training.resolve import build_model, clone_with_weights, data_and_spec, load_data

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class LRFindResult:
    """What `lr_find` returns.

    Attributes:
        learning_rates: list of float, the rate of each step.
        losses: list of float, the raw training loss of each step's batch.
        smoothed_losses: list of float, exponentially smoothed (bias-corrected).
        suggestion: float, the suggested learning rate (by `method`).
        steepest: float, the rate where the smoothed loss falls fastest.
        minimum: float, the rate at the smoothed loss minimum.
        method: str, `"steepest"` or `"minimum/10"`.
        diverged: bool, whether the test stopped because the loss blew up.
        plot_path: Path of the saved plot, or `None`.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float
    steepest: float
    minimum: float
    method: str
    diverged: bool
    plot_path: Path | None = None


def suggest_learning_rate(learning_rates: Sequence[float], smoothed: Sequence[float], *,
                          skip_start: int | None = None) -> tuple[float, float]:
    """`(steepest, minimum)` of a smoothed loss-vs-rate curve.

    `steepest` is the rate where the loss falls fastest per decade, looked for
    between the first points (skipped: the smoothing has not settled yet) and
    the loss minimum; `minimum` is the rate at the minimum. Leslie Smith's and
    fastai's rules of thumb are `steepest` or `minimum / 10`.

    Raises:
        InputError: fewer than 3 finite losses.
    """
    lrs = np.asarray(learning_rates, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        raise InputError(f"The range test needs at least 3 finite losses to suggest a rate. "
                         f"Received: {int(finite.sum())} finite losses")
    lrs, loss = lrs[finite], loss[finite]
    i_min = int(np.argmin(loss))
    minimum = float(lrs[i_min])
    skip = max(1, len(lrs) // 10) if skip_start is None else skip_start
    lo, hi = min(skip, max(0, i_min - 2)), max(i_min + 1, 3)
    segment = slice(lo, hi)
    grad = np.gradient(loss[segment], np.log10(lrs[segment]))
    steepest = float(lrs[segment][int(np.argmin(grad))])
    return steepest, minimum


def _batches(data, batch_size: int | None):
    """An endless iterator of `(x, y)` batches from a bundle, a tf.data set or arrays."""
    if isinstance(data, DatasetBundle):
        ds = data.train
    elif isinstance(data, tf.data.Dataset):
        ds = data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        ds = tf.data.Dataset.from_tensor_slices(tuple(data)).shuffle(
            len(data[0]), seed=0).batch(batch_size or 128)
    else:
        raise InputError(f"data must be a DatasetBundle, a tf.data.Dataset of (x, y) batches "
                         f"or an (x, y) tuple of arrays. Received: {type(data).__name__}")
    return iter(ds.repeat())


def _check_output(output, overwrite: bool) -> Path | None:
    if output is None:
        return None
    return check_output_path(output, overwrite=overwrite, suffixes=(".png",))

def lr_find(
    model=None,
    *,
    dataset: Any = "fashion_mnist_sample",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
    optimizer: str = "adam",
    weight_decay: float | None = None,
    batch_size: int | None = 128,
    smoothing: float = 0.98,
    divergence: float = 4.0,
    method: str = "steepest",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    validation_split: float = 0.1,
    image_size: tuple[int, int] | None = None,
    color_mode: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    normalize: bool = False,
    **fields: Any,
) -> LRFindResult:
    """The learning-rate range test (Leslie Smith, 2015; fastai's `lr_find`).

    Trains for `steps` batches while the rate grows exponentially from
    `start_lr` to `end_lr`, records the loss of each batch, smooths it, and
    stops early once the smoothed loss exceeds `divergence` times its best.
    A given model is left as it was: the test runs on a clone with the same
    weights (or, for a model Keras cannot clone, on the model itself, whose
    weights are restored afterwards).

    Args:
        model: a `keras.Model` (compiled or not; a compiled model keeps its
            loss), or anything `train` takes as a spec (`CNNSpec`, preset
            name, dict, spec file). Defaults to the `simple` preset.
        dataset: for a spec: a dataset name or `DatasetBundle`; for a
            model: also a `tf.data.Dataset` of `(x, y)` batches or an
            `(x, y)` tuple of arrays. Defaults to the bundled sample.
        start_lr: float. First rate. Defaults to 1e-7.
        end_lr: float. Last rate. Defaults to 10.
        steps: int. Number of batches (at least 10). Defaults to 200.
        optimizer: str. As in `train`. Defaults to `"adam"`.
        weight_decay: float. For `adamw`.
        batch_size: int. Defaults to 128.
        smoothing: float. Exponential smoothing factor in [0, 1).
            Defaults to 0.98.
        divergence: float. Stop when the smoothed loss exceeds this many
            times its minimum. Defaults to 4.
        method: str. `"steepest"` (where the smoothed loss falls fastest)
            or `"minimum/10"`. Defaults to `"steepest"`.
        output: path of the PNG plot to save; `None` saves none.
        overwrite: bool. Replace an existing `output` file.
        seed: int. Random seed. Defaults to 0.
        validation_split, image_size, color_mode, data_dir, download,
            normalize: as in `train`.
        **fields: `CNNSpec` fields overriding the spec's.

    Returns:
        `LRFindResult` with the curve and the suggestion.

    Raises:
        InputError: bad rates, steps, smoothing or method, or an existing
            `output` without `overwrite`. Checked before any training.
    """
    runtime.start()
    check_float("start_lr", start_lr)
    check_float("end_lr", end_lr)
    if start_lr >= end_lr:
        raise InputError(f"start_lr must be smaller than end_lr. "
                         f"Received: start_lr={start_lr!r}, end_lr={end_lr!r}")
    check_int("steps", steps, minimum=10)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) \
            or not 0 <= smoothing < 1:
        raise InputError(f"smoothing must be in [0, 1). {received('smoothing', smoothing)}")
    check_float("divergence", divergence, minimum=1.0)
    check_choice("method", method, LR_FIND_METHODS)
    check_optimizer(optimizer)
    check_seed(seed)
    output = _check_output(output, overwrite)

    keras.utils.set_random_seed(seed)
    is_model = isinstance(model, keras.Model)
    if is_model:
        if fields:
            raise InputError(f"Spec fields apply to a spec, not to a built model. "
                             f"Received: {sorted(fields)}")
        net = clone_with_weights(model)
        if isinstance(dataset, (str, os.PathLike)):
            dataset, _ = load_data(dataset, validation_split=validation_split,
                                   image_size=image_size, color_mode=color_mode,
                                   batch_size=batch_size, data_dir=data_dir,
                                   download=download, seed=seed)
        data = dataset
    else:
        bundle, spec, image_size = data_and_spec(
            model, fields, dataset, validation_split=validation_split, image_size=image_size,
            color_mode=color_mode, batch_size=batch_size, data_dir=data_dir,
            download=download, seed=seed)
        net = build_model(spec, bundle, image_size=image_size, normalize=normalize)
        data = bundle
    batches = _batches(data, batch_size)

    saved_weights = [w.numpy() for w in net.weights] if net is model else None
    loss = model.loss if is_model and model.compiled else None
    opt = make_optimizer(optimizer, float(start_lr), weight_decay=weight_decay)
    if loss is not None:
        net.compile(optimizer=opt, loss=loss)
    else:
        compile_model(net, optimizer=opt)

    factor = (end_lr / start_lr) ** (1.0 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, diverged = 0.0, math.inf, False
    try:
        for i in range(steps):
            lr = start_lr * factor ** i
            net.optimizer.learning_rate = lr
            x, y = next(batches)
            value = float(net.train_on_batch(x, y, return_dict=True)["loss"])
            avg = smoothing * avg + (1 - smoothing) * value
            smooth = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if not math.isfinite(smooth) or (i > 0 and smooth > divergence * best):
                diverged = True
                break
            best = min(best, smooth)
    finally:
        if saved_weights is not None:
            for w, v in zip(net.weights, saved_weights):
                w.assign(v)
    logger.info("Range test: %d steps from %.2g to %.2g%s", len(lrs), lrs[0], lrs[-1],
                " (stopped: the loss diverged)" if diverged else "")
    steepest, minimum = suggest_learning_rate(lrs, smoothed)
    suggestion = steepest if method == "steepest" else minimum / 10
    result = LRFindResult(learning_rates=lrs, losses=losses,
                          smoothed_losses=[float(v) for v in smoothed],
                          suggestion=float(suggestion), steepest=steepest, minimum=minimum,
                          method=method, diverged=diverged)
    if output is not None:
        result.plot_path = plot_lr_find(result, output)
    return result
