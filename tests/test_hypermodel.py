"""CNNHyperModel and SearchSpace: parsing, defaults, conditional scopes, validity."""

from __future__ import annotations

import pytest

from kerascnn.checks import InputError
from kerascnn.search_space import DEFAULT_SPACE, SearchSpace, parse_param

VALID_PADDING_SPACE = dict(conv_blocks=(1, 6), convs_per_block=(1, 3), padding="valid")


# ---------------------------------------------------------------------------
# parsing and defaults (pure Python, no Keras)
# ---------------------------------------------------------------------------


def test_defaults_are_pinned():
    # `None` means these; changing one is a user-visible change (docs/tuning.md):
    # a fast recipe inside every trial (batch norm searched and first, label
    # smoothing, a cosine decay to zero, no flip, no shift: bench/recipe_ablation.py),
    # the architecture searched
    assert SearchSpace((28, 28, 1), 10).to_config() == {
        "conv_blocks": {"min": 1, "max": 3},
        "convs_per_block": {"min": 1, "max": 2},
        "filters": [16, 32, 64],
        "filters_growth": 2.0,
        "kernel_size": 3,
        "strides": 1,
        "padding": "same",
        "dilation_rate": 1,
        "activation": "relu",
        "batch_norm": True,
        "spatial_dropout": 0.0,
        "pooling": "max",
        "pool_size": 2,
        "block_type": "plain",
        "head": "flatten",
        "dense_layers": {"min": 0, "max": 1},
        "dense_units": [64, 128],
        "dropout": [0.25, 0.5],
        "learning_rate": {"min": 0.001, "max": 0.01, "sampling": "log"},
        "optimizer": "adam",
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "augmentation_strength": 0.0,
    }
    assert SearchSpace((28, 28, 1), 10, conv_blocks=None).to_config()["conv_blocks"] == \
        {"min": 1, "max": 3}
    # no augmentation by default; a strength turns on a shift by a tenth of the image
    assert SearchSpace((28, 28, 1), 10).augmentation == ()
    assert SearchSpace((28, 28, 1), 10, augmentation_strength=1.0).augmentation == (
        {"name": "translation", "factor": 0.1},)


@pytest.mark.parametrize("raw, kind, config", [
    (3, "fixed", 3),
    ([3, 5], "choice", [3, 5]),
    ([5], "fixed", 5),
    ((1, 4), "int", {"min": 1, "max": 4}),
    ({"min": 1, "max": 4}, "int", {"min": 1, "max": 4}),
    ({"min": 2, "max": 8, "step": 2}, "int", {"min": 2, "max": 8, "step": 2}),
    ({"values": [3, 7]}, "choice", [3, 7]),
    ({"value": 7}, "fixed", 7),
    ((2, 2), "fixed", 2),
])
def test_fixed_choices_and_ranges(raw, kind, config):
    param = parse_param("kernel_size", raw)
    assert param.kind == kind
    assert param.to_config() == config
    # the YAML form parses back to the same entry
    assert parse_param("kernel_size", param.to_config()) == param


