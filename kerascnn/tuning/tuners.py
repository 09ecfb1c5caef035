"""keras-tuner tuners for `CNNHyperModel`: a declared space, per-trial facts, a
deadline inside a trial, flat memory across trials.

`make_tuner(name, hypermodel, ...)` pairs each algorithm's oracle
(`kerascnn.tuning.oracles`, `kerascnn.tuning.halving`) with its tuner.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import time
from pathlib import Path
from typing import Callable, Optional

import keras
import keras_tuner
from keras_tuner.src import config as kt_config
from keras_tuner.src.engine import tuner_utils

from kerascnn.checks import TUNERS, check_choice
from kerascnn.distributed import DistributedConfig
from kerascnn.files import write_json
from kerascnn.tuning.chief import serve
from kerascnn.tuning.gradients import custom_gradient_names, drop_custom_gradients
from kerascnn.tuning.halving import SuccessiveHalvingOracle, default_rungs, seed_candidates
from kerascnn.tuning.oracles import BayesianOracle, GridOracle, HyperbandOracle, RandomOracle
from kerascnn.tuning.storage import save_state

logger = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"


class KerasCNNTuner(keras_tuner.Tuner):
    """keras-tuner's `Tuner` for a `CNNHyperModel` and one of kerascnn's oracles.

    Args:
        oracle: a `kerascnn.tuning.oracles.KerasCNNOracle`.
        hypermodel: `CNNHyperModel`.
        deadline: float. A `time.time()` value after which a running trial
            stops at the end of its epoch. Defaults to `None`.
        distributed: `kerascnn.distributed.DistributedConfig`. On the chief,
            `search` serves the oracle instead of training. Defaults to `None`.
        **kwargs: keras-tuner's `Tuner` arguments (`directory`,
            `project_name`, `overwrite`, ...).
    """

    def __init__(self, oracle, hypermodel, *, deadline: Optional[float] = None,
                 distributed: Optional[DistributedConfig] = None, **kwargs):
        self.deadline = deadline
        self.distributed = distributed
        self.budget_stopped: set[str] = set()
        self._gradient_names: Optional[set[str]] = None
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)

    def search(self, *args, **kwargs):
        if self.distributed is not None and self.distributed.role == "chief":
            return serve(self, self.distributed)  # the workers train
        return super().search(*args, **kwargs)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        save_state(self._get_tuner_fname(), self.get_state())

    def _try_run_and_update_trial(self, trial, *args, **kwargs):
        # keras-tuner prints the traceback of every failed trial to stderr;
        # its reason goes to the leaderboard and the log instead (-vv: both)
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
            self.budget_stopped.add(trial.trial_id)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # keras-tuner's, with its build_config.json written atomically
        hp = trial.hyperparameters
        model = self._try_build(hp)
        results = self.hypermodel.fit(hp, model, *args, **kwargs)
        save_state(self._get_build_config_fname(trial.trial_id), model.get_build_config())
        tuner_utils.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results

    def run_trial(self, trial, *args, **kwargs):
        self._gradient_names = custom_gradient_names()
        start = time.time()
        hp = trial.hyperparameters.values
        if "tuner/epochs" in hp:  # the rung (halving) or round (Hyperband) says
            kwargs["epochs"] = hp["tuner/epochs"]
            kwargs["initial_epoch"] = hp.get("tuner/initial_epoch", 0)
        planned = kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0)
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), keras.callbacks.TerminateOnNaN()]
        histories = super().run_trial(trial, *args, **kwargs)
        runs = histories if isinstance(histories, list) else [histories]
        for history in runs:
            losses = list((getattr(history, "history", None) or {}).get("loss", []))
            bad = [i for i, v in enumerate(losses) if v is None or not math.isfinite(v)]
            if bad:  # recorded as FAILED with this reason; the search goes on
                raise keras_tuner.errors.FailedTrialError(
                    f"diverged: the training loss is {losses[bad[0]]} at epoch {bad[0] + 1} "
                    f"(learning_rate={trial.hyperparameters.values.get('learning_rate')!r})")
        # per-epoch curves for `kerascnn report` (trial.json keeps only the best epoch)
        last = getattr(runs[-1], "history", None) or {}
        write_json(Path(self.get_trial_dir(trial.trial_id)) / "history.json",
                   {k: [float(v) for v in vals] for k, vals in last.items()})
        metrics = dict(tuner_utils.convert_to_metrics_dict(histories, self.oracle.objective))
        epochs_run = sum(len(getattr(h, "epoch", []) or []) for h in runs)
        budget = trial.trial_id in self.budget_stopped
        metrics.update({
            "epochs_run": float(epochs_run),
            "seconds": float(time.time() - start),
            "stopped_by_budget": 1.0 if budget else 0.0,
            "stopped_early": 1.0 if (not budget and epochs_run < planned) else 0.0,
        })
        return metrics

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        keras.backend.clear_session()
        drop_custom_gradients(self._gradient_names)
        gc.collect()


class HyperbandTuner(KerasCNNTuner):
    """keras-tuner's Hyperband (epochs per round, warm starts) with kerascnn's oracle."""

    def _build_hypermodel(self, hp):
        model = super()._build_hypermodel(hp)
        if "tuner/trial_id" in hp.values:  # continue the trial of the previous round
            model.load_weights(self._get_checkpoint_fname(hp.values["tuner/trial_id"]))
        return model


def make_tuner(name: str, hypermodel, *, max_trials: int = 10, epochs: int = 8,
               directory: str = ".", project_name: str = "kerascnn", overwrite: bool = False,
               seed: Optional[int] = None, deadline: Optional[float] = None,
               max_failed_trials: int = 3, reporter: Optional[Callable] = None,
               keep_checkpoints: Optional[int] = None,
               distributed: Optional[DistributedConfig] = None, cost=None,
               validation_images: int = 0):
    """A keras-tuner tuner over a `CNNHyperModel` that never trains an invalid candidate.

    Args:
        name: str. `"halving"`, `"hyperband"`, `"bayesian"`, `"random"` or
            `"grid"`.
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
        keep_checkpoints: int. Keep the weights of the best K trials only.
        distributed: `DistributedConfig` of this process, or `None`.
        cost: `kerascnn.tuning.cost.CostModel` (halving): predicts each
            trial's seconds, calibrated by the finished ones.
        validation_images: int. Images validated after every epoch (halving).

    Returns:
        A keras-tuner `Tuner`; call `.search(train, validation_data=..., ...)`.

    Raises:
        InputError: an unknown tuner, or grid search over a continuous range.
    """
    check_choice("tuner", name, TUNERS)
    space = hypermodel.space
    if name == "grid" and not space.is_finite():
        next(iter(space.enumerate()))  # raises the "needs a finite set" error
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, direction="max"), seed=seed,
                  max_consecutive_failed_trials=max_failed_trials, space=space,
                  deadline=deadline, reporter=reporter, keep_checkpoints=keep_checkpoints)
    tuner_class = KerasCNNTuner
    if name == "halving":
        fidelity = hypermodel.fidelity
        oracle = SuccessiveHalvingOracle(
            rungs=default_rungs(fidelity.num_train, epochs, fidelity.batch_size), cost=cost,
            train_images=fidelity.size, validation_images=validation_images,
            seeds=seed_candidates(space), max_trials=max_trials, **common)
    elif name == "hyperband":
        # hyperband_iterations is left unbounded: max_trials is the cap
        oracle = HyperbandOracle(max_epochs=epochs, factor=3, hyperband_iterations=10**6,
                                 max_trials=max_trials, **common)
        tuner_class = HyperbandTuner
    elif name == "bayesian":
        # keras-tuner's default (3 per dimension, counting every per-block copy)
        # would make a small search purely random
        searched = sum(p.searched for p in space.params.values())
        oracle = BayesianOracle(max_trials=max_trials,
                                num_initial_points=max(3, min(2 * searched, max_trials // 2)),
                                **common)
    elif name == "grid":
        oracle = GridOracle(max_trials=max_trials, **common)
    else:
        oracle = RandomOracle(max_trials=max_trials, **common)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # keras-tuner prints "Reloading Tuner ..."
        tuner = tuner_class(oracle, hypermodel, deadline=deadline, distributed=distributed,
                            directory=str(directory), project_name=project_name,
                            overwrite=overwrite)
    for line in buffer.getvalue().splitlines():
        logger.debug("keras-tuner: %s", line)
    return tuner
