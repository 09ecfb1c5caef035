"""`kerascnn.batchnorm`: Keras's BatchNormalization, trained on TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest

from kerascnn import build_cnn
from kerascnn.batchnorm import fuse_batch_norm
from kerascnn.runs import load_model


def _pair(input_shape, **bn):
    """Two identical one-layer models: Keras's computation and the fused one."""
    models = []
    for _ in range(2):
        inputs = keras.Input(input_shape)
        outputs = keras.layers.BatchNormalization(momentum=0.9, **bn)(inputs)
        models.append(keras.Model(inputs, outputs))
    models[1].set_weights(models[0].get_weights())
    return models


@pytest.mark.parametrize("shape", [(6, 6, 3), (9, 4), (3, 4, 5, 2), (7,)])
@pytest.mark.parametrize("bn", [{}, {"center": False, "scale": False}])
def test_fused_training_step_matches_keras(shape, bn):
    plain, fused = _pair(shape, gamma_initializer="random_uniform",
                         beta_initializer="random_uniform", **bn)
    assert fuse_batch_norm(fused) == 1
    x = np.random.default_rng(0).normal(2.0, 3.0, (16, *shape)).astype("float32")
    for model in (plain, fused):  # two steps: the moving statistics move twice
        model(x, training=True)
    out_plain, out_fused = plain(x, training=True), fused(x, training=True)
    np.testing.assert_allclose(np.asarray(out_fused), np.asarray(out_plain), atol=1e-4)
    for a, b in zip(plain.layers[1].weights, fused.layers[1].weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5,
                                   err_msg=a.name)
    # inference is Keras's own code
    np.testing.assert_allclose(np.asarray(fused(x, training=False)),
                               np.asarray(plain(x, training=False)), atol=1e-5)


def test_fused_gradients_match_keras():
    import tensorflow as tf

    plain, fused = _pair((5, 5, 4), gamma_initializer="random_uniform")
    fuse_batch_norm(fused)
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 5, 5, 4)).astype("float32"))
    grads = []
    for model in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(model(x, training=True)) * tf.range(4.0))
        grads.append(tape.gradient(loss, [x, *model.trainable_weights]))
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)


def test_ineligible_layers_keep_keras_code():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(renorm=True)(inputs)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.BatchNormalization(axis=1)(x)
    model = keras.Model(inputs, x)
    # renorm and synchronized are skipped; the axis is checked at call time
    assert fuse_batch_norm(model) == 1
    data = np.random.default_rng(2).normal(size=(3, 4, 4, 2)).astype("float32")
    plain = keras.layers.BatchNormalization(axis=1)
    plain.build((3, 4, 4, 2))
    np.testing.assert_allclose(np.asarray(model.layers[3](data, training=True)),
                               np.asarray(plain(data, training=True)), atol=1e-5)
    assert fuse_batch_norm(model) == 0  # never twice


def test_build_cnn_fuses_and_saves_plain_keras(tmp_path):
    model = build_cnn(input_shape=(12, 12, 1), num_classes=3, conv_blocks=2,
                      convs_per_block=2, filters=4, batch_norm=True)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 4 and all("call" in vars(l) for l in bns)
    assert all(type(l) is keras.layers.BatchNormalization for l in bns)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(3).random((32, 12, 12, 1)).astype("float32")
    y = np.arange(32) % 3
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    plain = keras.saving.load_model(path)  # no kerascnn needed to read it
    assert not any("call" in vars(l) for l in plain.layers)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    again = load_model(path)
    assert all("call" in vars(l) for l in again.layers
               if isinstance(l, keras.layers.BatchNormalization))