def test_float_ranges_and_log_learning_rate():
    assert parse_param("learning_rate", (1e-4, 1e-2)).sampling == "log"
    assert parse_param("dropout", (0.0, 0.5)).kind == "float"
    assert parse_param("dropout", {"min": 0.0, "max": 0.5, "step": 0.25}).all_values() == \
        [0.0, 0.25, 0.5]
    assert parse_param("batch_norm", [False, True]).kind == "choice"


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": (1, 3)}, r"Unrecognized search-space arguments.*depth"),
    ({"conv_blocks": (4, 2)}, r"min > max.*Received: conv_blocks=\(4, 2\)"),
    ({"conv_blocks": (0, 2)}, r"conv_blocks values must be >= 1"),
    ({"kernel_size": (1, 2, 3)}, r"A range is a \(min, max\) tuple"),
    ({"padding": "full"}, r"Unknown padding 'full'; allowed: same, valid"),
    ({"padding": ("same", "valid")}, r"padding takes a value or a list"),
    ({"head": []}, r"at least one value"),
    ({"filters": 3.5}, r"filters takes integers"),
    ({"dropout": (0.0, 1.0)}, r"dropout must be in \[0.0, 1.0\)"),
    ({"learning_rate": 0}, r"learning_rate must be in"),
    ({"batch_norm": "yes"}, r"batch_norm takes True or False"),
    ({"optimizer": "adamm"}, r"Unknown optimizer"),
    ({"conv_blocks": {"min": 1}}, r"takes min and max"),
    ({"learning_rate": {"min": 0.001, "max": 0.1, "sampling": "cubic"}},
     r"sampling is 'linear' or 'log'"),
    ({"max_params": 0}, r"max_params must be a positive integer"),
    ({"per_block_filters": "yes"}, r"per_block_filters takes True or False"),
    ({"augmentation": ["blur"]}, r"Unknown augmentation 'blur'"),
])
def test_bad_space_is_refused(kwargs, match):
    # augmentation entries are checked by kerascnn.augment (InputError there once converted)
    error = ValueError if "augmentation" in kwargs else InputError
    with pytest.raises(error, match=match):
        SearchSpace((28, 28, 1), 10, **kwargs)


def test_spec_from_values_uses_spec_field_names():
    space = SearchSpace((28, 28, 1), 10)
    values = {"conv_blocks": 3, "convs_per_block": 2, "filters": 16, "filters_growth": 2.0,
              "kernel_size": 3, "strides": 1, "padding": "same", "dilation_rate": 1,
              "activation": "relu", "batch_norm": True, "spatial_dropout": 0.0,
              "pooling": "max", "pool_size": 2, "block_type": "plain", "head": "gap",
              "dense_layers": 2, "dense_units_1": 128, "dense_units_2": 64, "dropout": 0.25,
              "learning_rate": 1e-3, "optimizer": "adam", "augmentation_strength": 0.0}
    spec = space.spec(values)
    assert spec.conv_blocks == 3 and spec.convs_per_block == 2
    assert spec.filters == (16, 32, 64)
    assert spec.dense_units == (128, 64)
    assert spec.head == "gap" and spec.batch_norm is True and spec.dropout == 0.25


# ---------------------------------------------------------------------------
# keras-tuner: conditional scopes and validity by the analysis
# ---------------------------------------------------------------------------


def _hp(values=None):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.values = dict(values or {})
    return hp


def test_per_block_hyperparameters_live_in_conditional_scopes():
    from kerascnn.hypermodel import CNNHyperModel

    hm = CNNHyperModel((28, 28, 1), 10, per_block_filters=True, conv_blocks=(1, 3),
                       dense_layers=(0, 2))
    hp = _hp({"conv_blocks": 2, "dense_layers": 0})
    hm.declare_hyperparameters(hp)
    names = [p.name for p in hp.space]
    # every per-block / per-layer entry is declared (so the oracle knows them) ...
    assert {"filters_1", "filters_2", "filters_3", "dense_units_1", "dense_units_2"} <= set(names)
    assert "filters_growth" not in names
    # ... but only the active ones have values
    assert "filters_2" in hp.values and "filters_3" not in hp.values
    assert not any(k.startswith("dense_units_") for k in hp.values)
    by_name = {p.name: p for p in hp.space}
    assert by_name["filters_3"].conditions[0].values == [3]
    assert by_name["dense_units_1"].conditions[0].values == [1, 2]
    # fixed entries are not hyperparameters at all
    assert "padding" not in names and "optimizer" not in names
    spec = hm.spec(hp)
    assert spec.conv_blocks == 2 and len(spec.filters) == 2 and spec.dense_units == ()


