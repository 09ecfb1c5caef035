import numpy as np
import pytest

from kerascnn import analyze, build_cnn, get_preset, list_presets
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


# published parameter counts --------------------------------------------------

def test_presets_listed():
    assert list_presets() == ["lenet5", "alexnet", "vgg16", "resnet18", "allconv", "fcn",
                              "simple"]


@pytest.mark.parametrize("name,trainable", [
    ("lenet5", 61_706), ("alexnet", 62_378_344), ("vgg16", 138_357_544),
    ("resnet18", 11_689_512),
])
def test_published_parameter_counts_by_analysis(name, trainable):
    assert analyze(get_preset(name)).trainable_params == trainable


def test_vgg16_conv_base_equals_keras_applications():
    import keras

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    plan = analyze(get_preset("vgg16"))
    ours = sum(layer.params for layer in plan.layers if layer.name.startswith("block"))
    assert ours == base.count_params() == 14_714_688
    # the same layer names and shapes as Keras's own VGG16
    for layer in base.layers[1:]:
        assert plan.layer(layer.name).output_shape == tuple(layer.output.shape[1:])


@pytest.mark.parametrize("name", [
    "lenet5", pytest.param("alexnet", marks=pytest.mark.slow),
    pytest.param("vgg16", marks=pytest.mark.slow), "resnet18", "allconv", "fcn", "simple"])
def test_every_preset_builds_as_analysed(name):
    spec = get_preset(name)
    model = build_cnn(spec)
    assert check_against_keras(model, analyze(spec)) == []


def test_resnet18_trainable_weights_in_keras():
    import keras

    model = build_cnn("resnet18")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_689_512
    assert isinstance(model.get_layer("block3_add1"), keras.layers.Add)
    assert model.get_layer("block3_proj1").strides == (2, 2)


def test_unknown_preset():
    with pytest.raises(InputError, match="Did you mean 'vgg16'"):
        get_preset("vgg61")


def test_shared_tiny_model_trains_on_the_shared_bundle(tiny_spec, tiny_model, tiny_bundle):
    """The conftest fixtures fit together: raw uint8 batches in, one softmax row per class."""
    assert tiny_model.input.shape == (None, *tiny_bundle.input_shape)
    assert tiny_model.output.shape == (None, tiny_bundle.num_classes)
    assert check_against_keras(tiny_model, analyze(tiny_spec)) == []
    tiny_model.compile("adam", "sparse_categorical_crossentropy")
    history = tiny_model.fit(tiny_bundle.train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
