import json

import pytest

from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec

BASE = dict(input_shape=(28, 28, 1), num_classes=10)


def test_defaults_resolve_per_block():
    spec = CNNSpec(**BASE, conv_blocks=3)
    assert [b.convs[0].filters for b in spec.blocks()] == [32, 64, 128]
    assert spec.block(1).pool_strides == 2
    assert spec.rank == 2


def test_per_conv_values():
    spec = CNNSpec(input_shape=(227, 227, 3), num_classes=1000, conv_blocks=3,
                   convs_per_block=(1, 1, 3), filters=(96, 256, (384, 384, 256)),
                   kernel_size=(11, 5, 3), strides=(4, 1, 1), padding=("valid", "same", "same"))
    block3 = spec.block(3)
    assert [c.filters for c in block3.convs] == [384, 384, 256]
    assert spec.block(1).convs[0].kernel_size == 11
    assert spec.block(1).convs[0].padding == "valid"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_files(tmp_path, suffix):
    spec = CNNSpec(**BASE, conv_blocks=2, filters=(16, (32, 48)), dense_units=(64, 32),
                   classifier_activation=None, pooling=("max", "conv"))
    path = spec.save(tmp_path / f"spec{suffix}")
    assert CNNSpec.load(path) == spec
    assert CNNSpec.from_dict(json.loads(spec.to_json())) == spec


def test_replace_revalidates():
    spec = CNNSpec(**BASE)
    assert spec.replace(conv_blocks=3).conv_blocks == 3
    with pytest.raises(InputError, match="Unrecognized arguments"):
        spec.replace(depth=3)


BAD = [
    (dict(input_shape=(28, 28, 1), num_classes=1), "num_classes must be >= 2"),
    (dict(input_shape=(28, 28, 0), num_classes=10), "input_shape must be 2, 3 or 4"),
    (dict(input_shape=(28,), num_classes=10), "input_shape must be 2, 3 or 4"),
    (dict(input_shape=(2, 2, 2, 2, 2), num_classes=10), "input_shape"),
    (dict(input_shape=28, num_classes=10), "input_shape must be a tuple"),
    (dict(**BASE, conv_blocks=0), "conv_blocks must be >= 1"),
    (dict(**BASE, conv_blocks=2.5), "conv_blocks must be an integer"),
    (dict(**BASE, filters=-8), "filters values must be integers >= 1"),
    (dict(**BASE, kernel_size=0), "kernel_size values must be integers >= 1"),
    (dict(**BASE, strides=0), "strides values"),
    (dict(**BASE, padding="full"), "Unknown padding 'full'; allowed: same, valid"),
    (dict(**BASE, pooling="median"), "Unknown pooling 'median'"),
    (dict(**BASE, block_type="dense"), "Unknown block_type"),
    (dict(**BASE, head="mlp"), "Unknown head"),
    (dict(**BASE, filters=(32, 64, 128)), "length must equal conv_blocks=2"),
    (dict(**BASE, convs_per_block=(2,)), "length must equal conv_blocks"),
    (dict(**BASE, filters=(32, (64, 64, 64))), "lists 3 values but the block has 2"),
    (dict(**BASE, pooling=(("max", "avg"), "max")), "one value per block, not per"),
    (dict(**BASE, dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(**BASE, spatial_dropout=-0.1), "spatial_dropout must be in"),
    (dict(**BASE, dropout="lots"), "dropout must be a number"),
    (dict(**BASE, activation="relux"), "Unknown activation"),
    (dict(**BASE, batch_norm="yes"), "batch_norm must be True or False"),
    (dict(**BASE, dense_units=(128, 0)), "dense_units must be a tuple of positive"),
    (dict(**BASE, classifier_activation="sigmoid"), "classifier_activation"),
    (dict(**BASE, strides=2, dilation_rate=2), "both strides > 1 and dilation"),
    (dict(**BASE, block_type="residual", convs_per_block=3), "must be even"),
    (dict(**BASE, block_type="residual", padding="valid"), "need padding='same'"),
    (dict(**BASE, filters=True), "filters values must be integers"),
    # refused before the layers are expanded (the CLI fuzz ran out of memory on these)
    (dict(**BASE, convs_per_block=8421540821, pooling="none"),
     "would have 16,843,081,642 convolution layers.*at most 10,000"),
    (dict(**{**BASE, "conv_blocks": 10**11}, pooling="none"), "at most 10,000"),
    (dict(**BASE, convs_per_block=(5_000, 5_001)), "10,001 convolution layers"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_values_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        CNNSpec(**kwargs)
    assert "Received" in str(info.value)


def test_unknown_keys_refused():
    with pytest.raises(InputError, match=r"Unrecognized arguments for CNNSpec: \['depth'\]"):
        CNNSpec.from_dict({**BASE, "depth": 3})


def test_missing_required_keys():
    with pytest.raises(InputError, match="needs input_shape"):
        CNNSpec.from_dict({"num_classes": 3})


def test_unknown_yaml_key(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("input_shape: [28, 28, 1]\nnum_classes: 10\nconv_blockz: 3\n")
    with pytest.raises(InputError, match="conv_blockz"):
        CNNSpec.load(path)


def test_unparsable_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("input_shape: [28, 28\n")
    with pytest.raises(InputError, match="Could not parse"):
        CNNSpec.load(path)


def test_bad_save_suffix(tmp_path):
    with pytest.raises(InputError, match=r"end in \.yaml, \.yml or \.json"):
        CNNSpec(**BASE).save(tmp_path / "spec.txt")
