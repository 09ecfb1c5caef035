"""`kerascnn.tune`: search N, M, K and filters with keras-tuner, within a budget.

The engines are keras-tuner's (`hyperband`, `bayesian`, `random`, `grid`);
kerascnn adds what they lack, in thin subclasses:

- **No wasted trial.** The oracles resample a candidate that the analysis says
  cannot exist (a feature map below 1x1) or that breaks `max_params` /
  `max_macs`, instead of handing it to a worker that would fail it (and three
  failures in a row would abort the search). `grid` walks only the valid
  combinations. A space in which nothing is valid is an error before training.
- **Budget.** `max_trials` caps every tuner, Hyperband included (its trials
  that continue an earlier trial count too); `epochs` is the per-trial maximum
  (Hyperband's `max_epochs`); `time_budget` stops the search cleanly: the
  oracle hands out no trial after the deadline and a running trial stops at the
  end of its current epoch; finished trials are kept and results written.
  Early stopping (`patience`) runs inside every trial.
- **Results** in `<directory>/<project_name>/`: keras-tuner's own state
  (`oracle.json`, `trial_*/`), `leaderboard.csv` and `leaderboard.json`
  (rewritten atomically after every trial), `search.yaml` (the resolved
  configuration, usable again as `--config`), `manifest.json`, and `best/`
  with `model.keras`, `spec.yaml`, `metrics.json`.
- **The final model is the best trial's best checkpoint** (the epoch with the
  best validation accuracy, saved by keras-tuner during the search), evaluated
  once on the test split. It is not retrained on train+validation: the
  validation split chose it, retraining would cost a second budget that
  `time_budget` could not bound, and the checkpoint is exactly what the
  leaderboard scored. Use `kerascnn train --from DIR` to retrain it longer.
- **Resume.** The same call again continues the search (a larger `max_trials`
  adds trials, finished ones are never rerun). A changed space, dataset, tuner
  or epochs is refused unless `overwrite=True`.
- **Distributed search** (keras-tuner's chief/worker mode over gRPC): the
  resampling, the deadline, the leaderboard and the progress lines all live in
  the oracle, which runs on the chief, so workers only train.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import logging
import math
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from kerascnn.hypermodel import SearchSpace, values_key

logger = logging.getLogger(__name__)

TUNERS = ("hyperband", "bayesian", "random", "grid")
OBJECTIVE = "val_accuracy"
# what a resumed search must share with the one on disk
IDENTITY_KEYS = ("tuner", "epochs", "dataset", "dataset_fingerprint", "image_size",
                 "validation_split", "batch_size", "patience", "per_block_filters",
                 "augmentation", "max_params", "max_macs", "space")
SEARCH_FILE = "search.yaml"
_MAX_RESAMPLES = 5000
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def parse_duration(value: Any, name: str = "time_budget") -> Optional[float]:
    """Seconds from `90`, `"90s"`, `"15m"`, `"1h30m"`; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be seconds or a duration such as '15m'. "
                        f"Received: {name}={value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u]
                          for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhd])", text))
        else:
            raise ValueError(f"{name} must be a duration such as 90s, 15m or 1h30m. "
                             f"Received: {name}={value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be positive. Received: {name}={value!r}")
    return seconds


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}. Received: {name}={value!r}")
    return value


def _metric(trial, name: str) -> Optional[float]:
    try:
        if trial.metrics.exists(name):
            value = trial.metrics.get_last_value(name)
            return None if value is None else float(value)
    except (KeyError, ValueError, TypeError):
        pass
    return None


# ---------------------------------------------------------------------------
# Oracles: resampling, deadline, reporting
# ---------------------------------------------------------------------------


