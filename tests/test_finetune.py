"""Fine-tuning: backbones, in-model preprocessing, the two phases, weights files, errors.

Everything here uses `weights=None` or weight files the tests make themselves,
tiny inputs (32x32, the smallest the backbones take) and a few dozen images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import kerascnn.finetuning as ft
from kerascnn.checks import InputError
from kerascnn.data import load_dataset


@pytest.fixture(scope="module")
def two_class_npz(tmp_path_factory, make_npz):
    """28x28 gray images of 2 classes (the bright quadrant): 48 train, 12 test."""
    return make_npz(tmp_path_factory.mktemp("data") / "two.npz", n_train=48, n_test=12,
                    size=28, classes=2)


@pytest.fixture
def tiny_bundle(two_class_npz):
    """`load_dataset(two_class_npz)`: 36 train, 12 validation, 12 test, batches of 16."""
    return load_dataset(str(two_class_npz), validation_split=0.25, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A MobileNetV2 (no top) weights file made here, with calibrated BatchNorm statistics.

    Keras's initial moving statistics (mean 0, variance 1) make the features of
    a deep random network vanish in inference mode; one pass in training mode
    with momentum 0 sets them to the statistics of real-looking images, as a
    pretrained checkpoint would have them.
    """
    import keras

    model = keras.applications.MobileNetV2(include_top=False, weights=None,
                                           input_shape=(32, 32, 3))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    x = np.random.default_rng(1).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    model(x, training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_notop.weights.h5"
    model.save_weights(path)
    return path, model.get_weights()


# ---------------------------------------------------------------------------
# names and arguments (no model built)
# ---------------------------------------------------------------------------


def test_list_backbones_documented_first():
    names = ft.list_backbones()
    assert names[:4] == ["vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0"]
    assert "densenet121" in names and len(names) == len(set(names))


@pytest.mark.parametrize("name, application, mode", [
    ("mobilenet_v2", "MobileNetV2", "tf"), ("MobileNetV2", "MobileNetV2", "tf"),
    ("VGG16", "VGG16", "caffe"), ("densenet121", "DenseNet121", "torch"),
    ("resnet50_v2", "ResNet50V2", "tf"), ("efficientnet_b0", "EfficientNetB0", "none"),
])
def test_get_backbone_by_any_keras_applications_name(name, application, mode):
    backbone = ft.get_backbone(name)
    assert (backbone.application, backbone.preprocessing) == (application, mode)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(InputError, match=r"Unknown backbone 'alexnet9'; allowed: vgg16, "
                                         r"resnet50, mobilenet_v2, efficientnet_b0, .*"
                                         r"Received: backbone='alexnet9'"):
        ft.get_backbone("alexnet9")


@pytest.mark.parametrize("value, expected", [
    ("all", (None, "layers")), (0, (0, "layers")), ("none", (0, "layers")),
    (20, (20, "layers")), ("20", (20, "layers")), ("20 layers", (20, "layers")),
    ("2 blocks", (2, "blocks")), ("1block", (1, "blocks")),
])
def test_parse_unfreeze(value, expected):
    assert ft.parse_unfreeze(value) == expected


@pytest.mark.parametrize("value", ["some", "-1", "2 stages", -3, "1.5"])
def test_parse_unfreeze_refuses(value):
    with pytest.raises(InputError, match="unfreeze"):
        ft.parse_unfreeze(value)


def test_image_size_too_small_for_backbone():
    with pytest.raises(InputError, match=r"too small for mobilenet_v2: it takes at least "
                                         r"32x32.*Received: image_size=28"):
        ft.build_model("mobilenet_v2", image_size=28)


@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (28, 28, 5)}, "1, 2, 3 or 4 channels"),
    ({"input_shape": (28, 28)}, r"input_shape must be \(height, width, channels\)"),
    ({"num_classes": 1}, "num_classes must be an int >= 2"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"weights": "/nonexistent/w.h5"}, "Weights file not found"),
])
def test_build_model_refuses(kwargs, match):
    with pytest.raises(InputError, match=match):
        ft.build_model("mobilenet_v2", **{"image_size": 32, **kwargs})


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backbone, module", [
    ("vgg16", "vgg16"), ("resnet50", "resnet50"), ("mobilenet_v2", "mobilenet_v2")])
