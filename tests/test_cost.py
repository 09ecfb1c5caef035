"""The cost model of the search: calibration, monotonicity, state, the probe."""

from __future__ import annotations

import json

import pytest

from kerascnn.analysis import analyze
from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec
from kerascnn.tuning.cost import PRIOR, TERMS, CostModel, features, probe


def _analysis(**fields):
    return analyze(CNNSpec(input_shape=(28, 28, 1), num_classes=10, **fields))


ANALYSES = [_analysis(conv_blocks=b, convs_per_block=c, filters=f, batch_norm=bn,
                      dense_units=d)
            for b in (1, 2, 3) for c in (1, 2) for f in (8, 32) for bn in (False, True)
            for d in ((), (64,))]


def _true_seconds(coefficients, analysis, images, epochs, validation_images=0.0):
    f = features(analysis, images, epochs, validation_images=validation_images)
    return sum(coefficients[k] * v for k, v in zip(TERMS, f))


def test_calibration_recovers_a_known_linear_relation():
    # a machine three times slower than the prior, with a costlier tracing step
    # and no per-image overhead at all
    truth = {"macs": 5e-10, "activations": 2e-10, "params_per_batch": 1e-10, "images": 0.0,
             "epochs": 0.3, "trial": 4.0}
    exact, default = CostModel(ridge=0.0), CostModel()
    for i, analysis in enumerate(ANALYSES):
        images, epochs = (600, 1) if i % 3 == 0 else ((2400, 2) if i % 3 == 1 else (5400, 3))
        for model in (exact, default):
            model.observe(analysis, images, epochs,
                          _true_seconds(truth, analysis, images, epochs))
    for name, value in truth.items():
        assert exact.coefficients[name] == pytest.approx(value, rel=1e-6, abs=1e-15)
    # the default fit is pulled toward the prior, lightly: within a few percent
    assert max(abs(e) for e in default.errors()) < 0.06
    # predictions of runs neither saw: other networks, validation images
    for analysis in (_analysis(conv_blocks=2, filters=16, convs_per_block=2),
                     _analysis(conv_blocks=3, filters=48, dense_units=(128,))):
        want = _true_seconds(truth, analysis, 10_000, 4, validation_images=1000)
        assert exact.predict(analysis, 10_000, 4, validation_images=1000) == pytest.approx(want)
        assert default.predict(analysis, 10_000, 4, validation_images=1000) == pytest.approx(
            want, rel=0.12)


def test_one_observation_scales_the_prior_to_the_machine():
    analysis = _analysis(conv_blocks=2, filters=32)
    model = CostModel()
    before = model.predict(analysis, 5400, 2)
    model.observe(analysis, 5400, 2, before * 2.5)
    assert model.predict(analysis, 5400, 2) == pytest.approx(before * 2.5, rel=0.05)
    # a similar network is scaled alike, not left at the prior
    other = _analysis(conv_blocks=2, filters=24)
    assert model.predict(other, 5400, 2) == pytest.approx(
        CostModel().predict(other, 5400, 2) * 2.5, rel=0.2)


def test_prediction_is_monotone_in_macs_images_and_epochs():
    model = CostModel()
    # calibrate on noisy data first: the fit must keep every coefficient >= 0
    for i, analysis in enumerate(ANALYSES[:12]):
        noise = 1.0 + 0.3 * ((-1) ** i)
        model.observe(analysis, 1000, 1, noise * _true_seconds(PRIOR, analysis, 1000, 1))
    assert all(v >= 0 for v in model.coefficients.values())
    ordered = sorted(ANALYSES, key=lambda a: a.total_macs)
    for small, big in zip(ordered, ordered[1:]):
        if (big.total_params >= small.total_params and sum(x.activation_size for x in big.layers)
                >= sum(x.activation_size for x in small.layers)):
            assert model.predict(big, 1000, 1) >= model.predict(small, 1000, 1)
    widths = [_analysis(conv_blocks=2, filters=f) for f in (8, 16, 32, 64)]
    seconds = [model.predict(a, 1000, 1) for a in widths]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]
    a = widths[1]
    assert model.predict(a, 2000, 1) > model.predict(a, 1000, 1)
    assert model.predict(a, 1000, 3) > model.predict(a, 1000, 2)
    assert model.seconds_per_image(widths[-1]) > model.seconds_per_image(widths[0]) > 0


def test_epochs_within_inverts_predict():
    model = CostModel()
    a = _analysis(conv_blocks=2, filters=32)
    seconds = model.predict(a, 5000, 7, validation_images=500)
    assert model.epochs_within(a, 5000, seconds, validation_images=500) == pytest.approx(7)
    assert model.epochs_within(a, 5000, 0.1) == 0.0


def test_state_round_trip_through_json():
    model = CostModel(batch_size=64)
    for analysis in ANALYSES[:5]:
        model.observe(analysis, 1000, 2, 3.0 + analysis.total_macs * 1e-7, label="t")
    state = json.loads(json.dumps(model.get_state()))
    again = CostModel.from_state(state)
    assert again.get_state() == model.get_state()
    for analysis in ANALYSES[5:9]:
        assert again.predict(analysis, 3000, 2) == model.predict(analysis, 3000, 2)
    with pytest.raises(InputError, match="Not a cost-model state"):
        CostModel.from_state({"version": 99})


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="positive coefficient.*Received: prior="):
        CostModel({"macs": 1.0})
    model = CostModel()
    with pytest.raises(InputError, match="seconds must be a positive number"):
        model.observe(ANALYSES[0], 100, 1, float("nan"))
    with pytest.raises(InputError, match="images and epochs above 0"):
        model.observe(ANALYSES[0], 0, 1, 1.0)
    assert model.observations == []


def test_probe_calibrates_from_real_training():
    model = probe(CostModel(), (12, 12, 1), 3, images=256, seconds=20)
    labels = [o["label"] for o in model.observations]
    assert len(labels) == 4 and labels[0].startswith("probe")
    assert all(o["seconds"] > 0 for o in model.observations)
    # the warm runs (no tracing) are faster than the first ones, and the fit knows it
    assert model.observations[1]["seconds"] < model.observations[0]["seconds"]
    assert model.coefficients["trial"] > 0
    a = analyze(CNNSpec(input_shape=(12, 12, 1), num_classes=3, conv_blocks=2, filters=32,
                        convs_per_block=2, padding="same", dense_units=()))
    # no wall-clock comparison (the machine may be shared): the fit is usable and
    # orders the work correctly
    one, two = model.predict(a, 256, 1), model.predict(a, 512, 2)
    assert 0 < one < two < float("inf")
