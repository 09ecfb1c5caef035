"""The analysis is pure Python and agrees with Keras layer by layer."""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kerascnn.analysis import analyze, conv_output_size, is_valid, max_conv_blocks
from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec


@pytest.mark.parametrize("n,k,s,p,d,expected", [
    (28, 3, 1, "valid", 1, 26), (28, 3, 1, "same", 1, 28), (28, 3, 2, "same", 1, 14),
    (227, 11, 4, "valid", 1, 55), (55, 3, 2, "valid", 1, 27), (28, 3, 1, "valid", 2, 24),
    (7, 2, 2, "valid", 1, 3), (7, 2, 2, "same", 1, 4), (1, 3, 1, "valid", 1, -1),
])
def test_formula(n, k, s, p, d, expected):
    assert conv_output_size(n, k, s, p, d) == expected


def test_no_tensorflow_import():
    code = ("import sys; from kerascnn import analyze, CNNSpec, get_preset; "
            "analyze(get_preset('vgg16')); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layer_table_of_simple_net():
    a = analyze(CNNSpec(input_shape=(28, 28, 1), num_classes=10, conv_blocks=2,
                        filters=(32, 64), padding="valid"))
    assert a.layer("block1_conv1").output_shape == (26, 26, 32)
    assert a.layer("block1_conv2").output_shape == (24, 24, 32)
    assert a.layer("block1_pool").output_shape == (12, 12, 32)
    assert a.layer("block2_pool").output_shape == (4, 4, 64)
    assert a.layer("flatten").output_shape == (1024,)
    # receptive field: 3, 5, 6 (pool), then jump 2: 10, 14, pool -> 16
    assert [a.layer(n).receptive_field for n in
            ("block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2",
             "block2_pool")] == [3, 5, 6, 10, 14, 16]
    assert a.layer("block2_pool").jump == 4
    assert a.layer("block1_conv1").params == 3 * 3 * 1 * 32 + 32
    assert a.layer("block1_conv1").macs == 26 * 26 * 3 * 3 * 32
    assert a.layer("fc1").macs == 1024 * 128
    assert a.total_params == sum(layer.params for layer in a.layers)


def test_too_deep_names_first_layer():
    spec = CNNSpec(input_shape=(28, 28, 1), num_classes=10, conv_blocks=5)
    with pytest.raises(InputError, match=r"block5_pool .* 1x1 feature map into 0x0"):
        analyze(spec)
    assert not is_valid(spec)
    assert is_valid(spec.replace(conv_blocks=4))


def test_valid_padding_kernel_bigger_than_map():
    spec = CNNSpec(input_shape=(28, 28, 1), num_classes=10, conv_blocks=3, padding="valid")
    with pytest.raises(InputError, match=r"layer block3_conv2 .*2x2 feature map into 0x0.*Received: input_shape=\(28, 28, 1\)"):
        analyze(spec)


@pytest.mark.parametrize("kw,expected", [
    (dict(padding="same"), 4),
    (dict(padding="valid"), 2),
    (dict(padding="valid", convs_per_block=3), 2),
    (dict(padding="valid", convs_per_block=1, kernel_size=5), 2),
    (dict(padding="same", pooling="none"), 32),
])
def test_max_conv_blocks(kw, expected):
    assert max_conv_blocks((28, 28, 1), **kw) == expected


def test_max_conv_blocks_matches_analysis():
    for n in (1, 2, 3):
        for padding in ("same", "valid"):
            depth = max_conv_blocks((28, 28, 1), convs_per_block=n, padding=padding)
            spec = CNNSpec(input_shape=(28, 28, 1), num_classes=10, convs_per_block=n,
                           padding=padding, conv_blocks=depth, filters=8)
            assert is_valid(spec)
            assert not is_valid(spec.replace(conv_blocks=depth + 1))


# ---------------------------------------------------------------------------
# Property: analysis == Keras for random valid specs (1D/2D/3D)
# ---------------------------------------------------------------------------

@st.composite
def specs(draw):
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    size = {1: st.integers(8, 64), 2: st.integers(6, 32), 3: st.integers(4, 10)}[rank]
    spatial = tuple(draw(size) for _ in range(rank))
    channels = draw(st.integers(1, 3))
    blocks = draw(st.integers(1, 3))
    block_type = draw(st.sampled_from(["plain", "plain", "residual"]))
    residual = block_type == "residual"
    convs = draw(st.sampled_from([2, 4]) if residual else st.integers(1, 3))
    padding = "same" if residual else draw(st.sampled_from(["same", "valid"]))
    dilation = draw(st.sampled_from([1, 1, 2]))
    strides = 1 if dilation > 1 else draw(st.sampled_from([1, 1, 2]))
    pooling = draw(st.sampled_from(["max", "avg", "none", "conv"]))
    fields = dict(
        input_shape=spatial + (channels,), num_classes=draw(st.integers(2, 5)),
        conv_blocks=blocks, convs_per_block=convs,
        filters=tuple(draw(st.integers(1, 6)) for _ in range(blocks)),
        kernel_size=draw(st.sampled_from([1, 2, 3])), strides=strides, padding=padding,
        dilation_rate=dilation, batch_norm=draw(st.booleans()),
        spatial_dropout=draw(st.sampled_from([0.0, 0.2])), pooling=pooling,
        pool_size=draw(st.sampled_from([2, 3])), pool_strides=draw(st.sampled_from([None, 1, 2])),
        pool_padding=draw(st.sampled_from(["valid", "same"])), block_type=block_type,
        head=draw(st.sampled_from(["flatten", "gap", "conv"])),
        dense_units=tuple(draw(st.lists(st.integers(1, 8), max_size=2))),
        dropout=draw(st.sampled_from([0.0, 0.3])),
        classifier_activation=draw(st.sampled_from(["softmax", None])),
    )
    return CNNSpec(**fields)


def _check_against_keras(spec):
    import keras

    from kerascnn.builders import build_cnn, check_against_keras

    if not is_valid(spec):
        with pytest.raises(InputError, match="too small"):
            build_cnn(spec)
        return
    plan = analyze(spec)
    model = build_cnn(spec)
    assert check_against_keras(model, plan) == []
    # and nothing in the model escapes the plan
    names = {layer.name for layer in plan.layers}
    assert {layer.name for layer in model.layers} - names == {"input"}
    assert model.count_params() == plan.total_params
    keras.backend.clear_session()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_analysis_equals_keras(spec):
    _check_against_keras(spec)


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=specs())
def test_analysis_equals_keras_hundreds_of_valid_specs(spec):
    assume(is_valid(spec))
    _check_against_keras(spec)
