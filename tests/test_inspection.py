"""kerascnn.inspection: the model's input, classes, convolutions and logits, found once."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn.checks import InputError
from kerascnn.inspection import (check_class_index, class_names_of, conv_layers,
                                 feature_map_layers, feature_map_model, image_input_shape,
                                 last_conv_layer, logit_model, num_classes,
                                 outputs_probabilities, resolve_model)


def _plain_cnn(head="dense_softmax"):
    """A model without kerascnn's layer names: conv, BN, ReLU, pool, then a chosen head."""
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten()(x)
    if head == "dense_softmax":
        outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    elif head == "softmax_layer":
        x = keras.layers.Dense(3, name="logits")(x)
        outputs = keras.layers.Softmax()(x)
    else:
        outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_input_and_classes(tiny_model, tmp_path):
    from kerascnn.runs import save_model

    assert image_input_shape(tiny_model) == (28, 28, 1)
    assert num_classes(tiny_model) == 4
    assert class_names_of(tiny_model) == ["0", "1", "2", "3"]
    path = save_model(tiny_model, tmp_path / "m.keras", class_names=["a", "b", "c", "d"])
    loaded = resolve_model(path)
    assert isinstance(loaded, keras.Model) and class_names_of(loaded) == ["a", "b", "c", "d"]
    assert resolve_model(tiny_model) is tiny_model
    with pytest.raises(InputError, match="Expected a keras.Model .*Received: model of type int"):
        resolve_model(3)
    with pytest.raises(InputError, match="Model file not found"):
        resolve_model(tmp_path / "missing.keras")


def test_binary_one_unit_classifier_has_two_classes():
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    assert num_classes(model) == 1 and class_names_of(model) == ["0", "1"]
    assert outputs_probabilities(model)
    assert check_class_index(model, np.int64(0)) == 0  # one score to explain
    with pytest.raises(InputError, match="from 0 to 0"):
        check_class_index(model, 1)


def test_models_that_are_no_image_classifiers_are_refused():
    signal = keras.Input((64, 2))
    model = keras.Model(signal, keras.layers.Dense(3)(keras.layers.Flatten()(signal)))
    with pytest.raises(InputError, match=r"2D images .*Received: input_shape=\(64, 2\)"):
        image_input_shape(model)
    image = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(image)
    two_heads = keras.Model(image, [keras.layers.Dense(2)(flat), keras.layers.Dense(3)(flat)])
    with pytest.raises(InputError, match=r"one output .*Received: output_shapes=\[\(None, 2\)"):
        num_classes(two_heads)


def test_check_class_index(tiny_model):
    assert check_class_index(tiny_model, None) is None
    assert check_class_index(tiny_model, np.int32(3)) == 3
    with pytest.raises(InputError, match=r"from 0 to 3 \(the model has 4 class outputs\). "
                                         r"Received: class=4"):
        check_class_index(tiny_model, 4)
    for bad in (1.5, True, "2"):
        with pytest.raises(InputError, match="integer index"):
            check_class_index(tiny_model, bad)


def test_conv_layers_include_nested_models():
    backbone = _plain_cnn()
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(3, 1, name="to_rgb")(inputs)
    outer = keras.Model(inputs, backbone(x))
    assert [layer.name for layer in conv_layers(outer)] == ["to_rgb", "c1", "c2"]
    assert [layer.name for layer in conv_layers(outer, recursive=False)] == ["to_rgb"]


def test_last_conv_layer_follows_shape_keeping_layers():
    model = _plain_cnn()
    assert last_conv_layer(model).name == "relu"  # after BN and ReLU, before the pool
    assert last_conv_layer(model, "c1").name == "c1"
    with pytest.raises(InputError, match="No layer named 'nope' with a 2D feature map; allowed: "
                                         "c1, c2, bn, relu, pool"):
        last_conv_layer(model, "nope")
    with pytest.raises(InputError, match="2D feature map .*Received: layer='predictions'"):
        last_conv_layer(model, "predictions")
    with pytest.raises(InputError, match="convolution layers; this one has none"):
        last_conv_layer(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                          keras.layers.Dense(2)]))


def test_feature_map_layers_one_per_block(tiny_model):
    # kerascnn models: one layer per block (the last 2D layer before the pool)
    assert [(label, layer.name) for label, layer in feature_map_layers(tiny_model)] == [
        ("block1", "block1_conv1")]
    # other models: every top-level convolution
    model = _plain_cnn()
    chosen = feature_map_layers(model)
    assert [label for label, _ in chosen] == ["c1", "c2"]
    probe = feature_map_model(model, [layer for _, layer in chosen])
    outputs = probe(np.zeros((1, 10, 10, 3), "float32"))
    assert [tuple(o.shape) for o in outputs] == [(1, 10, 10, 4), (1, 10, 10, 5)]


@pytest.mark.parametrize("head", ["dense_softmax", "softmax_layer", "logits"])
def test_logit_model_gives_the_scores_before_the_softmax(head):
    model = _plain_cnn(head)
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype("float32")
    probe, score, logits = logit_model(model, last_conv_layer(model))
    fmap, pre = probe(x)
    assert tuple(fmap.shape) == (2, 10, 10, 5)
    scores = keras.ops.convert_to_numpy(score(pre))
    assert logits
    expected = keras.ops.convert_to_numpy(model(x))
    if head == "logits":
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    else:  # a softmax of the scores is the model's output
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), expected, atol=1e-5)
        assert not np.allclose(scores.sum(axis=1), 1.0)
    assert outputs_probabilities(model) == (head != "logits")