def test_stock_oracle_would_waste_trials_ours_never_does():
    """The valid-padding space at 28x28: many sampled depths cannot exist."""
    import keras_tuner

    from kerascnn.hypermodel import CNNHyperModel
    from kerascnn.tuning import make_tuner

    hm = CNNHyperModel((28, 28, 1), 10, **VALID_PADDING_SPACE)
    space = hm.space
    shapes = list(space.enumerate(structural=True))
    valid = [v for v in shapes if space.check(v) is None]
    assert 0 < len(valid) < len(shapes) / 2  # most depth/N/kernel combinations are impossible

    stock = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", seed=1)
    hp = stock.get_space()
    hm.declare_hyperparameters(hp)
    stock.update_space(hp)
    stock_samples = [stock._random_values() for _ in range(100)]
    assert sum(space.check(space.values_from(v)) is not None for v in stock_samples) > 30

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tuner = make_tuner("random", hm, max_trials=12, directory=tmp, project_name="p", seed=1)
        samples = [tuner.oracle._random_values() for _ in range(200)]
    assert all(space.check(space.values_from(v)) is None for v in samples)
    assert max(v["conv_blocks"] for v in samples) >= 3
    assert tuner.oracle.rejected > 0


def test_constraints_are_resampled_and_impossible_ones_refused():
    from kerascnn.analysis import analyze
    from kerascnn.hypermodel import CNNHyperModel

    hm = CNNHyperModel((28, 28, 1), 10, max_params=60_000)
    space = hm.space
    space.assert_feasible()
    ok = [v for v in space.enumerate(structural=True) if space.check(v) is None]
    assert ok and all(analyze(space.spec(v)).total_params <= 60_000 for v in ok)
    assert "exceed max_params" in next(
        space.check(v) for v in space.enumerate(structural=True) if space.check(v))

    with pytest.raises(InputError, match=r"No architecture in the search space meets "
                                         r"max_params=100: the smallest valid one has"):
        SearchSpace((28, 28, 1), 10, max_params=100).assert_feasible()
    with pytest.raises(InputError, match=r"No architecture .* fits input_shape=\(8, 8, 1\)"):
        SearchSpace((8, 8, 1), 10, conv_blocks=(5, 6), padding="valid").assert_feasible()


def test_grid_enumerates_only_finite_spaces():
    space = SearchSpace((28, 28, 1), 10)
    with pytest.raises(InputError, match=r"Grid search needs a finite set of values, but "
                                         r"learning_rate is a continuous range"):
        next(iter(space.enumerate()))
    small = SearchSpace((28, 28, 1), 10, conv_blocks=(1, 2), convs_per_block=1, filters=8,
                        kernel_size=[3, 5], batch_norm=False, head="flatten", dense_layers=(0, 1),
                        dense_units=[16, 32], dropout=0.0, learning_rate=1e-3)
    combos = list(small.enumerate())
    # 2 depths x 2 kernels x (no dense + 1 dense layer of 2 widths)
    assert len(combos) == 2 * 2 * 3
    assert combos[0]["conv_blocks"] == 1 and combos[0]["kernel_size"] == 3  # defaults first