class _KerasCNNOracle:
    """Mixin for keras-tuner oracles: no wasted trial, a deadline, a report per trial.

    Set after construction: `space` (a `SearchSpace`), `deadline` (a
    `time.time()` value or None) and `reporter` (called with the oracle and
    the ended trial, on the chief in distributed mode).
    """

    space: Optional[SearchSpace] = None
    deadline: Optional[float] = None
    reporter: Optional[Callable] = None
    stopped_by_budget: bool = False
    rejected: int = 0
    keep_checkpoints: Optional[int] = None
    failed_out: Optional[str] = None  # why max_failed_trials ended the search

    def _check_consecutive_failures(self):
        # keras-tuner raises inside end_trial (on the chief, inside a gRPC
        # call, leaving the trial "ongoing" forever); we stop handing out
        # trials instead and keep every result
        try:
            super()._check_consecutive_failures()
        except RuntimeError:
            last = self.trials[self.end_order[-1]]
            reason = (str(last.message or "").strip().splitlines() or ["no reason given"])[-1]
            reason = reason.removeprefix("keras_tuner.src.errors.FailedTrialError: ")
            self.failed_out = (f"{self.max_consecutive_failed_trials} consecutive trials "
                               f"failed (max_failed_trials); the last: {reason}")
            logger.warning("Stopping the search: %s", self.failed_out)

    def save(self):
        from kerascnn.distributed import atomic_save_json

        atomic_save_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        import os

        from kerascnn.distributed import atomic_save_json

        atomic_save_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                         trial.get_state())

    def _feasible(self, values) -> bool:
        if self.space is None or values is None:
            return True
        reason = self.space.check(self.space.values_from(values))
        if reason is not None:
            self.rejected += 1
            logger.debug("resampled a candidate the analysis rejects: %s", reason)
            return False
        return True

    def _random_values(self):
        for _ in range(_MAX_RESAMPLES):
            values = super()._random_values()
            if values is None or self._feasible(values):
                return values
        logger.warning("No valid candidate found in %d samples; stopping the search.",
                       _MAX_RESAMPLES)
        return None

    def _budget_spent(self) -> bool:
        if self.deadline is None or time.time() < self.deadline:
            return False
        # never end a search without one completed trial to report
        return any(t.status == "COMPLETED" for t in self.trials.values())

    def populate_space(self, trial_id):
        if self.failed_out is not None:
            return {"status": "STOPPED", "values": None}
        if self._budget_spent():
            self.stopped_by_budget = True
            return {"status": "STOPPED", "values": None}
        response = super().populate_space(trial_id)
        values = response.get("values")
        repeated = (response.get("status") == "RUNNING" and values is not None
                    and "tuner/trial_id" not in values  # Hyperband continues on purpose
                    and self._duplicate(values))
        if response.get("status") == "RUNNING" and (repeated or not self._feasible(values)):
            # a model-based proposal (Bayesian) outside the valid region, or one
            # already trained: fall back to a new valid random candidate
            fallback = self._random_values()
            if fallback is None:
                return {"status": "STOPPED", "values": None}
            response = {"status": "RUNNING", "values": fallback}
        return response

    def end_trial(self, trial):
        if trial.trial_id in getattr(self, "_retry_queue", ()):
            # a restarted chief queued the trials that were running; this one
            # was finished by its worker meanwhile and must not run again
            self._retry_queue.remove(trial.trial_id)
        super().end_trial(trial)
        # keras-tuner saves the state before it drops the trial from the
        # ongoing ones; saved as is, a resumed chief would run it again
        self.save()
        if self.reporter is not None:
            try:
                self.reporter(self, self.trials[trial.trial_id])
            except Exception:  # noqa: BLE001 - a report must never kill the search
                logger.exception("Could not write the leaderboard after trial %s",
                                 trial.trial_id)
        if self.keep_checkpoints:
            from kerascnn.distributed import prune_checkpoints

            prune_checkpoints(self, self._project_dir, self.keep_checkpoints)


def _oracle_classes() -> dict[str, type]:
    import keras_tuner
    from keras_tuner.src.engine import oracle as oracle_module

    synchronized = keras_tuner.synchronized

    class RandomOracle(_KerasCNNOracle, keras_tuner.oracles.RandomSearchOracle):
        pass

    class BayesianOracle(_KerasCNNOracle, keras_tuner.oracles.BayesianOptimizationOracle):
        pass

    class HyperbandOracle(_KerasCNNOracle, keras_tuner.oracles.HyperbandOracle):
        pass

    class GridOracle(_KerasCNNOracle, oracle_module.Oracle):
        """Every valid combination, defaults first, each once (no invalid one is tried)."""

        def populate_space(self, trial_id):
            if self.failed_out is not None:
                return {"status": "STOPPED", "values": None}
            if self._budget_spent():
                self.stopped_by_budget = True
                return {"status": "STOPPED", "values": None}
            declared = {hp.name for hp in self.hyperparameters.space}
            for values in self.space.enumerate():
                if self.space.check(values) is not None:
                    continue
                hp_values = {k: v for k, v in values.items() if k in declared}
                if self._compute_values_hash(hp_values) in self._tried_so_far:
                    continue
                return {"status": "RUNNING", "values": hp_values}
            if self.ongoing_trials:
                return {"status": "IDLE", "values": None}
            return {"status": "STOPPED", "values": None}

    for cls in (RandomOracle, BayesianOracle, HyperbandOracle, GridOracle):
        cls.end_trial = synchronized(cls.end_trial)
    return {"random": RandomOracle, "bayesian": BayesianOracle,
            "hyperband": HyperbandOracle, "grid": GridOracle}


# ---------------------------------------------------------------------------
# Tuners: declared space, per-trial facts, deadline inside a trial, memory
# ---------------------------------------------------------------------------


