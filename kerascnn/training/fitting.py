"""`fit_model`: compile and fit a classifier with kerascnn's callbacks, no run folder.

The training loop that `train` uses, and that `tune`'s final training and
anything else that trains a built model can use: it compiles the model with
a schedule, fits it with kerascnn's callbacks (history, best weights, NaN
guard, early stopping, a deadline) and returns what happened. It writes
files only where asked (`history_path`, `checkpoint_dir`, `backup_dir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import tensorflow as tf

from kerascnn import runtime
from kerascnn.checks import MAX_STEPS_PER_EXECUTION, InputError, check_int
from kerascnn.schedules import make_schedule, validate_schedule
from kerascnn.training.callbacks import (BestCheckpoint, Deadline, EpochLogger, History,
                                         NaNGuard)
from kerascnn.training.distribute import distributable, keras_multiworker_fixes
from kerascnn.training.optimizers import compile_model, make_optimizer

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
    """What `fit_model` returns.

    Attributes:
        model: the `keras.Model` (with the best epoch's weights when
            `restore_best` found some).
        history: list of dict, one row per epoch (`epoch`, the logs,
            `learning_rate`, `seconds`), earlier rows of a resumed run included.
        monitor: str. `val_loss` with validation data, else `loss`.
        best_epoch: int or None. The epoch with the lowest `monitor`.
        best: float or None. That value.
        epochs_trained: int. Epochs this call trained (a resumed run: fewer
            than `len(history)`).
        stopped_early: bool. Early stopping ended training.
        stopped_by_deadline: bool. The deadline ended training.
        diverged: bool. The loss became NaN or infinite (training stopped there;
            the caller reports it: the CLI as bad input, a trial as failed).
        seconds: float. Wall-clock seconds of `model.fit`.
    """

    model: Any
    history: list[dict]
    monitor: str
    best_epoch: int | None
    best: float | None
    epochs_trained: int
    stopped_early: bool
    stopped_by_deadline: bool
    diverged: bool
    seconds: float


def steps_per_epoch(dataset, num_examples: int | None = None,
                    batch_size: int | None = None) -> int:
    """Batches per epoch of a `tf.data` set (its cardinality, or examples / batch size)."""
    try:
        n = int(dataset.cardinality())
    except (AttributeError, TypeError, ValueError):
        n = -1
    if n > 0:
        return n
    if num_examples:
        return max(1, math.ceil(num_examples / (batch_size or 128)))
    return 1


def _is_multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit_model(
    model: keras.Model,
    train_data,
    *,
    validation_data=None,
    epochs: int = 10,
    initial_epoch: int = 0,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
    weight_decay: float | None = None,
    schedule: str = "constant",
    schedule_epochs: int | None = None,
    early_stopping: int | None = None,
    deadline: float | None = None,
    deadline_per_batch: bool = False,
    restore_best: bool = True,
    compile: bool = True,
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    history_path: str | os.PathLike | None = None,
    history: History | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    backup_dir: str | os.PathLike | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    log_prefix: str | None = None,
    verbose: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitResult:
    """Compile (optionally) and fit a built classifier with kerascnn's callbacks.

    Writes no run folder: only the files named by `history_path`,
    `checkpoint_dir` and `backup_dir`. Call it inside `op_determinism` /
    `dtype_policy` blocks (from `kerascnn.training`) to get those settings.

    Args:
        model: a built `keras.Model` (raw pixels in, class scores out).
        train_data: a `tf.data.Dataset` of `(x, y)` batches (e.g.
            `DatasetBundle.train`).
        validation_data: a `tf.data.Dataset` or `None`. With it, early
            stopping, the plateau schedule and the best weights watch
            `val_loss`; without it, `loss`.
        epochs: int. The epoch to stop at (as Keras's `fit`). Defaults to 10.
        initial_epoch: int. The epoch to start at. Defaults to 0.
        optimizer: str or optimizer. With `compile=True`, a name
            (`make_optimizer`) or an optimizer instance. Defaults to `"adam"`.
        learning_rate: float or a Keras `LearningRateSchedule`. The base
            (one-cycle: peak) rate; a schedule object is used as it is (then
            `schedule` must be `"constant"`). Defaults to 1e-3.
        weight_decay: float. For `adamw`.
        schedule: str. `constant`, `cosine`, `one-cycle` or `plateau`
            (`kerascnn.schedules`); spans `schedule_epochs` epochs.
            Defaults to `"constant"`.
        schedule_epochs: int. Epochs the schedule spans. Defaults to `epochs`.
        early_stopping: int. Patience in epochs; 0 or `None`: off.
        deadline: float. A `time.time()` after which training stops (at the
            end of an epoch, or of a batch with `deadline_per_batch`).
        deadline_per_batch: bool. Check the deadline after every batch.
        restore_best: bool. Put the best epoch's weights back at the end.
            Defaults to `True`.
        compile: bool. Compile the model (sparse categorical cross-entropy,
            accuracy, `compile_model`). `False`: the model is compiled
            already and `optimizer`, `learning_rate`, `weight_decay`,
            `schedule`, `jit_compile`, `steps_per_execution` are not used.
            Defaults to `True`.
        jit_compile: bool. XLA. Defaults to `False`.
        steps_per_execution: int. Defaults to 1.
        strategy: a `tf.distribute.Strategy` the model was built under; the
            optimizer is made under it too. A `MultiWorkerMirroredStrategy`
            gets data sharding and `keras_multiworker_fixes`.
        history_path: path. Rewrite `history.csv` there after every epoch.
        history: a `History` callback to continue (e.g. across the two
            phases of fine-tuning); its rows come back in `FitResult.history`.
        checkpoint_dir: path. Keep the best weights on disk there too.
        backup_dir: path. `keras.callbacks.BackupAndRestore` folder: a killed
            fit called again with the same folder continues from its last
            finished epoch.
        tensorboard_dir: path. TensorBoard logs.
        log_prefix: str. Put before each epoch's log line.
        verbose: int. 0: one log line per epoch; 1: Keras progress bars.
        callbacks: more Keras callbacks, run after kerascnn's own.

    Returns:
        A `FitResult`.

    Raises:
        InputError: a bad `epochs`, `steps_per_execution`, `schedule` or
            optimizer name.

    Example:

    >>> model = kerascnn.build_cnn(spec)
    >>> result = fit_model(model, bundle.train, validation_data=bundle.validation,
    ...                    epochs=20, schedule="one-cycle", learning_rate=3e-3,
    ...                    deadline=time.time() + 600)
    >>> result.history[-1]["val_accuracy"], result.stopped_by_deadline
    """
    check_int("epochs", epochs)
    check_int("initial_epoch", initial_epoch, minimum=0)
    monitor = "val_loss" if validation_data is not None else "loss"
    if compile:
        check_int("steps_per_execution", steps_per_execution, maximum=MAX_STEPS_PER_EXECUTION)
        schedule = validate_schedule(schedule)
        span = schedule_epochs or epochs
        if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            if schedule != "constant":
                raise InputError("Give a learning-rate schedule object or a schedule name, "
                                 f"not both. Received: schedule={schedule!r}")
            lr, schedule_callbacks = learning_rate, []
        else:
            lr, schedule_callbacks = make_schedule(
                schedule, float(learning_rate), epochs=span,
                steps_per_epoch=steps_per_epoch(train_data), monitor=monitor,
                plateau_patience=max(1, (early_stopping or 4) // 2))
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            opt = optimizer if not isinstance(optimizer, str) else make_optimizer(
                optimizer, lr, weight_decay=weight_decay)
            compile_model(model, optimizer=opt, jit_compile=bool(jit_compile),
                          steps_per_execution=steps_per_execution)
    else:
        schedule_callbacks = []

    history_cb = history if history is not None else History(history_path)
    if history is not None and history_path is not None:
        history_cb.path = Path(history_path)
    history_cb.initial_epoch = initial_epoch
    best_cb = BestCheckpoint(checkpoint_dir, monitor=monitor)
    nan_cb = NaNGuard()
    cbs: list = [nan_cb]
    if backup_dir is not None:
        # restores weights, optimizer state and the epoch before anything else runs; the
        # previous backup is kept too, so a kill in the middle of writing one is survived
        cbs.insert(0, keras.callbacks.BackupAndRestore(
            str(backup_dir), double_checkpoint=True, delete_checkpoint=False))
    cbs += [history_cb, best_cb, *schedule_callbacks]
    early_cb = None
    if early_stopping:
        early_cb = keras.callbacks.EarlyStopping(monitor=monitor, patience=int(early_stopping))
        cbs.append(early_cb)
    deadline_cb = None
    if deadline is not None:
        deadline_cb = Deadline(deadline, per_batch=deadline_per_batch)
        cbs.append(deadline_cb)
    if tensorboard_dir is not None:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    if verbose < 1:
        cbs.append(EpochLogger(epochs, prefix=log_prefix))
    cbs += list(callbacks)

    strategy_name = "multiworker" if _is_multiworker(strategy) else "none"
    # kerascnn.runtime's dataset options (tf.data autotuning off, issue 15) on any dataset
    train_ds = runtime.configure_dataset(distributable(train_data, strategy_name))
    val_ds = runtime.configure_dataset(distributable(validation_data, strategy_name))
    fit_scope = contextlib.nullcontext()
    if strategy_name == "multiworker":
        model._distribute_strategy = None  # see keras_multiworker_fixes
        fit_scope = keras_multiworker_fixes(strategy)
    start = time.perf_counter()
    with fit_scope:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=cbs,
                  shuffle=False,  # the pipeline shuffles; Keras would only warn
                  verbose=1 if verbose >= 1 else 0)
    seconds = time.perf_counter() - start
    restored = getattr(model, "_initial_epoch", None)
    first = int(restored) if restored is not None else int(initial_epoch)
    trained = len([r for r in history_cb.rows if r["epoch"] >= first])
    if restore_best:
        best_cb.restore_best()
    return FitResult(
        model=model, history=history_cb.rows, monitor=monitor, best_epoch=best_cb.best_epoch,
        best=best_cb.best if math.isfinite(best_cb.best) else None,
        epochs_trained=max(0, trained),
        stopped_early=bool(early_cb is not None and early_cb.stopped_epoch > 0),
        stopped_by_deadline=bool(deadline_cb is not None and deadline_cb.fired),
        diverged=bool(nan_cb.fired), seconds=seconds)