def test_build_matches_the_analysis():
    import keras

    from kerascnn.analysis import analyze
    from kerascnn.hypermodel import CNNHyperModel

    hm = CNNHyperModel((28, 28, 1), 10, preprocessing=lambda: [keras.layers.Rescaling(1 / 255)],
                       schedule="constant", **VALID_PADDING_SPACE)
    hp = _hp({"conv_blocks": 2, "convs_per_block": 2, "kernel_size": 3, "dense_layers": 1,
              "dense_units_1": 64})
    model = hm.build(hp)
    spec = hm.spec(hp)
    assert model.count_params() == analyze(spec).total_params
    assert model.get_layer("block2_conv2") is not None
    assert model.optimizer is not None  # compiled with the searched learning rate
    assert abs(float(model.optimizer.learning_rate) - hp.values["learning_rate"]) < 1e-9
    # label smoothing 0.1 (the default): a confident right answer still costs a little
    y_true, y_pred = keras.ops.convert_to_tensor([1]), keras.ops.convert_to_tensor(
        [[0.0] + [1.0] + [0.0] * 8])
    assert float(model.loss(y_true, y_pred)) > 0.1

    # one-cycle over the trial's steps: it starts at a 25th of the peak
    cycled = CNNHyperModel((28, 28, 1), 10, steps_per_epoch=10, epochs=3, schedule="one-cycle",
                           **VALID_PADDING_SPACE).build(_hp({"conv_blocks": 1}))
    rate = cycled.optimizer.learning_rate
    assert float(rate) == pytest.approx(cycled_peak(cycled) / 25, rel=1e-3)
    # the default, a cosine decay: the peak at once, zero at the trial's last step
    # (10 steps per epoch x 3 epochs)
    decayed = CNNHyperModel((28, 28, 1), 10, steps_per_epoch=10, epochs=3,
                            **VALID_PADDING_SPACE).build(_hp({"conv_blocks": 1}))
    schedule = decayed.optimizer._learning_rate
    peak = decayed_peak = float(schedule(0))
    assert decayed_peak > 0 and float(schedule(30)) == pytest.approx(0.0, abs=1e-9 + peak * 1e-6)

    import keras_tuner

    bad = _hp({"conv_blocks": 6, "convs_per_block": 3})
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=r"rejected by the analysis"):
        hm.build(bad)


def test_the_final_training_adds_a_mild_shift_unless_the_space_chose_augmentation():
    import dataclasses

    import keras

    from kerascnn.tuning.final import FINAL_AUGMENTATION
    from kerascnn.tuning.hypermodel import CNNHyperModel
    from kerascnn.tuning.search import final_spec

    assert FINAL_AUGMENTATION == ({"name": "translation", "factor": 0.05},)
    values = {"conv_blocks": 2, "convs_per_block": 1, "filters": 16, "dense_layers": 0,
              "dropout": 0.5, "learning_rate": 3e-3}
    default = SearchSpace((28, 28, 1), 10)
    assert not default.augmentation_chosen
    spec = final_spec(default, default.values_from(values))
    assert spec.augmentation == FINAL_AUGMENTATION
    assert dataclasses.replace(spec, augmentation=()) == default.spec(default.values_from(values))
    # the model of that spec shifts while training, and only then
    model = CNNHyperModel((28, 28, 1), 10, seed=0).network(spec)
    assert any(isinstance(layer, keras.layers.RandomTranslation) for layer in model.layers)
    # a strength in the space, even 0, or a list of entries: the trials' augmentation stays
    for chosen in (SearchSpace((28, 28, 1), 10, augmentation_strength=0.0),
                   SearchSpace((28, 28, 1), 10, augmentation_strength=1.0),
                   SearchSpace((28, 28, 1), 10, augmentation=[{"name": "flip"}],
                               augmentation_strength=[0.0, 1.0])):
        assert chosen.augmentation_chosen
        for strength in chosen.params["augmentation_strength"].all_values():
            trial_values = chosen.values_from({**values, "augmentation_strength": strength})
            assert final_spec(chosen, trial_values) == chosen.spec(trial_values)


def cycled_peak(model) -> float:
    return float(model.optimizer._learning_rate.warmup_target)


def test_hypermodel_rejects_bad_preprocessing():
    from kerascnn.hypermodel import CNNHyperModel

    with pytest.raises(InputError, match=r"preprocessing must be a function"):
        CNNHyperModel((28, 28, 1), 10, preprocessing=[1, 2])


def test_default_space_names_are_spec_fields_or_documented_extras():
    from kerascnn.spec import field_names

    extras = {"filters_growth", "dense_layers", "learning_rate", "optimizer",
              "label_smoothing", "schedule", "augmentation_strength"}
    assert set(DEFAULT_SPACE) - extras <= set(field_names())
