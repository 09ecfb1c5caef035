"""Successive halving on data x epochs, sized in predicted seconds.

`SuccessiveHalvingOracle` is a keras-tuner oracle (like keras-tuner's
`HyperbandOracle`, it puts the fidelity into each trial's hyperparameters, so
a distributed worker trains whatever rung the chief hands it):

- `tuner/rung`, `tuner/fraction` (of the training images, stratified and
  nested, `kerascnn.tuning.fidelity`), `tuner/epochs`;
- `tuner/trial_id`: for a promoted candidate, the trial it was promoted from;
- `tuner/predicted_seconds`: what the cost model predicted for the trial (the
  leaderboard shows it beside the measured seconds).

Rungs (`default_rungs`): the first trains on 1/8 of the images (1/4 below
20,000 images, more where that is under 40 batches) for one epoch, each next
one on twice the images for one more epoch, up to all the images. Promotion
is asynchronous (ASHA, Li et al. 2020): whenever a worker asks for a trial,
the best candidate of a rung that is in the top third of that rung's
finished trials, and has not been promoted yet, goes up one rung; otherwise
a new candidate starts at the first rung.

Time, not trial counts, sizes the search: the cost model
(`kerascnn.tuning.cost`, calibrated by every finished trial) predicts each
trial's seconds, and a trial that cannot finish before the search's deadline
is not handed out (`skipped`). Promotions come first; whenever none is
eligible or fits, a new candidate starts, so the search uses its whole phase
(a first-rung trial is seconds; its architecture counts even where the time
left cannot take it further).

The first candidates are `seed_candidates`: the keras.io convnet (two
convolution/pooling stages, dropout 0.5) with batch norm, then as it is, then
the VGG-style net of Keras's small-image examples (two blocks of two 3x3
convolutions, 32 then 64 filters, batch norm, dropout 0.5), each as close as
the space allows and adapted to the input by the analysis (`same` padding
where `valid` does not fit). A seed skips the screening rungs: it trains at
the highest rung that takes at most a quarter of the search's time left, so it
is compared with the finalists at their fidelity and a search does not end
below that recipe.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from keras_tuner.src.engine import oracle as oracle_module

from kerascnn.analysis import analyze
from kerascnn.search_space import SearchSpace
from kerascnn.tuning.oracles import KerasCNNOracle

logger = logging.getLogger(__name__)

FACTOR = 3  # the best 1/FACTOR of a rung go up
SEED_SHARE = 0.25  # a seed trains at the highest rung that takes at most this share of the time left
MIN_STEPS = 40  # training batches of a first-rung trial, at least (where the epochs allow)
RUNGS = 4
# fidelity keys in a trial's hyperparameter values
RUNG, FRACTION, EPOCHS, PARENT, PREDICTED = ("tuner/rung", "tuner/fraction", "tuner/epochs",
                                             "tuner/trial_id", "tuner/predicted_seconds")
_NEW_CANDIDATE_TRIES = 25


@dataclass(frozen=True)
class Rung:
    """One fidelity: a fraction of the training images, trained for some epochs."""

    fraction: float
    epochs: int

    def label(self) -> str:
        frac = "all" if self.fraction >= 1 else f"1/{round(1 / self.fraction)}"
        return f"{frac} x {self.epochs}"


def default_rungs(num_train: int, max_epochs: int, batch_size: int = 128,
                  min_steps: int = MIN_STEPS, count: int = RUNGS) -> tuple[Rung, ...]:
    """The rungs of a search, cheapest first.

    The first rung trains on 1/8 of the images for one epoch (1/4 below
    20,000 images); where that is fewer than `min_steps` batches (small data
    sets, where a trial's fixed cost would dwarf its training), it takes more
    of the images (up to half), then more epochs. Each next rung doubles the
    images until all are used, then the epochs, and adds an epoch; at most
    `count` rungs, epochs capped at `max_epochs`.
    """
    fraction, epochs = (1 / 8 if num_train >= 20_000 else 1 / 4), 1

    def steps(f: float, e: int) -> int:
        return math.ceil(f * num_train / batch_size) * e

    while steps(fraction, epochs) < min_steps and fraction < 0.5:
        fraction *= 2
    while steps(fraction, epochs) < min_steps and epochs < max_epochs:
        epochs += 1
    rungs = [Rung(fraction, min(epochs, max_epochs))]
    while len(rungs) < count:
        if fraction < 1:
            fraction = min(1.0, fraction * 2)
            epochs += 1
        else:
            epochs *= 2
        if epochs > max_epochs and rungs[-1].fraction >= 1:
            break
        rungs.append(Rung(fraction, min(epochs, max_epochs)))
    return tuple(rungs)


# The keras.io "simple MNIST convnet" (Conv 32, pool, Conv 64, pool, flatten,
# dropout 0.5, softmax) with batch norm, then as it is (where the space allows
# no batch norm), then the VGG-style net (two 3x3 convolutions per block). The
# batch-norm convnet goes first: where the budget allows a single trial, it is
# the better bet (bench/recipe_ablation.py: batch norm helps the convnet on
# digits); the VGG-style net has four times its MACs and more capacity for a
# long final training.
SEEDS: tuple[dict[str, Any], ...] = (
    {"conv_blocks": 2, "convs_per_block": 1, "filters": 32, "filters_growth": 2,
     "kernel_size": 3, "padding": "valid", "batch_norm": True, "pooling": "max",
     "pool_size": 2, "head": "flatten", "dense_layers": 0, "dropout": 0.5,
     "learning_rate": 3e-3},
    {"conv_blocks": 2, "convs_per_block": 1, "filters": 32, "filters_growth": 2,
     "kernel_size": 3, "padding": "valid", "batch_norm": False, "pooling": "max",
     "pool_size": 2, "head": "flatten", "dense_layers": 0, "dropout": 0.5,
     "learning_rate": 1e-3},
    {"conv_blocks": 2, "convs_per_block": 2, "filters": 32, "filters_growth": 2,
     "kernel_size": 3, "padding": "same", "batch_norm": True, "pooling": "max",
     "pool_size": 2, "head": "flatten", "dense_layers": 0, "dropout": 0.5,
     "learning_rate": 3e-3},
)


def _nearest(param, wanted: Any) -> Any:
    """The value of a searched entry closest to `wanted` (its default if none is close)."""
    if param.kind == "choice":
        if wanted in param.values:
            return wanted
        numbers = [v for v in param.values if isinstance(v, (int, float))
                   and not isinstance(v, bool)]
        if isinstance(wanted, (int, float)) and not isinstance(wanted, bool) and numbers:
            return min(numbers, key=lambda v: abs(v - wanted))
        return param.default
    if param.kind in ("int", "float"):
        if isinstance(wanted, bool) or not isinstance(wanted, (int, float)):
            return param.default
        value = min(max(wanted, param.min_value), param.max_value)
        if param.kind == "int":
            step = param.step or 1
            value = param.min_value + round((value - param.min_value) / step) * step
            return int(min(value, param.max_value))
        return float(value)
    return param.value


def seed_candidates(space: SearchSpace, seeds: Sequence[Mapping[str, Any]] = SEEDS
                    ) -> list[dict[str, Any]]:
    """The searched values of each seed network, as near as `space` allows.

    A seed the analysis rejects is adapted: `same` padding if `valid` does not
    fit, then fewer blocks. Seeds that cannot be adapted, or that come out
    as the same network as an earlier one (whatever their training
    settings), are left out.
    """
    out: list[dict[str, Any]] = []
    searched = {n: p for n, p in space.params.items() if p.searched}
    for seed in seeds:
        attempts = [dict(seed), {**seed, "padding": "same"}]
        attempts += [{**seed, "padding": "same", "conv_blocks": b}
                     for b in range(int(seed.get("conv_blocks", 1)) - 1, 0, -1)]
        for wanted in attempts:
            values = {n: _nearest(p, wanted[n]) for n, p in searched.items() if n in wanted}
            full = space.values_from(values)
            if space.check(full) is not None:
                continue
            chosen = {n: full[n] for n in space.hp_names(full)}
            network = space.spec(full)  # the spec has no training settings (rate, ...)
            if all(space.spec(space.values_from(o)) != network for o in out):
                out.append(chosen)
            break
    return out


class SuccessiveHalvingOracle(KerasCNNOracle, oracle_module.Oracle):
    """Asynchronous successive halving over rungs of data x epochs, within a deadline.

    Args:
        rungs: sequence of `Rung`, cheapest first.
        cost: a cost model with `predict(analysis, images, epochs,
            validation_images=...)` and `observe(analysis, images, epochs,
            seconds, validation_images=...)` (`kerascnn.tuning.cost.CostModel`).
        train_images: callable(fraction) -> int. Training images of a fraction.
        validation_images: int. Images validated after every epoch.
        seeds: list of dict. Searched values of the first candidates.
        factor: int. The best 1/factor of a rung are promoted.
            Defaults to 3.
        **kwargs: `KerasCNNOracle` and keras-tuner `Oracle` arguments
            (`space`, `deadline`, `objective`, `max_trials`, ...).
    """

    def __init__(self, *, rungs: Sequence[Rung], cost, train_images: Callable[[float], int],
                 validation_images: int, seeds: Sequence[Mapping[str, Any]] = (),
                 factor: int = FACTOR, **kwargs):
        super().__init__(**kwargs)
        self.rungs = tuple(rungs)
        self.cost = cost
        self.train_images = train_images
        self.validation_images = int(validation_images)
        self.seeds = [dict(s) for s in seeds]
        self.factor = factor
        self.skipped = 0
        self._observed: set[str] = set()

    # ------------------------------------------------------------ predictions

    def _analysis(self, values: Mapping[str, Any]):
        return analyze(self.space.spec(self.space.values_from(values)))

    def predict(self, values: Mapping[str, Any], rung: Rung) -> float:
        """Predicted seconds of a candidate trained at `rung`."""
        return float(self.cost.predict(self._analysis(values), self.train_images(rung.fraction),
                                       rung.epochs, validation_images=self.validation_images))

    def _calibrate(self) -> None:
        """Feed every finished trial's measured seconds to the cost model (once each)."""
        observe_trials(self.cost, self.trials.values(), self.space, self.train_images,
                       self.validation_images, self._observed)

    def _fits(self, seconds: float) -> bool:
        if self.deadline is None or time.time() + seconds <= self.deadline:
            return True
        # a search never ends without a result: the first trial always runs
        return not self.ongoing_trials and not any(
            t.status == "COMPLETED" for t in self.trials.values())

    # ---------------------------------------------------------------- trials

    def _values(self, values: Mapping[str, Any], index: int, predicted: float,
                parent: Optional[str] = None) -> dict[str, Any]:
        rung = self.rungs[index]
        out = {k: v for k, v in values.items() if not str(k).startswith("tuner/")}
        out.update({RUNG: index, FRACTION: rung.fraction, EPOCHS: rung.epochs,
                    PREDICTED: round(predicted, 2)})
        if parent is not None:
            out[PARENT] = parent
        return out

    def rung_trials(self, index: int) -> list:
        """Completed trials of a rung, best first."""
        done = [t for t in self.trials.values()
                if t.status == "COMPLETED" and t.score is not None
                and t.hyperparameters.values.get(RUNG) == index]
        return sorted(done, key=lambda t: t.score, reverse=self.objective.direction == "max")

    def _promotions(self):
        """(parent trial, rung index) pairs eligible now, highest rung first."""
        promoted = {t.hyperparameters.values.get(PARENT) for t in self.trials.values()}
        for index in range(len(self.rungs) - 2, -1, -1):
            ranked = self.rung_trials(index)
            for trial in ranked[:len(ranked) // self.factor]:
                if trial.trial_id not in promoted:
                    yield trial, index + 1

    def propose(self, trial_id):
        self._calibrate()
        for parent, index in self._promotions():
            predicted = self.predict(parent.hyperparameters.values, self.rungs[index])
            if self._fits(predicted):
                return {"status": "RUNNING",
                        "values": self._values(parent.hyperparameters.values, index, predicted,
                                               parent.trial_id)}
            self.skipped += 1
            logger.debug("not promoting trial %s to rung %d: %.0fs predicted, too long for "
                         "the time left", parent.trial_id, index, predicted)
        values = self._new_candidate()
        if values is not None:
            return {"status": "RUNNING", "values": values}
        if self.ongoing_trials:
            return {"status": "IDLE", "values": None}
        return {"status": "STOPPED", "values": None}

    def _new_candidate(self) -> Optional[dict[str, Any]]:
        """A seed not tried yet, else a random valid candidate that fits the time left."""
        tried = {self._compute_values_hash(t.hyperparameters.values)
                 for t in self.trials.values()}
        for seed in self.seeds:
            if self._compute_values_hash(seed) not in tried:
                index, predicted = self._seed_rung(seed)
                if self._fits(predicted):
                    return self._values(seed, index, predicted)
                self.skipped += 1
        for _ in range(_NEW_CANDIDATE_TRIES):
            values = self._random_values()
            if values is None:
                return None
            predicted = self.predict(values, self.rungs[0])
            if self._fits(predicted):
                return self._values(values, 0, predicted)
            self.skipped += 1
            logger.debug("skipped a candidate: %.0fs predicted at the first rung, too long for "
                         "the time left", predicted)
        return None

    def _seed_rung(self, values: Mapping[str, Any]) -> tuple[int, float]:
        """The rung a seed starts at, and its predicted seconds there.

        A seed is known to be good: it skips the screening of the first rungs
        and trains at the highest rung that takes at most `SEED_SHARE` of the
        search phase's time left, so that its score is comparable with the
        finalists' (a seed screened at the first rung, a few dozen steps, loses
        to smaller networks that learn faster and can be dropped, and the search
        can then end below the recipe it was seeded with). The first rung when
        none is that short.
        """
        left = None if self.deadline is None else self.deadline - time.time()
        for index in range(len(self.rungs) - 1, 0, -1):
            predicted = self.predict(values, self.rungs[index])
            if left is None or predicted <= SEED_SHARE * left:
                return index, predicted
        return 0, self.predict(values, self.rungs[0])

    def _compute_values_hash(self, values):
        # a candidate is the same network whatever rung it trains at
        return super()._compute_values_hash(
            {k: v for k, v in values.items() if not str(k).startswith("tuner/")})

    def protected_trials(self) -> set[str]:
        """Trials that may still be promoted keep their weights (`prune_checkpoints`)."""
        return set()  # a promotion trains from scratch on more data: nothing to keep

    def get_state(self):
        state = super().get_state()
        state.update(skipped=self.skipped, rejected=self.rejected)
        return state

    def set_state(self, state):
        super().set_state(state)
        self.skipped = int(state.get("skipped", 0))
        self.rejected = int(state.get("rejected", 0))


def observe_trials(cost, trials, space: SearchSpace, train_images: Callable[[float], int],
                   validation_images: int, seen: set[str]) -> None:
    """Calibrate `cost` with the measured seconds of finished trials not in `seen`.

    A trial without `tuner/fraction` (the other tuners) trained on all images.
    """
    for trial in trials:
        if trial.trial_id in seen or trial.status != "COMPLETED":
            continue
        seen.add(trial.trial_id)
        values = trial.hyperparameters.values
        seconds = _last(trial, "seconds")
        epochs = _last(trial, "epochs_run")
        if not seconds or not epochs:
            continue
        try:
            analysis = analyze(space.spec(space.values_from(values)))
            cost.observe(analysis, train_images(float(values.get(FRACTION, 1.0))), epochs,
                         seconds, validation_images=validation_images)
        except ValueError as e:  # a measurement the model refuses: keep predicting
            logger.debug("cost model: trial %s not used (%s)", trial.trial_id, e)


def _last(trial, name: str) -> Optional[float]:
    try:
        if trial.metrics.exists(name):
            value = trial.metrics.get_last_value(name)
            return None if value is None or not math.isfinite(value) else float(value)
    except (KeyError, ValueError, TypeError):
        pass
    return None
