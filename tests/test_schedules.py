"""kerascnn.schedules: the four learning-rate schedules, their names, and their use in fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerascnn import schedules
from kerascnn.checks import InputError
from kerascnn.training import fit_model


@pytest.mark.parametrize("name, expected", [
    ("constant", "constant"), ("Cosine", "cosine"), ("one-cycle", "one-cycle"),
    ("one_cycle", "one-cycle"), ("onecycle", "one-cycle"), (" plateau ", "plateau"),
])
def test_validate_schedule_normalises_names(name, expected):
    assert schedules.validate_schedule(name) == expected


def test_every_schedule_name_is_accepted_and_listed():
    for name in schedules.SCHEDULES:
        lr, callbacks = schedules.make_schedule(name, 0.01, epochs=2, steps_per_epoch=3)
        assert schedules.learning_rate_at(lr, 0) > 0
        assert isinstance(callbacks, list)


def test_constant_schedule_is_a_float_without_callbacks():
    lr, callbacks = schedules.make_schedule("constant", 0.01, epochs=3, steps_per_epoch=10)
    assert lr == 0.01 and callbacks == []


def test_cosine_schedule_decays_to_zero():
    lr, _ = schedules.make_schedule("cosine", 0.1, epochs=5, steps_per_epoch=20)
    values = [schedules.learning_rate_at(lr, s) for s in (0, 50, 100)]
    assert values[0] == pytest.approx(0.1)
    assert values[1] == pytest.approx(0.05, rel=1e-3)
    assert values[2] == pytest.approx(0.0, abs=1e-7)


def test_one_cycle_rises_to_the_peak_then_anneals():
    lr, _ = schedules.make_schedule("one_cycle", 0.1, epochs=10, steps_per_epoch=10)
    values = np.array([schedules.learning_rate_at(lr, s) for s in range(0, 101)])
    peak = int(np.argmax(values))
    assert peak == 30  # 30% warm-up
    assert values[0] == pytest.approx(0.1 / 25)
    assert values[peak] == pytest.approx(0.1)
    assert np.all(np.diff(values[:peak + 1]) > 0) and np.all(np.diff(values[peak:]) <= 0)
    assert values[-1] < 1e-5


def test_plateau_schedule_adds_reduce_lr_on_plateau():
    lr, callbacks = schedules.make_schedule("plateau", 0.01, epochs=3, steps_per_epoch=5,
                                            monitor="loss", plateau_patience=3)
    assert lr == 0.01
    (cb,) = callbacks
    assert isinstance(cb, keras.callbacks.ReduceLROnPlateau)
    assert cb.monitor == "loss" and cb.patience == 3 and cb.factor == 0.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="step"), "Unknown learning-rate schedule.*Received: schedule='step'"),
    (dict(learning_rate=0.0), "learning_rate must be a positive number. Received: learning_rate=0.0"),
    (dict(learning_rate=float("nan")), "learning_rate must be a positive number"),
    (dict(epochs=0), "at least one epoch"),
    (dict(steps_per_epoch=0), "at least one epoch"),
])
def test_make_schedule_rejects_bad_input(kwargs, match):
    args = {**dict(name="cosine", learning_rate=0.1, epochs=2, steps_per_epoch=3), **kwargs}
    with pytest.raises(InputError, match=match):
        schedules.make_schedule(args.pop("name"), args.pop("learning_rate"), **args)


def test_learning_rate_at_a_float_is_the_float():
    assert schedules.learning_rate_at(0.25, 10_000) == 0.25


def test_one_cycle_ends_at_peak_over_div_times_final_div():
    total = 40
    lr, _ = schedules.make_schedule("one-cycle", 1.0, epochs=4, steps_per_epoch=10)
    end = schedules.learning_rate_at(lr, total)
    expected = 1.0 / (schedules.ONE_CYCLE_DIV * schedules.ONE_CYCLE_FINAL_DIV)
    assert end == pytest.approx(expected, rel=1e-3)


def test_cosine_schedule_drives_the_optimizer_step_by_step():
    """The schedule object given to an optimizer is what `fit` uses, step by step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 steps per epoch
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    result = fit_model(model, data, epochs=2, schedule="cosine", learning_rate=0.1)
    # the rate logged at the end of each epoch is the schedule at that step
    lr, _ = schedules.make_schedule("cosine", 0.1, epochs=2, steps_per_epoch=4)
    assert [r["learning_rate"] for r in result.history] == pytest.approx(
        [schedules.learning_rate_at(lr, 4), schedules.learning_rate_at(lr, 8)], abs=1e-7)
    assert result.history[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-7)
