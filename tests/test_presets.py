"""kerascnn.presets: the classic networks as specs, checked against their papers and Keras."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kerascnn import analyze, build_cnn, get_preset, list_presets
from kerascnn.builders import check_against_keras
from kerascnn.checks import InputError
from kerascnn.presets import _PRESETS, describe_preset
from kerascnn.spec import CNNSpec

PRESETS = ["lenet5", "alexnet", "vgg16", "resnet18", "allconv", "fcn", "simple"]


def test_presets_listed_and_described():
    assert list_presets() == PRESETS
    import kerascnn.presets as presets_module

    for name in PRESETS:
        assert describe_preset(name)
        assert f"`{name}`" in presets_module.__doc__  # the module's table names every preset


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_analyses_and_round_trips(name):
    spec = get_preset(name)
    assert isinstance(spec, CNNSpec)
    plan = analyze(spec)
    assert plan.output_shape == (spec.num_classes,)
    assert plan.layers[-1].name == "predictions"
    assert plan.trainable_params > 0 and plan.total_macs > 0
    assert CNNSpec.from_dict(spec.to_dict()) == spec
    # presets are data: the spec is exactly the table entry
    assert spec == CNNSpec(**_PRESETS[name])


# published parameter counts --------------------------------------------------

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


# the shapes the papers give ----------------------------------------------------

def test_feature_maps_of_the_papers():
    lenet = analyze(get_preset("lenet5"))
    assert lenet.layer("block1_conv1").output_shape == (28, 28, 6)  # C1
    assert lenet.layer("block2_pool").output_shape == (5, 5, 16)  # S4
    assert lenet.layer("block3_conv1").output_shape == (1, 1, 120)  # C5
    alexnet = analyze(get_preset("alexnet"))
    assert alexnet.layer("block1_conv1").output_shape == (55, 55, 96)
    assert alexnet.feature_map_shape == (6, 6, 256)
    assert analyze(get_preset("vgg16")).feature_map_shape == (7, 7, 512)
    resnet = analyze(get_preset("resnet18"))
    assert resnet.layer("block1_pool").output_shape == (56, 56, 64)
    assert resnet.layer("block5_add2").output_shape == (7, 7, 512)
    assert analyze(get_preset("simple")).layer("block2_pool").output_shape == (7, 7, 64)


def test_allconv_and_fcn_have_no_pooling_or_dense_layers_where_the_papers_drop_them():
    allconv = analyze(get_preset("allconv"))
    kinds = {layer.kind for layer in allconv.layers}
    assert not kinds & {"max_pool", "avg_pool", "dense"}
    fcn = analyze(get_preset("fcn"))
    assert "dense" not in {layer.kind for layer in fcn.layers}
    # the classifier is a 1x1 convolution to the classes, averaged over the map
    assert [layer.kind for layer in fcn.layers[-4:]] == ["conv", "conv", "global_avg_pool",
                                                         "activation"]
    assert fcn.layer("predictions_conv").output_shape == (4, 4, 10)


# overrides ---------------------------------------------------------------------

def test_overrides_input_shape_rank_and_classes():
    small = get_preset("vgg16", input_shape=(32, 32, 3), num_classes=10, dense_units=(256,))
    assert small.input_shape == (32, 32, 3) and small.num_classes == 10
    assert small.dense_units == (256,)
    assert analyze(small).feature_map_shape == (1, 1, 512)
    one_d = get_preset("simple", input_shape=[128, 2], num_classes=3)  # a list is accepted
    assert one_d.rank == 1 and analyze(one_d).output_shape == (3,)
    three_d = get_preset("simple", input_shape=(16, 16, 16, 1))
    assert three_d.rank == 3 and analyze(three_d).layer("block2_pool").output_shape == \
        (4, 4, 4, 64)


@pytest.mark.parametrize("call, match", [
    (lambda: get_preset("vgg61"), r"Unknown preset; allowed: lenet5.*Did you mean 'vgg16'"),
    (lambda: get_preset(["vgg16"]), r"Unknown preset.*Received: preset=\['vgg16'\]"),
    (lambda: get_preset(None), r"Unknown preset.*Received: preset=None"),
    (lambda: describe_preset("resnet"), r"Did you mean 'resnet18'"),
    (lambda: get_preset("vgg16", depth=3), r"Unrecognized arguments for get_preset: \['depth'\]"),
    (lambda: get_preset("vgg16", input_shape=224), r"input_shape must be a tuple"),
    (lambda: get_preset("lenet5", num_classes=1), r"num_classes must be >= 2"),
    (lambda: get_preset("vgg16", input_shape=(16, 16, 3)), r"Input 16x16 is too small"),
])
def test_bad_preset_requests_are_input_errors(call, match):
    with pytest.raises(InputError, match=match):
        spec = call()
        analyze(spec)  # the size check is the analysis's


def test_presets_import_is_light():
    code = ("import sys, kerascnn.presets as p; p.get_preset('vgg16'); "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