class _KerasCNNTuner:
    """Mixin for keras-tuner tuners (before the keras-tuner class in the MRO)."""

    deadline: Optional[float] = None
    distributed = None  # a kerascnn.distributed.DistributedConfig on the chief

    def search(self, *args, **kwargs):
        if self.distributed is not None and self.distributed.role == "chief":
            from kerascnn.distributed import serve

            return serve(self, self.distributed)  # the workers train
        return super().search(*args, **kwargs)

    def save(self):
        from kerascnn.distributed import atomic_save_json

        if not self._is_worker():
            self.oracle.save()
        atomic_save_json(self._get_tuner_fname(), self.get_state())

    def _try_run_and_update_trial(self, trial, *args, **kwargs):
        # keras-tuner prints the traceback of every failed trial to stderr;
        # its reason goes to the leaderboard and the log instead (-vv: both)
        from keras_tuner.src import config as kt_config

        debug, kt_config.DEBUG = kt_config.DEBUG, logger.isEnabledFor(logging.DEBUG)
        try:
            return super()._try_run_and_update_trial(trial, *args, **kwargs)
        finally:
            kt_config.DEBUG = debug

    def _populate_initial_space(self):
        # Declare the whole space (every conditional scope) without building
        # models: building one per scope, as keras-tuner does, costs seconds
        # and would build invalid architectures.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        super().on_search_begin()
        self.oracle.verbose = 0  # progress is ours: one log line per trial

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        if self.deadline is not None and time.time() >= self.deadline:
            model.stop_training = True
            self._budget_stopped.add(trial.trial_id)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # keras-tuner's, with its build_config.json written atomically
        from keras_tuner.src.engine import tuner_utils

        from kerascnn.distributed import atomic_save_json

        hp = trial.hyperparameters
        model = self._try_build(hp)
        results = self.hypermodel.fit(hp, model, *args, **kwargs)
        atomic_save_json(self._get_build_config_fname(trial.trial_id), model.get_build_config())
        tuner_utils.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results

    def run_trial(self, trial, *args, **kwargs):
        from keras_tuner.src.engine import tuner_utils

        self._gradient_names = _custom_gradient_names()

        if not hasattr(self, "_budget_stopped"):
            self._budget_stopped = set()
        start = time.time()
        planned = kwargs.get("epochs", 1)
        import keras
        from keras_tuner.errors import FailedTrialError

        kwargs["callbacks"] = [*kwargs.get("callbacks", []), keras.callbacks.TerminateOnNaN()]
        histories = super().run_trial(trial, *args, **kwargs)
        for history in histories if isinstance(histories, list) else [histories]:
            losses = list((getattr(history, "history", None) or {}).get("loss", []))
            bad = [i for i, v in enumerate(losses) if v is None or not math.isfinite(v)]
            if bad:  # recorded as FAILED with this reason; the search goes on
                raise FailedTrialError(
                    f"diverged: the training loss is {losses[bad[0]]} at epoch {bad[0] + 1} "
                    f"(learning_rate={trial.hyperparameters.values.get('learning_rate')!r})")
        # per-epoch curves for `kerascnn report` (trial.json keeps only the best epoch)
        from kerascnn.runs import write_json

        last = getattr(histories[-1] if isinstance(histories, list) else histories,
                       "history", None) or {}
        write_json(Path(self.get_trial_dir(trial.trial_id)) / "history.json",
                   {k: [float(v) for v in vals] for k, vals in last.items()})
        hp = trial.hyperparameters.values
        if "tuner/epochs" in hp:
            planned = hp["tuner/epochs"] - hp.get("tuner/initial_epoch", 0)
        metrics = dict(tuner_utils.convert_to_metrics_dict(histories, self.oracle.objective))
        runs = histories if isinstance(histories, list) else [histories]
        epochs_run = sum(len(getattr(h, "epoch", []) or []) for h in runs)
        budget = trial.trial_id in self._budget_stopped
        metrics.update({
            "epochs_run": float(epochs_run),
            "seconds": float(time.time() - start),
            "stopped_by_budget": 1.0 if budget else 0.0,
            "stopped_early": 1.0 if (not budget and epochs_run < planned) else 0.0,
        })
        return metrics

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        import keras

        keras.backend.clear_session()
        _drop_custom_gradients(getattr(self, "_gradient_names", None))
        gc.collect()


def _custom_gradient_names() -> Optional[set[str]]:
    """Names in TensorFlow's gradient registry that `tf.custom_gradient` added.

    Keras's TensorFlow optimizer all-reduces gradients through
    `tf.custom_gradient`, which registers a gradient function each time a train
    step is traced and never removes it (tensorflow/tensorflow#61791); its
    closure keeps the traced step alive after `clear_session`, about 12 MiB per
    trial. `bench/memory.py`: growth from trial 5 to 30 was 1.34 without the
    clean-up and 1.05 with it.
    """
    try:
        from tensorflow.python.framework import ops

        return {k for k in ops._gradient_registry._registry if k.startswith("CustomGradient-")}
    except Exception:  # noqa: BLE001 - a private API: if it moves, leak rather than fail
        return None


def _drop_custom_gradients(before: Optional[set[str]]) -> None:
    """Forget the custom gradients a finished trial registered (its models are gone)."""
    now = _custom_gradient_names()
    if before is None or now is None:
        return
    from tensorflow.python.framework import ops

    for name in now - before:
        ops._gradient_registry._registry.pop(name, None)


def _tuner_classes() -> dict[str, type]:
    import keras_tuner

    class KerasCNNTuner(_KerasCNNTuner, keras_tuner.Tuner):
        """Random, Bayesian and grid search: keras-tuner's Tuner with our oracle."""

    class Hyperband(_KerasCNNTuner, keras_tuner.Hyperband):
        """keras-tuner's Hyperband (epochs per round, warm starts) with our oracle."""

        def __init__(self, oracle, hypermodel, **kwargs):
            # keras_tuner.Hyperband.__init__ only makes its own oracle
            keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    return {"random": KerasCNNTuner, "bayesian": KerasCNNTuner, "hyperband": Hyperband,
            "grid": KerasCNNTuner}