def test_in_model_preprocessing_matches_keras_preprocess_input(backbone, module):
    import keras

    model = ft.build_model(backbone, input_shape=(40, 40, 3), image_size=40)
    head = keras.Model(model.input, model.get_layer("preprocess").output)
    x = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3)).astype("float32")
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(head.predict(x, verbose=0), expected, atol=1e-3)


def test_gray_input_is_resized_and_made_rgb_inside_the_model():
    import keras

    model = ft.build_model("mobilenet_v2", input_shape=(28, 28, 1), num_classes=3,
                           image_size=32)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.get_layer("backbone").input_shape == (None, 32, 32, 3)
    rgb = keras.Model(model.input, model.get_layer("to_rgb").output)
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1)).astype("uint8")
    out = rgb.predict(x, verbose=0)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out[..., 0], out[..., 2])
    assert model.predict(x, verbose=0).shape == (2, 3)


def test_efficientnet_takes_raw_pixels_without_extra_layers():
    model = ft.build_model("efficientnet_b0", input_shape=(32, 32, 3), image_size=32)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "backbone", "global_pool", "head_dropout", "predictions"]


def test_blocks_of_the_documented_backbones():
    vgg = ft.build_backbone("vgg16", image_size=32)
    blocks = ft.backbone_blocks(vgg)
    assert [b[0].name for b in blocks] == [f"block{i}_conv1" for i in range(1, 6)]
    mobilenet = ft.build_backbone("mobilenet_v2", image_size=32)
    blocks = ft.backbone_blocks(mobilenet)
    assert [b[0].name for b in blocks][-3:] == ["block_15_expand", "block_16_expand", "Conv_1"]
    assert len(blocks) == 19  # Conv1, expanded_conv, block_1..16, Conv_1


def test_trainable_layers_in_each_phase():
    import keras

    model = ft.build_model("mobilenet_v2", input_shape=(28, 28, 1), image_size=32)
    base = model.get_layer("backbone")
    ft.freeze_backbone(model)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"predictions"}

    names = ft.unfreeze_backbone(model, "2 blocks")
    assert names == ["block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"]
    trainable = {layer.name for layer in base.layers if layer.trainable_weights}
    assert trainable == set(names)
    batch_norms = [layer for layer in base.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert not model.get_layer("to_rgb").trainable

    ft.unfreeze_backbone(model, 3)
    assert [layer.name for layer in base.layers if layer.trainable_weights] == [
        "block_16_depthwise", "block_16_project", "Conv_1"]
    ft.unfreeze_backbone(model, "all")
    assert len([layer for layer in base.layers if layer.trainable_weights]) == 52
    assert not any(layer.trainable for layer in batch_norms)


def test_a_seed_numpy_cannot_take_is_refused_before_the_run_folder(tmp_path):
    with pytest.raises(InputError, match=r"seed must be an integer from 0 to 4294967295. "
                                         r"Received: seed=4294967296"):
        ft.finetune("mobilenet_v2", weights=None, seed=2**32, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("unfreeze, match", [
    (53, r"unfreeze asks for 53 layers but backbone has 52 layers with weights.*"
         r"Received: unfreeze=53"),
    ("20 blocks", r"unfreeze asks for 20 blocks but backbone has 19.*"
                  r"Received: unfreeze='20 blocks'"),
])
def test_unfreeze_larger_than_backbone(unfreeze, match):
    model = ft.build_model("mobilenet_v2", image_size=32)
    with pytest.raises(InputError, match=match):
        ft.unfreeze_backbone(model, unfreeze)


def test_batch_norm_stays_in_inference_mode_in_phase_two(mobilenet_weights):
    import keras
    import tensorflow as tf

    model = ft.build_model("mobilenet_v2", input_shape=(28, 28, 1), image_size=32,
                           weights=str(mobilenet_weights[0]))
    ft.unfreeze_backbone(model, "all")
    base = model.get_layer("backbone")
    bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(w) for layer in bn for w in layer.weights]
    kernel_before = np.array(base.get_layer("Conv_1").kernel)
    # one training step as `fit` takes it: training=True, gradients of the trainable weights
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype("float32")
    y = np.arange(8) % 10
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_weights))
    after = [np.array(w) for layer in bn for w in layer.weights]
    for b, a in zip(before, after):  # gamma, beta, moving mean and variance
        np.testing.assert_array_equal(b, a)
    # while the unfrozen convolutions did learn
    assert not np.array_equal(kernel_before, np.array(base.get_layer("Conv_1").kernel))


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------


