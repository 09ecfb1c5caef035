"""Successive halving: rungs, seeds, promotion, skipping by the cost model, the budget split.

The oracle is driven directly (keras-tuner's `create_trial` / `end_trial`, no
training), with a cost model whose predictions the test controls.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kerascnn.analysis import analyze
from kerascnn.search_space import SearchSpace
from kerascnn.tuning.budget import Budget
from kerascnn.tuning.halving import (Rung, SuccessiveHalvingOracle, default_rungs,
                                     seed_candidates)

SPACE = dict(conv_blocks=(1, 2), convs_per_block=1, filters=[8, 16], dense_layers=0,
             batch_norm=[True, False], dropout=[0.0, 0.5], learning_rate=(1e-3, 1e-2))


class FakeCost:
    """Seconds = params / per_second * images * epochs / 1000; records what it saw."""

    def __init__(self, per_second: float = 1e4):
        self.per_second = per_second
        self.observed = []

    def predict(self, analysis, images, epochs=1, *, validation_images=0.0):
        return analysis.total_params / self.per_second * images * epochs / 1000

    def observe(self, analysis, images, epochs, seconds, *, validation_images=0.0):
        self.observed.append((analysis.total_params, images, epochs, seconds))


def _oracle(tmp_path, space, cost, *, deadline=None, rungs=(Rung(0.25, 1), Rung(0.5, 2),
                                                           Rung(1.0, 3)), seeds=()):
    oracle = SuccessiveHalvingOracle(
        rungs=rungs, cost=cost, train_images=lambda f: int(1000 * f), validation_images=100,
        seeds=seeds, space=space, deadline=deadline, objective="val_accuracy",
        max_trials=None, seed=1)
    oracle._set_project_dir(str(tmp_path), "p")
    oracle.verbose = 0
    hp = oracle.get_space()
    space.declare(hp)
    oracle.update_space(hp)
    return oracle


def _finish(oracle, trial, score, seconds=1.0):
    oracle.update_trial(trial.trial_id, {"val_accuracy": score, "seconds": seconds,
                                         "epochs_run": trial.hyperparameters.values[
                                             "tuner/epochs"]})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_default_rungs_double_the_data_then_the_epochs():
    assert [(r.fraction, r.epochs) for r in default_rungs(54_000, 8)] == [
        (1 / 8, 1), (1 / 4, 2), (1 / 2, 3), (1.0, 4)]
    # 5,400 images: 1/4 would be 11 batches, so the first rung takes half, for 2 epochs
    assert [(r.fraction, r.epochs) for r in default_rungs(5_400, 8)] == [
        (0.5, 2), (1.0, 3), (1.0, 6)]
    assert [(r.fraction, r.epochs) for r in default_rungs(160, 1)] == [(0.5, 1), (1.0, 1)]
    assert default_rungs(54_000, 8)[0].label() == "1/8 x 1"


def test_seeds_are_the_recipe_adapted_to_the_input():
    # 28x28 with padding searched: the keras.io convnet as it is ('valid'), then with BN
    space = SearchSpace((28, 28, 1), 10, padding=["same", "valid"], dropout=[0.0, 0.5],
                        batch_norm=[False, True], filters=[16, 32, 64])
    bn, plain, vgg = seed_candidates(space)  # batch norm first
    assert plain["padding"] == "valid" and plain["conv_blocks"] == 2
    assert plain["filters"] == 32 and plain["dropout"] == 0.5 and plain["batch_norm"] is False
    assert bn["batch_norm"] is True and bn["padding"] == "valid"
    spec = space.spec(space.values_from(plain))
    assert spec.filters == (32, 64) and spec.dense_units == ()
    # the VGG-style net: two blocks of two convolutions, batch norm
    assert (vgg["convs_per_block"], vgg["conv_blocks"], vgg["batch_norm"]) == (2, 2, True)
    assert vgg["padding"] == "same" and vgg["dropout"] == 0.5
    # the default space has batch norm in every trial: the plain convnet becomes the
    # batch-norm one, which is not tried twice
    default = SearchSpace((28, 28, 1), 10)
    seeds = seed_candidates(default)
    assert [s["convs_per_block"] for s in seeds] == [1, 2]
    assert all(default.spec(default.values_from(s)).batch_norm for s in seeds)
    # 8x8 digits: 'valid' leaves no room for two blocks, 'same' does
    small = SearchSpace((8, 8, 1), 10, padding=["valid", "same"], conv_blocks=(1, 3))
    seeds = seed_candidates(small)
    assert seeds and all(s["padding"] == "same" for s in seeds)
    assert all(small.check(small.values_from(s)) is None for s in seeds)
    # values outside the space come as near as it allows
    narrow = SearchSpace((28, 28, 1), 10, filters=[8, 16], dropout=[0.0, 0.25])
    assert seed_candidates(narrow)[1]["filters"] == 16
    assert seed_candidates(narrow)[1]["dropout"] == 0.25


def test_best_third_is_promoted_with_its_fidelity_in_the_hyperparameters(tmp_path):
    space = SearchSpace((28, 28, 1), 10, **SPACE)
    seeds = seed_candidates(space)
    oracle = _oracle(tmp_path, space, FakeCost(), seeds=seeds)
    # the seeds come first, at the last rung (no deadline: it fits)
    assert len(seeds) == 2
    for seed in seeds:
        trial = oracle.create_trial(f"s{len(oracle.trials)}")
        v = trial.hyperparameters.values
        assert {k: v[k] for k in seed} == seed
        assert (v["tuner/rung"], v["tuner/fraction"], v["tuner/epochs"]) == (2, 1.0, 3)
        _finish(oracle, trial, 0.3)
    first = [oracle.create_trial(f"w{i}") for i in range(6)]
    values = [t.hyperparameters.values for t in first]
    assert all(v["tuner/rung"] == 0 and v["tuner/fraction"] == 0.25 and v["tuner/epochs"] == 1
               for v in values)
    # six distinct candidates, none a seed again, each valid
    hashes = {oracle._compute_values_hash(v) for v in values}
    assert len(hashes) == 6 and not hashes & {oracle._compute_values_hash(s) for s in seeds}
    assert all(space.check(space.values_from(v)) is None for v in values)
    scores = [0.5, 0.9, 0.6, 0.8, 0.7, 0.4]
    for trial, score in zip(first, scores):
        _finish(oracle, trial, score)
    # the best third of rung 0 (two of six: 0.9 and 0.8) go up, best first
    promoted = [oracle.create_trial(f"v{i}") for i in range(2)]
    parents = [t.hyperparameters.values["tuner/trial_id"] for t in promoted]
    assert parents == [first[1].trial_id, first[3].trial_id]
    for trial, parent in zip(promoted, (first[1], first[3])):
        v = trial.hyperparameters.values
        assert (v["tuner/rung"], v["tuner/fraction"], v["tuner/epochs"]) == (1, 0.5, 2)
        assert {k: x for k, x in v.items() if not k.startswith("tuner/")} == {
            k: x for k, x in parent.hyperparameters.values.items() if not k.startswith("tuner/")}
        assert v["tuner/predicted_seconds"] == pytest.approx(
            analyze(space.spec(space.values_from(v))).total_params / 1e4 * 500 * 2 / 1000,
            abs=0.01)
    # nothing else qualifies yet: a new candidate starts at rung 0
    assert oracle.create_trial("u").hyperparameters.values["tuner/rung"] == 0
    # the measured seconds of finished trials calibrate the cost model
    assert len(oracle.cost.observed) == 8
    assert sorted({o[1] for o in oracle.cost.observed}) == [250, 1000]


def test_a_seed_trains_at_the_highest_rung_that_takes_a_quarter_of_the_time_left(tmp_path):
    space = SearchSpace((28, 28, 1), 10, **SPACE)
    seeds = seed_candidates(space)
    params = analyze(space.spec(space.values_from(seeds[0]))).total_params
    # 1 s per 1,000 images per ~params parameters: rung 0 = 0.25 s, rung 1 = 1 s, rung 2 = 3 s
    oracle = _oracle(tmp_path, space, FakeCost(per_second=params), seeds=seeds,
                     deadline=time.time() + 6)  # a quarter: 1.5 s, so rung 1
    v = oracle.create_trial("s0").hyperparameters.values
    assert v["tuner/rung"] == 1 and v["tuner/predicted_seconds"] == pytest.approx(1.0, abs=0.01)
    # no rung above the first is that short: the seed is screened like any candidate
    oracle = _oracle(tmp_path / "b", space, FakeCost(per_second=params), seeds=seeds,
                     deadline=time.time() + 2)
    assert oracle.create_trial("s0").hyperparameters.values["tuner/rung"] == 0


def test_candidates_that_cannot_finish_in_time_are_skipped(tmp_path):
    space = SearchSpace((28, 28, 1), 10, **SPACE)
    # 8,000-31,000 parameters: 8-31 s predicted for the first rung's 250 images
    cost = FakeCost(per_second=250.0)
    oracle = _oracle(tmp_path, space, cost, deadline=time.time() + 3600)
    # the first trial always runs, whatever its prediction
    _finish(oracle, oracle.create_trial("w0"), 0.5)
    # 20 seconds left: only candidates predicted to fit are handed out
    oracle.deadline = time.time() + 20
    handed = []
    for i in range(8):
        trial = oracle.create_trial(f"w{i + 1}")
        if trial.status != "RUNNING":
            break
        handed.append(trial)
        _finish(oracle, trial, 0.1)  # never promoted past what fits either
    assert oracle.skipped > 0
    assert all(t.hyperparameters.values["tuner/predicted_seconds"] <= 20 for t in handed)
    # no time at all: the search stops (a completed trial exists)
    oracle.deadline = time.time() - 1
    assert oracle.create_trial("late").status == "STOPPED"


def test_promotions_that_cannot_finish_are_skipped_and_the_search_stops(tmp_path):
    space = SearchSpace((28, 28, 1), 10, **SPACE)
    oracle = _oracle(tmp_path, space, FakeCost(per_second=10.0), deadline=time.time() + 3600,
                     rungs=(Rung(0.001, 1), Rung(1.0, 50)))
    trials = [oracle.create_trial(f"w{i}") for i in range(3)]
    for trial, score in zip(trials, (0.3, 0.2, 0.1)):
        _finish(oracle, trial, score)
    # rung 1 takes far longer than the minute left: the promotion is skipped and
    # a new first-rung candidate (a second at most) uses the time instead
    oracle.deadline = time.time() + 60
    new = oracle.create_trial("n")
    assert new.status == "RUNNING" and new.hyperparameters.values["tuner/rung"] == 0
    assert oracle.skipped == 1
    _finish(oracle, new, 0.05)
    # nothing fits any more: the search stops
    oracle.deadline = time.time() + 0.01
    assert oracle.create_trial("p").status == "STOPPED"


def test_budget_phases():
    budget = Budget(600.0, started=1000.0)
    assert budget.search_end == 1300.0  # half for the search
    assert budget.end == 1600.0 and budget.reserve == 18.0  # 3% for testing and writing
    assert budget.final_end == 1582.0
    assert budget.progress("search", 1000.0, budget.search_end, now=1100.0) == \
        "search 1:40 of 5:00"
    # a resumed search: what an earlier run spent counts
    resumed = Budget(600.0, started=5000.0, spent_before=400.0)
    assert resumed.search_end == 4900.0 and resumed.end == 5200.0
    assert resumed.left(now=5100.0) == 100.0 and resumed.left(resumed.search_end,
                                                              now=5100.0) == 0.0
    assert Budget(60.0, started=0.0).reserve == 4.0  # at least 4 s


def test_subsets_are_stratified_nested_and_made_once(tiny_bundle):
    from kerascnn.tuning.fidelity import Subsets

    subsets = Subsets(tiny_bundle, seed=0)
    _, labels = tiny_bundle.arrays("train")
    quarter, half = subsets.indices(0.25), subsets.indices(0.5)
    assert set(quarter) < set(half)  # nested: a promotion sees more of the same images
    assert subsets.size(0.25) == len(quarter) and subsets.size(1.0) == tiny_bundle.num_train
    counts = np.bincount(labels[half], minlength=tiny_bundle.num_classes)
    share = np.bincount(labels, minlength=tiny_bundle.num_classes) / len(labels)
    assert np.allclose(counts / counts.sum(), share, atol=0.1)  # every class keeps its share
    assert subsets.dataset(0.5) is subsets.dataset(0.5)  # made once, reused by every trial
    assert subsets.dataset(1.0) is tiny_bundle.train
    seen = sum(int(y.shape[0]) for _, y in subsets.dataset(0.5))
    assert seen == len(half)
    assert subsets.steps_per_epoch(0.5) == -(-len(half) // tiny_bundle.batch_size)


def test_a_repeated_end_of_trial_is_recorded_once(tmp_path):
    # a worker whose report reached a chief killed before it answered reports again
    space = SearchSpace((28, 28, 1), 10, **SPACE)
    oracle = _oracle(tmp_path, space, FakeCost())
    trial = oracle.create_trial("w1")
    _finish(oracle, trial, 0.5)
    again = oracle.get_trial(trial.trial_id)
    again.status = "COMPLETED"
    oracle.end_trial(again)
    assert oracle.end_order == [trial.trial_id]