def make_tuner(name: str, hypermodel, *, max_trials: int = 10, epochs: int = 8,
               directory: str = ".", project_name: str = "kerascnn", overwrite: bool = False,
               seed: Optional[int] = None, deadline: Optional[float] = None,
               max_failed_trials: int = 3, reporter: Optional[Callable] = None,
               keep_checkpoints: Optional[int] = None):
    """A keras-tuner tuner over a `CNNHyperModel` that never trains an invalid candidate.

    Args:
        name: str. `"hyperband"`, `"bayesian"`, `"random"` or `"grid"`.
        hypermodel: `CNNHyperModel`.
        max_trials: int. The most trials, for every tuner. Defaults to 10.
        epochs: int. Epochs per trial at most (Hyperband's `max_epochs`).
            Defaults to 8.
        directory, project_name, overwrite: as in keras-tuner.
        seed: int. Seed of the oracle. Defaults to `None`.
        deadline: float. `time.time()` after which no trial starts and
            running ones stop at the end of their epoch. Defaults to `None`.
        max_failed_trials: int. Consecutive failed trials that end the search
            (keras-tuner's `max_consecutive_failed_trials`). Defaults to 3.
        reporter: callable(oracle, trial) run after every trial.

    Returns:
        A keras-tuner `Tuner`; call `.search(train, validation_data=..., ...)`.
    """
    if name not in TUNERS:
        raise ValueError(f"Unknown tuner; allowed: {', '.join(TUNERS)}. Received: tuner={name!r}")
    import keras_tuner

    oracles, tuners = _oracle_classes(), _tuner_classes()
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=seed,
                  max_consecutive_failed_trials=max_failed_trials)
    if name == "hyperband":
        # hyperband_iterations is left unbounded: max_trials is the cap
        oracle = oracles[name](max_epochs=epochs, factor=3, hyperband_iterations=10**6,
                               **common)
    elif name == "bayesian":
        # keras-tuner's default (3 per dimension, counting every per-block copy)
        # would make a small search purely random
        searched = sum(p.searched for p in hypermodel.space.params.values())
        oracle = oracles[name](max_trials=max_trials,
                               num_initial_points=max(3, min(2 * searched, max_trials // 2)),
                               **common)
    else:
        oracle = oracles[name](max_trials=max_trials, **common)
    oracle.max_trials = max_trials
    oracle.space = hypermodel.space
    oracle.deadline = deadline
    oracle.reporter = reporter
    oracle.keep_checkpoints = keep_checkpoints
    if name == "grid" and not hypermodel.space.is_finite():
        next(iter(hypermodel.space.enumerate()))  # raises the "needs a finite set" error
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # keras-tuner prints "Reloading Tuner ..."
        tuner = tuners[name](oracle=oracle, hypermodel=hypermodel, directory=str(directory),
                             project_name=project_name, overwrite=overwrite)
    for line in buffer.getvalue().splitlines():
        logger.debug("keras-tuner: %s", line)
    tuner.deadline = deadline
    tuner._budget_stopped = set()
    return tuner


# ---------------------------------------------------------------------------
# Leaderboard and progress
# ---------------------------------------------------------------------------


def leaderboard_rows(oracle, space: SearchSpace) -> list[dict[str, Any]]:
    """One row per trial, best first: id, status, score, active hyperparameters, sizes."""
    from kerascnn.analysis import analyze

    order = {tid: i for i, tid in enumerate(oracle.start_order)}
    rows = []
    for trial in oracle.trials.values():
        hp_values = dict(trial.hyperparameters.values)
        values = space.values_from(hp_values)
        row: dict[str, Any] = {
            "rank": None,
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": None if trial.score is None else float(trial.score),
            "val_loss": _metric(trial, "val_loss"),
            "epochs": None,
            "seconds": _metric(trial, "seconds"),
        }
        epochs = _metric(trial, "epochs_run")
        row["epochs"] = None if epochs is None else int(epochs)
        stopped = "budget" if _metric(trial, "stopped_by_budget") else (
            "early_stopping" if _metric(trial, "stopped_early") else "")
        for name in space.hp_names(values):
            row[name] = values[name]
        if "tuner/trial_id" in hp_values:
            row["continues"] = hp_values["tuner/trial_id"]
        try:
            analysis = analyze(space.spec(values))
            row.update(params=analysis.total_params, macs=analysis.total_macs,
                       receptive_field=analysis.receptive_field)
        except (ValueError, TypeError):
            row.update(params=None, macs=None, receptive_field=None)
        row["stopped_by"] = stopped
        if trial.status not in ("COMPLETED", "RUNNING") and trial.message:
            row["message"] = str(trial.message).strip().splitlines()[-1][:300].removeprefix(
                "keras_tuner.src.errors.FailedTrialError: ")
        row["_order"] = order.get(trial.trial_id, len(order))
        rows.append(row)
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    rest = [r for r in rows if r not in done]
    done.sort(key=lambda r: (-r["score"], r["_order"]))
    rest.sort(key=lambda r: r["_order"])
    for rank, row in enumerate(done, start=1):
        row["rank"] = rank
    out = done + rest
    for row in out:
        row.pop("_order")
    return out


def write_leaderboard(project_dir: Path, rows: list[dict[str, Any]]) -> None:
    """`leaderboard.json` and `leaderboard.csv`, each written atomically."""
    from kerascnn.runs import atomic_write_text, write_json

    write_json(project_dir / "leaderboard.json", rows)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    # sizes and notes after the hyperparameters
    tail = [c for c in ("params", "macs", "receptive_field", "stopped_by", "message")
            if c in columns]
    columns = [c for c in columns if c not in tail] + tail
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(project_dir / "leaderboard.csv", buffer.getvalue())


class _Reporter:
    """After every trial: rewrite the leaderboard and log one progress line."""

    def __init__(self, project_dir: Path, space: SearchSpace, max_trials: int,
                 deadline: Optional[float]):
        self.project_dir = project_dir
        self.space = space
        self.max_trials = max_trials
        self.deadline = deadline
        self.start = time.time()
        self.ended_here = 0

    def __call__(self, oracle, trial) -> None:
        rows = leaderboard_rows(oracle, self.space)
        write_leaderboard(self.project_dir, rows)
        self.ended_here += 1
        done = len(oracle.end_order)
        elapsed = time.time() - self.start
        left = max(0, self.max_trials - len(oracle.trials))
        eta = elapsed / self.ended_here * left
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - time.time()))
        best = next((r["score"] for r in rows if r["rank"] == 1), None)
        row = next((r for r in rows if r["trial_id"] == trial.trial_id), {})
        score = f"failed: {row.get('message') or trial.status}" \
            if trial.status != "COMPLETED" else f"{OBJECTIVE}={trial.score:.4f}"
        details = []
        if row.get("params") is not None:
            details.append(f"{row['params']:,} params")
        if row.get("epochs") is not None:
            details.append(f"{row['epochs']} epochs")
        if row.get("stopped_by"):
            details.append(f"stopped by {row['stopped_by'].replace('_', ' ')}")
        logger.info("trial %d/%d: %s (%s)  best %s  elapsed %s  left ~%s", done,
                    self.max_trials, score, ", ".join(details),
                    "-" if best is None else f"{best:.4f}", _format_seconds(elapsed),
                    _format_seconds(eta))


