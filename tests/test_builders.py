import numpy as np
import pytest

from kerascnn import analyze, build_cnn
from kerascnn.builders import check_against_keras
from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec


def test_layer_names_and_shapes():
    model = build_cnn(input_shape=(28, 28, 1), num_classes=10)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["input", "block1_conv1", "block1_conv2"]
    assert "block1_pool" in names and "fc1" in names and names[-1] == "predictions"
    assert model.get_layer("block2_pool").output.shape == (None, 7, 7, 64)
    assert model.output.shape == (None, 10)
    out = model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_logits_and_keyword_override():
    model = build_cnn("simple", classifier_activation=None, num_classes=3)
    assert model.output.shape == (None, 3)
    assert model.get_layer("predictions").activation.__name__ == "linear"


def test_too_deep_is_refused_before_keras():
    with pytest.raises(InputError, match="too small"):
        build_cnn(input_shape=(16, 16, 3), num_classes=10, conv_blocks=6)


def test_weights_larger_than_the_memory_are_refused_before_keras(monkeypatch):
    from kerascnn import runtime

    spec = CNNSpec(input_shape=(8, 8, 1), num_classes=3, conv_blocks=1, dense_units=(64,))
    plan = analyze(spec)  # fc1: 4*4*32*64 + 64 weights, the largest layer
    monkeypatch.setattr(runtime, "physical_memory", lambda: 4 * plan.total_params - 1)
    with pytest.raises(InputError, match=rf"The network has {plan.total_params:,} parameters: "
                                         r".* more than this machine's .*Received: fc1 with "
                                         r"32,832 parameters"):
        build_cnn(spec)
    monkeypatch.setattr(runtime, "physical_memory", lambda: 4 * plan.total_params)
    assert build_cnn(spec).count_params() == plan.total_params
    monkeypatch.setattr(runtime, "physical_memory", lambda: None)  # unknown: no refusal
    build_cnn(spec)


def test_preprocessing_layers_and_raw_input():
    import keras

    spec = CNNSpec(input_shape=(32, 32, 1), num_classes=4, conv_blocks=2, filters=8)
    model = build_cnn(spec, raw_input_shape=(28, 28, 1),
                      preprocessing=[keras.layers.Rescaling(1 / 255), keras.layers.Resizing(32, 32)])
    assert model.input.shape == (None, 28, 28, 1)
    assert check_against_keras(model, analyze(spec)) == []
    with pytest.raises(InputError, match="must produce the spec's input_shape"):
        build_cnn(spec, raw_input_shape=(28, 28, 1), preprocessing=[keras.layers.Rescaling(1.0)])


def test_classifier_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_cnn("simple")
        assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
        assert model.get_layer("predictions").compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("shape", [(64, 2), (8, 16, 16, 1)])
def test_1d_and_3d(shape):
    model = build_cnn(input_shape=shape, num_classes=3, conv_blocks=2, filters=4,
                      batch_norm=True, spatial_dropout=0.1)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert f"Conv{len(shape) - 1}D" in kinds
    assert check_against_keras(model, analyze(model_spec := CNNSpec(
        input_shape=shape, num_classes=3, conv_blocks=2, filters=4, batch_norm=True,
        spatial_dropout=0.1))) == []
    assert model_spec.rank == len(shape) - 1


def test_bad_spec_argument_type():
    with pytest.raises(InputError, match="build_cnn expects"):
        build_cnn(42)


def test_shared_tiny_model_trains_on_the_shared_bundle(tiny_spec, tiny_model, tiny_bundle):
    """The conftest fixtures fit together: raw uint8 batches in, one softmax row per class."""
    assert tiny_model.input.shape == (None, *tiny_bundle.input_shape)
    assert tiny_model.output.shape == (None, tiny_bundle.num_classes)
    assert check_against_keras(tiny_model, analyze(tiny_spec)) == []
    tiny_model.compile("adam", "sparse_categorical_crossentropy")
    history = tiny_model.fit(tiny_bundle.train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
