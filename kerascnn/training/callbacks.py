"""The Keras callbacks kerascnn trains with: one set for `train`, `finetune` and `tune`.

- `History`: every epoch's logs with the learning rate and seconds; rewrites
  `history.csv` atomically after each epoch when given a path.
- `BestCheckpoint`: the weights of the best epoch, in memory and optionally
  on disk (so that a resumed run still has them).
- `EpochLogger`: one log line per epoch (what the CLI shows without `-v`).
- `NaNGuard`: `TerminateOnNaN` that remembers that it fired.
- `Deadline`: stops training once a wall-clock deadline has passed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from kerascnn.files import read_json, write_json
from kerascnn.runs import write_history
from kerascnn.training.optimizers import current_learning_rate

logger = logging.getLogger(__name__)


class History(keras.callbacks.Callback):
    """Keeps every epoch's logs (with the learning rate and seconds).

    Given a `path`, rewrites it as `history.csv` atomically after each epoch.
    When training begins, rows from before its first epoch are kept and later
    ones are dropped: the first epoch is the one `keras.callbacks.BackupAndRestore`
    restored (an epoch logged but not backed up before a kill is trained
    again), else `initial_epoch` (set it to the `initial_epoch` given to `fit`;
    `fit_model` does).

    Args:
        path: str or Path. Where to write `history.csv`; `None` writes nothing.
        previous_rows: rows of an earlier `fit` to continue (a resumed run,
            or the first phase of a fine-tuning run).
        fields: dict. Constant columns added to every row (e.g.
            `{"phase": "head"}`); may be changed between two `fit` calls.

    Attributes:
        rows: list of dict, one per epoch: `epoch`, the logs, `learning_rate`,
            `seconds`.
        initial_epoch: int. The first epoch of the next `fit`. Defaults to 0.
    """

    def __init__(self, path: str | os.PathLike | None = None,
                 previous_rows: Sequence[dict] = (), fields: dict[str, Any] | None = None):
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.rows: list[dict] = list(previous_rows)
        self.fields = dict(fields or {})
        self.initial_epoch = 0
        self._start = 0.0

    def on_train_begin(self, logs=None):
        restored = getattr(self.model, "_initial_epoch", None)  # set by BackupAndRestore
        first = int(restored) if restored is not None else int(self.initial_epoch)
        self.rows = [r for r in self.rows if int(r["epoch"]) < first]

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row: dict[str, Any] = {"epoch": int(epoch), **self.fields}
        for key, value in (logs or {}).items():
            row[key] = float(value)
        if "learning_rate" not in row:
            row["learning_rate"] = current_learning_rate(self.model)
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(epoch)] + [row]
        if self.path is not None:
            write_history(self.path, self.rows)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the best epoch so far (lowest `monitor`).

    In memory, and, given a folder, also as `best.weights.npz` (written to a
    temporary name and renamed) with the best score in `best.json`, so that a
    resumed run compares against it and can still restore it. A plain `.npz`
    of the model's weights is about ten times faster to write than Keras's
    `.weights.h5` with the optimizer state, which matters when it is written
    after most epochs.

    Args:
        directory: str or Path. Where to keep the best weights; `None`: in
            memory only.
        monitor: str. The logged value to minimise. Defaults to `"val_loss"`.

    Attributes:
        best: float. The best value so far (`inf` before the first).
        best_epoch: int or None. Its epoch.
    """

    def __init__(self, directory: str | os.PathLike | None = None, monitor: str = "val_loss"):
        super().__init__()
        self.directory = Path(directory) if directory is not None else None
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch: int | None = None
        self.weights: list | None = None
        if self.directory is not None:
            self.path = self.directory / "best.weights.npz"
            self.info_path = self.directory / "best.json"
            if self.info_path.is_file() and self.path.is_file():
                try:
                    info = read_json(self.info_path)
                    self.best, self.best_epoch = float(info["best"]), int(info["epoch"])
                except (ValueError, KeyError, TypeError):
                    pass

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) >= self.best:
            return
        self.weights = self.model.get_weights()
        self.best, self.best_epoch = float(value), int(epoch)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / ".best.weights.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, *self.weights)
        os.replace(tmp, self.path)
        write_json(self.info_path, {"monitor": self.monitor, "best": self.best,
                                    "epoch": self.best_epoch})

    def restore_best(self) -> bool:
        """Put the best weights back into the model; False if there are none."""
        weights = self.weights
        if weights is None and self.directory is not None and self.path.is_file():
            with np.load(self.path, allow_pickle=False) as f:
                weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        if weights is None:
            return False
        self.model.set_weights(weights)
        return True


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch: `epoch 3/10  loss 0.41  accuracy 0.85 ... lr 0.001  2.1s`.

    Args:
        epochs: int. The last epoch number shown (`epoch N/epochs`).
        prefix: str. Put before each line, e.g. a fine-tuning phase.
    """

    def __init__(self, epochs: int, prefix: str | None = None):
        super().__init__()
        self.epochs = epochs
        self.prefix = prefix
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        parts = [f"{self.prefix} " if self.prefix else ""]
        parts[0] += f"epoch {epoch + 1}/{self.epochs}"
        for key, value in (logs or {}).items():
            if key != "learning_rate":
                parts.append(f"{key} {float(value):.4f}")
        parts.append(f"lr {current_learning_rate(self.model):.3g}")
        parts.append(f"{time.perf_counter() - self._start:.1f}s")
        logger.info("  ".join(parts))


class NaNGuard(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite, as
    `keras.callbacks.TerminateOnNaN` does, but silently: it remembers that it
    fired (`fired`) and the caller reports it (Keras prints to stdout, even
    under `-q`)."""

    def __init__(self):
        super().__init__()
        self.fired = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.fired = True
            self.model.stop_training = True


class Deadline(keras.callbacks.Callback):
    """Stops training once `time.time()` passes `deadline`.

    Checked at the end of every epoch, and with `per_batch=True` also after
    every batch (the epoch then ends early; Keras still runs its validation).

    Args:
        deadline: float. A `time.time()` value.
        per_batch: bool. Also check after each batch. Defaults to `False`.

    Attributes:
        fired: bool. Whether the deadline stopped training.
    """

    def __init__(self, deadline: float, per_batch: bool = False):
        super().__init__()
        self.deadline = float(deadline)
        self.per_batch = per_batch
        self.fired = False

    def _check(self) -> None:
        if time.time() >= self.deadline:
            self.model.stop_training = True
            self.fired = True

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()