def test_loads_a_local_weights_file(mobilenet_weights):
    path, weights = mobilenet_weights
    model = ft.build_model("mobilenet_v2", input_shape=(28, 28, 1), image_size=48,
                           weights=str(path))
    loaded = model.get_layer("backbone").get_weights()
    assert len(loaded) == len(weights)
    for a, b in zip(loaded, weights):
        np.testing.assert_array_equal(a, b)


def test_weights_of_another_architecture_are_one_clear_error(tmp_path):
    import keras

    small = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                           input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v2_035.weights.h5"
    small.save_weights(path)
    with pytest.raises(InputError, match=r"Weights do not fit the backbone: the file does "
                                         r"not hold the weights of mobilenet_v2.*Received: "
                                         r"weights='.*mobilenet_v2_035.weights.h5'"):
        ft.build_model("mobilenet_v2", image_size=32, weights=str(path))
    with pytest.raises(InputError, match=r"Weights do not fit the backbone: .* of vgg16"):
        ft.build_model("vgg16", image_size=32, weights=str(path))


def test_a_file_that_is_not_weights(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(InputError, match="not an HDF5 weights file"):
        ft.build_model("mobilenet_v2", image_size=32, weights=str(path))


def test_imagenet_offline_is_a_clear_error_not_a_hang(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(InputError, match=r"Could not download the ImageNet weights of "
                                         r"mobilenet_v2 .*local weights file.*"
                                         r"Received: weights='imagenet'"):
        ft.build_model("mobilenet_v2", image_size=32, weights="imagenet")


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------


def test_finetune_gray_28x28_end_to_end(tmp_path, tiny_bundle):
    from kerascnn import runs

    out = tmp_path / "run"
    result = ft.finetune("vgg16", dataset=tiny_bundle, weights=None, image_size=32,
                         epochs=1, fine_tune_epochs=1, unfreeze="1 block", batch_size=16,
                         output_dir=str(out), command_line=["test"])
    assert [(r["phase"], r["epoch"]) for r in result.history] == [("head", 0), ("fine_tune", 1)]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history[0])
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.yaml", "config.yaml", "history.csv", "manifest.json", "metrics.json",
        "model.keras"]  # no spec.yaml: that name always holds a CNNSpec
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    run = runs.read_run(out)
    assert run.spec is None and run.backbone == result.backbone
    assert run.backbone["backbone"] == "vgg16" and run.backbone["input_shape"] == [28, 28, 1]
    assert run.backbone["unfrozen_layers"] == 3  # block5_conv1..3
    assert [(r["phase"], r["epoch"]) for r in run.history] == [("head", 0), ("fine_tune", 1)]
    assert run.history[1]["learning_rate"] == pytest.approx(1e-4)  # fine_tune_lr
    assert run.manifest["kind"] == "finetune" and "runtime" in run.manifest
    with pytest.raises(InputError, match="fine-tuning run"):
        runs.find_spec_file(out)
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,phase,")
    assert runs.read_json(out / "manifest.json")["command_line"] == ["test"]

    model = runs.load_model(out / "model.keras")
    assert model.kerascnn_metadata["class_names"] == list(tiny_bundle.class_names)
    x = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1)).astype("uint8")
    np.testing.assert_allclose(model.predict(x, verbose=0), result.model.predict(x, verbose=0),
                               atol=1e-5)


@pytest.mark.slow
def test_finetune_mobilenet_from_a_local_weights_file(tmp_path, mobilenet_weights,
                                                      tiny_bundle):
    from kerascnn import runs

    path, _ = mobilenet_weights
    out = tmp_path / "run"
    result = ft.finetune("mobilenet_v2", dataset=tiny_bundle, weights=str(path),
                         image_size=32, epochs=2, fine_tune_epochs=1, unfreeze="2 blocks",
                         batch_size=16, output_dir=str(out))
    assert runs.read_yaml(out / "backbone.yaml")["weights"] == str(path)
    assert result.metrics["test_accuracy"] >= 0.5
    model = runs.load_model(out / "model.keras")
    # the saved model still runs its backbone in inference mode
    node = [n for n in model.get_config()["layers"] if n["name"] == "backbone"][0]
    assert node["inbound_nodes"][0]["kwargs"]["training"] is False
    assert not any(layer.trainable for layer in model.get_layer("backbone").layers
                   if type(layer).__name__ == "BatchNormalization")


