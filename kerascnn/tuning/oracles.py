"""keras-tuner oracles that never hand out an invalid candidate and respect a deadline.

`KerasCNNOracle` is a mixin written once for every algorithm (it comes before
the keras-tuner oracle in each class's bases):

- **No wasted trial.** A candidate that the analysis says cannot exist (a
  feature map below 1x1) or that breaks `max_params` / `max_macs` is resampled
  instead of handed to a tuner that would fail it (three failures in a row
  would end the search). A model-based proposal (Bayesian) outside the valid
  region, or one already trained, is replaced by a valid random candidate.
- **A deadline.** After it no trial is handed out (once one has completed).
- **A report after every trial** (leaderboard, progress line), on the chief in
  a distributed search, and pruning of the weights of all but the best trials.
- **Atomic state files** (`oracle.json`, `trial.json`).

One subclass per algorithm: `RandomOracle`, `BayesianOracle`,
`HyperbandOracle`, `GridOracle`; the successive halving of
`kerascnn.tuning.halving` builds on the same mixin.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import keras_tuner
from keras_tuner.src.engine import oracle as oracle_module

from kerascnn.search_space import SearchSpace
from kerascnn.tuning.storage import prune_checkpoints, save_state

logger = logging.getLogger(__name__)

MAX_RESAMPLES = 5000


class KerasCNNOracle:
    """Mixin for keras-tuner oracles: no wasted trial, a deadline, a report per trial.

    Args:
        space: `SearchSpace`. Decides which candidates exist.
        deadline: float. A `time.time()` value after which no trial starts.
            Defaults to `None` (no deadline).
        reporter: callable(oracle, trial) run after every ended trial.
            Defaults to `None`.
        keep_checkpoints: int. Keep the weights of the best K trials only.
            Defaults to `None` (keep all).
        **kwargs: the keras-tuner oracle's own arguments.
    """

    def __init__(self, *args, space: SearchSpace, deadline: Optional[float] = None,
                 reporter: Optional[Callable] = None, keep_checkpoints: Optional[int] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.space = space
        self.deadline = deadline
        self.reporter = reporter
        self.keep_checkpoints = keep_checkpoints
        self.stopped_by_budget = False
        self.rejected = 0
        self.failed_out: Optional[str] = None  # why max_failed_trials ended the search

    # ------------------------------------------------------------ state files

    def save(self):
        save_state(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        save_state(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                   trial.get_state())

    # ------------------------------------------------------------- candidates

    def feasible(self, values) -> bool:
        """Whether the analysis accepts these values (a rejection is counted)."""
        if values is None:
            return True
        reason = self.space.check(self.space.values_from(values))
        if reason is not None:
            self.rejected += 1
            logger.debug("resampled a candidate the analysis rejects: %s", reason)
            return False
        return True

    def _random_values(self):
        for _ in range(MAX_RESAMPLES):
            values = super()._random_values()
            if values is None or self.feasible(values):
                return values
        logger.warning("No valid candidate found in %d samples; stopping the search.",
                       MAX_RESAMPLES)
        return None

    def budget_spent(self) -> bool:
        """The deadline has passed and at least one trial completed."""
        if self.deadline is None or time.time() < self.deadline:
            return False
        # never end a search without one completed trial to report
        return any(t.status == "COMPLETED" for t in self.trials.values())

    def populate_space(self, trial_id):
        if self.failed_out is not None:
            return {"status": "STOPPED", "values": None}
        if self.budget_spent():
            self.stopped_by_budget = True
            return {"status": "STOPPED", "values": None}
        response = self.propose(trial_id)
        values = response.get("values")
        if response.get("status") != "RUNNING" or values is None \
                or "tuner/trial_id" in values:  # a continuation, on purpose
            return response
        if self._duplicate(values) or not self.feasible(values):
            # a model-based proposal (Bayesian) outside the valid region, or one
            # already trained: fall back to a new valid random candidate
            fallback = self._random_values()
            if fallback is None:
                return {"status": "STOPPED", "values": None}
            response = {"status": "RUNNING", "values": fallback}
        return response

    def propose(self, trial_id) -> dict[str, Any]:
        """The algorithm's proposal (keras-tuner's `populate_space`)."""
        return super().populate_space(trial_id)

    # ---------------------------------------------------------------- results

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

    @keras_tuner.synchronized
    def end_trial(self, trial):
        running = {t.trial_id for t in self.ongoing_trials.values()}
        if trial.trial_id in self.end_order and trial.trial_id not in running:
            # a worker whose report reached a chief that was killed before it
            # answered reports again to the restarted chief: already recorded
            logger.debug("Trial %s was already ended; its repeated report is ignored.",
                         trial.trial_id)
            return
        if trial.trial_id in self._retry_queue:
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
            prune_checkpoints(self, self._project_dir, self.keep_checkpoints)


class RandomOracle(KerasCNNOracle, keras_tuner.oracles.RandomSearchOracle):
    """keras-tuner's random search over valid candidates only."""


class BayesianOracle(KerasCNNOracle, keras_tuner.oracles.BayesianOptimizationOracle):
    """keras-tuner's Bayesian optimization; invalid or repeated proposals are replaced."""


class HyperbandOracle(KerasCNNOracle, keras_tuner.oracles.HyperbandOracle):
    """keras-tuner's Hyperband (epochs per round) over valid candidates, capped by
    `max_trials` (its continuations count)."""

    def __init__(self, *args, max_trials: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_trials = max_trials


class GridOracle(KerasCNNOracle, oracle_module.Oracle):
    """Every valid combination, defaults first, each once (no invalid one is tried)."""

    def propose(self, trial_id):
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