# ---------------------------------------------------------------------------
# tune()
# ---------------------------------------------------------------------------


@dataclass
class TuneResult:
    """What `tune` found.

    Attributes:
        best_spec: `CNNSpec` of the best trial.
        best_model_path: `Path` of `best/model.keras`.
        best_hyperparameters: dict of the best trial's searched values.
        test_accuracy, test_loss: float, from one evaluation on the test split.
        leaderboard: list of dict rows, best first (as `leaderboard.json`).
        directory: `Path` of `<directory>/<project_name>`.
        seconds: float, wall-clock time of this call.
        stopped_by_budget: bool, whether `time_budget` ended the search.
    """

    best_spec: Any
    best_model_path: Path
    best_hyperparameters: dict[str, Any]
    test_accuracy: float
    test_loss: float
    leaderboard: list[dict[str, Any]]
    directory: Path
    seconds: float
    stopped_by_budget: bool = False
    best_trial_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def tune(
    dataset: Any = "fashion_mnist_sample",
    *,
    space: Optional[Mapping[str, Any]] = None,
    tuner: str = "hyperband",
    max_trials: int = 8,
    epochs: int = 8,
    time_budget: Any = None,
    max_params: Optional[int] = None,
    max_macs: Optional[int] = None,
    patience: int = 2,
    batch_size: int = 128,
    validation_split: float = 0.1,
    image_size: Optional[Sequence[int]] = None,
    color_mode: Optional[str] = None,
    data_dir: Optional[str] = None,
    download: bool = False,
    per_block_filters: bool = False,
    augmentation: Any = None,
    directory: str = "runs",
    project_name: str = "tune",
    overwrite: bool = False,
    seed: int = 0,
    max_failed_trials: int = 3,
    keep_checkpoints: int = 3,
    tensorboard: bool = False,
    distributed: Optional[str] = None,
    oracle_address: Optional[str] = None,
    worker_id: Optional[str] = None,
    chief_timeout: Any = None,
    verbose: int = 0,
    command_line: Optional[Sequence[str]] = None,
) -> TuneResult:
    """Search CNN architectures and training settings for a dataset.

    Args:
        dataset: str or `DatasetBundle`. Anything `kerascnn.load_dataset`
            takes, or an already loaded bundle. Defaults to the bundled
            `"fashion_mnist_sample"`.
        space: dict. Hyperparameter entries (see `kerascnn.hypermodel`):
            each fixed, a list of choices, a `(min, max)` tuple or a
            `{min, max, step, sampling}` mapping. Missing entries take
            their documented defaults. Defaults to `None` (all defaults).
        tuner: str. `"hyperband"`, `"bayesian"`, `"random"` or `"grid"`.
            Defaults to `"hyperband"`.
        max_trials: int. The most trials, every tuner (Hyperband's
            continuation trials count). Defaults to 8.
        epochs: int. Epochs per trial at most. Defaults to 8.
        time_budget: seconds or a duration string (`"15m"`). After it no
            trial starts, a running trial stops at the end of its epoch, and
            results are written. Defaults to `None` (no limit).
        max_params, max_macs: int. Candidates above these are resampled
            before training. Defaults to `None`.
        patience: int. Early-stopping patience (epochs without a better
            validation loss) inside each trial; 0 turns it off. Defaults to 2.
        batch_size, validation_split, image_size, color_mode, data_dir,
            download: passed
            to `kerascnn.load_dataset`.
        per_block_filters: bool. Search filters per block. Defaults to
            `False`.
        augmentation: list. Entries scaled by `augmentation_strength`.
        directory: str. Parent folder of the search. Defaults to `"runs"`.
        project_name: str. The search's folder name. Defaults to `"tune"`.
        overwrite: bool. Start over instead of resuming, and accept a
            changed configuration. Defaults to `False`.
        seed: int. Seed of the oracle, the data split and Keras. Defaults to 0.
        max_failed_trials: int. Consecutive failed trials (a crash, a NaN
            loss) that end the search. Defaults to 3.
        keep_checkpoints: int. Trials whose weights stay on disk (the best
            ones); the others' are deleted as the search goes, the
            leaderboard keeps every trial. Defaults to 3.
        tensorboard: bool. Write TensorBoard logs (scalars and the HParams view)
            to `<directory>/<project_name>/tensorboard`. Defaults to `False`.
        distributed: str. `"chief"` serves the oracle and, when no trial is
            left, writes the results; `"worker"` trains the chief's trials
            and returns a `kerascnn.distributed.WorkerResult`. Defaults to
            `None` (local, unless keras-tuner's `KERASTUNER_*` variables are
            set). See docs/distributed.md.
        oracle_address: str. `HOST:PORT` of the chief. Defaults to
            `127.0.0.1:8000`.
        worker_id: str. A worker's unique name; restarted with the same id
            it picks up its trial.
        chief_timeout: seconds or a duration. How long a worker waits for
            its chief. Defaults to 10 minutes.
        verbose: int. 1 or more shows Keras's epoch progress bars.
        command_line: list of str recorded in `manifest.json`. Defaults to
            `sys.argv`.

    Returns:
        A `TuneResult`.

    Raises:
        ValueError, TypeError: a bad argument, a space in which no
            architecture is valid or meets the limits, or a changed
            configuration on resume; raised before anything is written.

    Example:

    >>> result = kerascnn.tune(max_trials=4, epochs=2, space={"conv_blocks": (1, 3)})
    >>> result.test_accuracy, result.best_model_path
    """
    started = time.time()
    # ---- validate everything before any file exists
    if tuner not in TUNERS:
        raise ValueError(f"Unknown tuner; allowed: {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    _positive_int("max_trials", max_trials)
    _positive_int("epochs", epochs)
    _positive_int("patience", patience, minimum=0)
    _positive_int("batch_size", batch_size)
    _positive_int("max_failed_trials", max_failed_trials)
    _positive_int("keep_checkpoints", keep_checkpoints)
    from kerascnn import distributed as distributed_module

    dist = distributed_module.resolve(distributed, oracle_address, worker_id, chief_timeout)
    if dist is not None and dist.role == "worker" and overwrite:
        raise ValueError("overwrite is for the chief or a local search; a worker never deletes "
                         "the search. Received: overwrite=True")
    budget = parse_duration(time_budget)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0 < validation_split < 1:
        raise ValueError(f"A search chooses by validation accuracy, so validation_split must be "
                         f"in (0, 1). Received: validation_split={validation_split!r}")
    if space is None:
        space = {}
    if not isinstance(space, Mapping):
        raise TypeError(f"space must be a mapping of hyperparameter names to values. "
                        f"Received: space={space!r}")
    for name, value in (("directory", directory), ("project_name", project_name)):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError(f"{name} must be a non-empty folder name. Received: {name}={value!r}")
    if any(sep in str(project_name) for sep in ("/", "\\")) or str(project_name) in (".", ".."):
        raise ValueError(f"project_name is a folder name, not a path. "
                         f"Received: project_name={project_name!r}")
    # the space is checked once without data (cheap, clear errors before loading)
    checked = SearchSpace((8, 8, 1), 2, per_block_filters=per_block_filters,
                          augmentation=augmentation, max_params=max_params, max_macs=max_macs,
                          **dict(space))
    source = str(dataset) if isinstance(dataset, (str, Path)) else str(
        getattr(dataset, "source", dataset))
    config = {
        "dataset": source,
        "dataset_fingerprint": None,  # known once the data is loaded
        "image_size": list(image_size) if image_size else None,
        "validation_split": float(validation_split),
        "batch_size": batch_size,
        "tuner": tuner,
        "max_trials": max_trials,
        "epochs": epochs,
        "time_budget": budget,
        "patience": patience,
        "max_params": max_params,
        "max_macs": max_macs,
        "per_block_filters": per_block_filters,
        "augmentation": [dict(e) for e in checked.augmentation],
        "seed": seed,
        "objective": OBJECTIVE,
        "space": checked.to_config(),
    }
    project_dir = Path(directory) / str(project_name)
    if dist is None or dist.role != "worker":
        # a changed configuration is refused before the data is even loaded
        _check_resume(project_dir, config, overwrite)

    with _held_logs("kerascnn.data") as held:  # shown once the inputs are known to be good
        bundle = _load(dataset, batch_size=batch_size, validation_split=validation_split,
                       image_size=image_size, color_mode=color_mode, data_dir=data_dir,
                       download=download, seed=seed)
    network_shape, preprocessing = _preprocessing(bundle, image_size)

    from kerascnn.hypermodel import CNNHyperModel

    hypermodel = CNNHyperModel(network_shape, bundle.num_classes,
                               preprocessing=preprocessing,
                               raw_input_shape=tuple(bundle.input_shape),
                               per_block_filters=per_block_filters, augmentation=augmentation,
                               max_params=max_params, max_macs=max_macs, seed=seed,
                               **dict(space))
    search_space = hypermodel.space
    search_space.assert_feasible()
    if tuner == "grid" and not search_space.is_finite():
        next(iter(search_space.enumerate()))  # raises the "needs a finite set" error
    for record in held:
        logging.getLogger(record.name).handle(record)

    config.update(dataset_fingerprint=str(getattr(bundle, "fingerprint", "")),
                  input_shape=list(network_shape), num_classes=int(bundle.num_classes),
                  space=search_space.to_config())
    if dist is not None and dist.role == "worker":  # trains the chief's trials, writes no result
        return distributed_module.run_worker(
            dist, project_dir, _search_yaml(config), SEARCH_FILE, IDENTITY_KEYS,
            lambda: make_tuner(tuner, hypermodel, max_trials=max_trials, epochs=epochs,
                               directory=str(directory), project_name=str(project_name),
                               seed=seed + 1, max_failed_trials=max_failed_trials),
            bundle, epochs=epochs, patience=patience, verbose=verbose, seed=seed)
    resuming = _check_resume(project_dir, config, overwrite)

    # ---- from here on files are written
    import keras

    keras.utils.set_random_seed(seed)
    if overwrite and project_dir.exists():
        shutil.rmtree(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    from kerascnn.runs import manifest, write_json, write_yaml

    write_yaml(project_dir / SEARCH_FILE, _search_yaml(config))
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="running"))

    deadline = started + budget if budget is not None else None
    reporter = _Reporter(project_dir, search_space, max_trials, deadline)
    kt_tuner = make_tuner(tuner, hypermodel, max_trials=max_trials, epochs=epochs,
                          directory=str(directory), project_name=str(project_name),
                          overwrite=False, seed=seed + 1, deadline=deadline,
                          max_failed_trials=max_failed_trials, reporter=reporter,
                          keep_checkpoints=keep_checkpoints)
    kt_tuner.distributed = dist  # a chief serves the oracle instead of training
    done_before = len(kt_tuner.oracle.end_order)
    if resuming:
        logger.info("Resuming %s: %d trial(s) done, up to %d in all.", project_dir,
                    done_before, max_trials)
    logger.info("Searching %s (%s, %d classes, %d training images) with %s: up to %d trials "
                "of up to %d epochs%s.", config["dataset"], "x".join(map(str, network_shape)),
                bundle.num_classes, getattr(bundle, "num_train", -1), tuner, max_trials, epochs,
                f", time budget {_format_seconds(budget)}" if budget else "")

    callbacks = []
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    if tensorboard:
        # keras-tuner gives each trial its own log folder and adds the HParams callback
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(project_dir / "tensorboard")))
    with warnings.catch_warnings():
        # Keras warns that `shuffle` is ignored for a tf.data.Dataset (ours is
        # shuffled by the pipeline) and about optimizer variables when the
        # warm start of a Hyperband round loads weights only
        warnings.filterwarnings("ignore", message=".*shuffle.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
        kt_tuner.search(bundle.train, validation_data=bundle.validation, epochs=epochs,
                        callbacks=callbacks, verbose=1 if verbose and verbose > 0 else 0)

    if not kt_tuner.oracle.ongoing_trials:  # the search is over: keep the best K only
        from kerascnn.distributed import prune_checkpoints

        prune_checkpoints(kt_tuner.oracle, project_dir, keep_checkpoints, final=True)
    rows = leaderboard_rows(kt_tuner.oracle, search_space)
    write_leaderboard(project_dir, rows)
    stopped = bool(getattr(kt_tuner.oracle, "stopped_by_budget", False)) or any(
        r["stopped_by"] == "budget" for r in rows if r.get("stopped_by"))
    if stopped:
        logger.info("Time budget of %s reached: stopping with %d trial(s) done.",
                    _format_seconds(budget), len(kt_tuner.oracle.end_order))
    best_trials = [t for t in kt_tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not best_trials:
        reason = getattr(kt_tuner.oracle, "failed_out", None) or "no trial completed"
        raise RuntimeError(f"No trial completed ({reason}); see "
                           f"{project_dir / 'leaderboard.json'}.")
    best = best_trials[0]
    result = _finish(kt_tuner, best, hypermodel, bundle, project_dir, rows, started, stopped,
                     seed, config, command_line)
    return result


@contextlib.contextmanager
def _held_logs(name: str):
    """Hold back the log records of logger `name` (and its children).

    A bad input must end in one error line; the data module's "Dataset ..."
    line is replayed by the caller once the space is known to fit the data.
    """
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record):
            held.append(record)

    target = logging.getLogger(name)
    handler, propagate = Hold(), target.propagate
    target.addHandler(handler)
    target.propagate = False
    try:
        yield held
    finally:
        target.removeHandler(handler)
        target.propagate = propagate


def _load(dataset, **kw):
    if hasattr(dataset, "train") and hasattr(dataset, "num_classes"):
        return dataset
    if not isinstance(dataset, (str, Path)):
        raise TypeError(f"dataset must be a name, a path or a DatasetBundle. "
                        f"Received: dataset={dataset!r}")
    from kerascnn.data import load_dataset

    image_size = kw.pop("image_size")
    if image_size is not None and len(tuple(image_size)) == 1:
        image_size = (image_size[0], image_size[0])
    return load_dataset(str(dataset), image_size=tuple(image_size) if image_size else None,
                        **kw)


def _preprocessing(bundle, image_size):
    """The network input shape and a factory of fresh preprocessing layers per model."""
    try:
        from kerascnn.data import network_input_shape, preprocessing_layers
    except ImportError:  # a bundle made by hand, without kerascnn.data
        network_input_shape = preprocessing_layers = None
    if preprocessing_layers is None:
        import keras

        return tuple(bundle.input_shape), lambda: [keras.layers.Rescaling(1.0 / 255)]
    shape = tuple(network_input_shape(bundle, image_size))
    return shape, lambda: list(preprocessing_layers(bundle, image_size=image_size))


def _search_yaml(config: dict[str, Any]) -> dict[str, Any]:
    """search.yaml: every resolved option, readable again with `--config`."""
    return {
        "dataset": config["dataset"], "tuner": config["tuner"],
        "max_trials": config["max_trials"], "epochs": config["epochs"],
        "time_budget": config["time_budget"], "max_params": config["max_params"],
        "max_macs": config["max_macs"], "patience": config["patience"],
        "batch_size": config["batch_size"], "validation_split": config["validation_split"],
        "image_size": config["image_size"], "per_block_filters": config["per_block_filters"],
        "augmentation": config["augmentation"], "seed": config["seed"],
        "space": config["space"],
    }


def _check_resume(project_dir: Path, config: dict[str, Any], overwrite: bool) -> bool:
    """True when resuming; ValueError when the folder holds another search."""
    if not project_dir.exists():
        return False
    if not project_dir.is_dir():
        raise ValueError(f"The search folder exists and is not a folder. Received: "
                         f"directory={str(project_dir.parent)!r}, "
                         f"project_name={project_dir.name!r}")
    if overwrite or not any(project_dir.iterdir()):
        return False
    path = project_dir / SEARCH_FILE
    if not path.is_file():
        raise ValueError(f"{str(project_dir)!r} holds files but no {SEARCH_FILE}, so it is not "
                         f"a kerascnn search to resume; pass --overwrite to replace it or choose "
                         f"another --project-name. Received: project_name={project_dir.name!r}")
    from kerascnn.runs import read_yaml

    from kerascnn.runs import read_json

    old_flat = dict(read_yaml(path) or {})
    try:  # the data the old search saw: its manifest's fingerprint
        old_flat["dataset_fingerprint"] = read_json(project_dir / "manifest.json").get(
            "dataset_fingerprint")
    except (OSError, ValueError):
        old_flat["dataset_fingerprint"] = None
    new_flat = {**_search_yaml(config), "dataset_fingerprint": config["dataset_fingerprint"]}
    import json

    def norm(v):
        return json.loads(json.dumps(v, default=str))

    changed = [k for k in IDENTITY_KEYS if k in new_flat
               and not (k == "dataset_fingerprint" and new_flat[k] is None)
               and norm(old_flat.get(k)) != norm(new_flat.get(k))]
    if changed:
        details = []
        for k in changed:
            if k == "space":
                o, n = old_flat.get(k) or {}, new_flat.get(k) or {}
                diff = [f"{h}: {o.get(h)!r} -> {n.get(h)!r}" for h in n if o.get(h) != n.get(h)]
                details.append("space (" + "; ".join(diff) + ")")
            else:
                details.append(f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}")
        raise ValueError(
            f"{str(project_dir)!r} holds a search with another configuration, so it cannot be "
            f"resumed; pass --overwrite to start over or choose another --project-name. "
            f"Received: {', '.join(details)}")
    return True


def _finish(kt_tuner, best, hypermodel, bundle, project_dir: Path, rows, started: float,
            stopped: bool, seed: int, config, command_line) -> TuneResult:
    """Load the best checkpoint, evaluate it once on the test split, write best/."""
    from kerascnn.runs import manifest, save_model, write_json

    space = hypermodel.space
    values = space.values_from(best.hyperparameters.values)
    spec = space.spec(values)
    import keras

    # The best trial's own checkpoint, into a freshly built model. Not
    # `kt_tuner.load_model`: Hyperband's version first loads the weights of the
    # trial a continuation started from, which --keep-checkpoints may have
    # deleted and which the best checkpoint overwrites anyway.
    keras.backend.clear_session()
    gc.collect()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
        model = hypermodel.build(best.hyperparameters.copy())
        model.load_weights(kt_tuner._get_checkpoint_fname(best.trial_id))
    evaluation = model.evaluate(bundle.test, verbose=0, return_dict=True)
    test_accuracy = float(evaluation.get("accuracy", evaluation.get("compile_metrics", 0.0)))
    test_loss = float(evaluation["loss"])
    if model.optimizer is not None and not model.optimizer.built:
        # saved with its (fresh) slots, so loading the file does not warn about them
        model.optimizer.build(model.trainable_variables)
    best_dir = project_dir / "best"
    best_dir.mkdir(parents=True, exist_ok=True)
    searched = {k: values[k] for k in space.hp_names(values)}
    model_path = save_model(model, best_dir / "model.keras",
                            class_names=list(getattr(bundle, "class_names", []) or []),
                            spec=spec, trial_id=best.trial_id, hyperparameters=values)
    spec.save(best_dir / "spec.yaml")
    row = next((r for r in rows if r["trial_id"] == best.trial_id), {})
    metrics = {
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        "val_accuracy": float(best.score), "trial_id": best.trial_id,
        "params": row.get("params"), "macs": row.get("macs"),
        "learning_rate": values.get("learning_rate"), "optimizer": values.get("optimizer"),
        "hyperparameters": searched,
        "final_model": "best checkpoint of the best trial (not retrained)",
    }
    write_json(best_dir / "metrics.json", metrics)
    seconds = time.time() - started
    oracle = kt_tuner.oracle
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="finished",
        trials=len(oracle.trials), completed=sum(t.status == "COMPLETED"
                                                 for t in oracle.trials.values()),
        best_trial=best.trial_id, test_accuracy=test_accuracy, seconds=round(seconds, 1),
        stopped_by_budget=stopped, rejected_candidates=getattr(oracle, "rejected", 0)))
    import keras

    del model
    keras.backend.clear_session()
    gc.collect()
    return TuneResult(best_spec=spec, best_model_path=model_path, best_hyperparameters=searched,
                      test_accuracy=test_accuracy, test_loss=test_loss, leaderboard=rows,
                      directory=project_dir, seconds=seconds, stopped_by_budget=stopped,
                      best_trial_id=best.trial_id)