def test_finetune_validates_before_writing(tmp_path, tiny_bundle):
    out = tmp_path / "run"
    bundle = tiny_bundle
    with pytest.raises(InputError, match="unfreeze asks for 99 blocks"):
        ft.finetune("mobilenet_v2", dataset=bundle, weights=None, image_size=32,
                    unfreeze="99 blocks", output_dir=str(out))
    with pytest.raises(InputError, match="epochs must be an integer >= 0. Received: epochs=-1"):
        ft.finetune("mobilenet_v2", dataset=bundle, weights=None, epochs=-1,
                    output_dir=str(out))
    with pytest.raises(InputError, match="Unknown optimizer"):
        ft.finetune("mobilenet_v2", dataset=bundle, weights=None, image_size=32,
                    optimizer="adagrad", output_dir=str(out))
    assert not out.exists()


def test_public_functions_stay_callable_after_importing_their_modules():
    import kerascnn
    import kerascnn.exporting
    import kerascnn.finetuning  # noqa: F401

    assert callable(kerascnn.finetune) and callable(kerascnn.export)
    with pytest.raises(InputError, match="Unknown backbone"):
        kerascnn.finetune("nope", dataset=None)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, match", [
    (["--backbone", "alexnet9"], "Unknown backbone 'alexnet9'; allowed: vgg16, resnet50"),
    (["--weights", "/nonexistent.h5"], "Weights file not found"),
    (["--image-size", "16"], "too small for mobilenet_v2"),
    (["--unfreeze", "lots"], "unfreeze must be 'all'"),
])
def test_cli_bad_input_is_one_line_exit_2(runner, tmp_path, args, match):
    from kerascnn.cli import main

    out = tmp_path / "run"
    result = runner.invoke(main, ["finetune", "--output-dir", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in result.output
    assert not out.exists()


def test_cli_weights_of_another_architecture(runner, tmp_path, mobilenet_weights,
                                             two_class_npz):
    from kerascnn.cli import main

    path, _ = mobilenet_weights
    out = tmp_path / "run"
    result = runner.invoke(main, ["finetune", "--backbone", "vgg16", "--weights", str(path),
                                  "--image-size", "32", "--dataset",
                                  str(two_class_npz), "--output-dir", str(out)])
    assert result.exit_code == 2, result.output
    assert "Weights do not fit the backbone" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_cli_finetune_writes_the_run_folder(runner, tmp_path, mobilenet_weights,
                                            two_class_npz):
    from kerascnn.cli import main

    path, _ = mobilenet_weights
    out = tmp_path / "run"
    result = runner.invoke(main, [
        "finetune", "--backbone", "mobilenet_v2", "--weights", str(path), "--image-size", "32",
        "--dataset", str(two_class_npz), "--epochs", "1", "--fine-tune-epochs", "1",
        "--unfreeze", "2 blocks", "--batch-size", "16", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    assert (out / "model.keras").is_file() and (out / "metrics.json").is_file()


@pytest.mark.slow
def test_efficientnet_imagenet_file_gets_variances_not_standard_deviations(tmp_path):
    """keras.applications' EfficientNet ImageNet checkpoints store std where variance belongs."""
    import keras

    base = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                             input_shape=(32, 32, 3))
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_variance.assign(np.reshape([0.229, 0.224, 0.225], norm.adapt_variance.shape))
    path = tmp_path / "efficientnet_b0_notop.weights.h5"
    base.save_weights(path)
    loaded = ft.build_backbone("efficientnet_b0", image_size=32, weights=str(path))
    norm = next(layer for layer in loaded.layers if isinstance(layer, keras.layers.Normalization))
    np.testing.assert_allclose(np.array(norm.variance).reshape(-1),
                               np.square([0.229, 0.224, 0.225]), rtol=1e-5)
    # and the layer uses them: a mid-gray image normalises to (0.5 - mean) / std
    mean = np.array(norm.adapt_mean).reshape(-1)
    out = np.array(norm(np.full((1, 1, 1, 3), 0.5, "float32"))).reshape(-1)
    np.testing.assert_allclose(out, (0.5 - mean) / np.array([0.229, 0.224, 0.225]), rtol=1e-3)
