"""The classic networks of the course, as specs (data, not code).

| preset | default input | classes | what it shows |
|---|---|---|---|
| `lenet5` | 32x32x1 | 10 | tanh, average pooling, valid padding (LeCun et al. 1998) |
| `alexnet` | 227x227x3 | 1000 | large strided first kernel, overlapping pools (Krizhevsky 2012) |
| `vgg16` | 224x224x3 | 1000 | stacks of 3x3 convolutions (Simonyan & Zisserman 2014) |
| `resnet18` | 224x224x3 | 1000 | basic residual blocks with projection shortcuts (He et al. 2015) |
| `allconv` | 32x32x3 | 10 | strided convolutions in place of pooling (Springenberg et al. 2014) |
| `fcn` | 32x32x3 | 10 | 1x1 convolutions + global average pooling in place of dense layers |
| `simple` | 28x28x1 | 10 | a sound baseline for small images |
"""

from __future__ import annotations

import difflib
from typing import Any, Optional, Sequence

from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec, field_names

_PRESETS: dict[str, dict[str, Any]] = {
    # 61,706 parameters at 32x32x1 with 10 classes; C5 is the 5x5 convolution to 120 maps
    "lenet5": dict(
        input_shape=(32, 32, 1), num_classes=10, conv_blocks=3, convs_per_block=1,
        filters=(6, 16, 120), kernel_size=5, padding="valid", activation="tanh",
        pooling=("avg", "avg", "none"), pool_size=2, dense_units=(84,)),
    # 62,378,344 parameters at 227x227x3 with 1000 classes (single-tower AlexNet)
    "alexnet": dict(
        input_shape=(227, 227, 3), num_classes=1000, conv_blocks=3, convs_per_block=(1, 1, 3),
        filters=(96, 256, (384, 384, 256)), kernel_size=(11, 5, 3), strides=(4, 1, 1),
        padding=("valid", "same", "same"), pooling="max", pool_size=3, pool_strides=2,
        dense_units=(4096, 4096), dropout=0.5),
    # 138,357,544 parameters at 224x224x3 with 1000 classes; conv base 14,714,688
    "vgg16": dict(
        input_shape=(224, 224, 3), num_classes=1000, conv_blocks=5,
        convs_per_block=(2, 2, 3, 3, 3), filters=(64, 128, 256, 512, 512), kernel_size=3,
        padding="same", pooling="max", pool_size=2, dense_units=(4096, 4096), dropout=0.5),
    # 11,689,512 trainable parameters at 224x224x3 with 1000 classes
    "resnet18": dict(
        input_shape=(224, 224, 3), num_classes=1000, conv_blocks=5,
        convs_per_block=(1, 4, 4, 4, 4), filters=(64, 64, 128, 256, 512),
        kernel_size=(7, 3, 3, 3, 3), strides=(2, 1, (2, 1, 1, 1), (2, 1, 1, 1), (2, 1, 1, 1)),
        padding="same", batch_norm=True,
        block_type=("plain", "residual", "residual", "residual", "residual"),
        pooling=("max", "none", "none", "none", "none"), pool_size=3, pool_strides=2,
        pool_padding="same", head="gap", dense_units=()),
    # All-CNN-C style: pooling replaced by 3x3 stride-2 convolutions
    "allconv": dict(
        input_shape=(32, 32, 3), num_classes=10, conv_blocks=3, convs_per_block=(2, 2, 1),
        filters=(96, 192, 192), kernel_size=3, padding="same", batch_norm=True,
        pooling=("conv", "conv", "none"), pool_size=3, pool_strides=2, pool_padding="same",
        head="conv", dense_units=(192,), spatial_dropout=0.1),
    # fully convolutional: no dense layer, 1x1 convolutions then global average pooling
    "fcn": dict(
        input_shape=(32, 32, 3), num_classes=10, conv_blocks=3, convs_per_block=2,
        filters=(32, 64, 128), kernel_size=3, padding="same", batch_norm=True,
        pooling="max", pool_size=2, head="conv", dense_units=(128,)),
    # the baseline for small images: two blocks of two 3x3 convs, BN, one dense layer
    "simple": dict(
        input_shape=(28, 28, 1), num_classes=10, conv_blocks=2, convs_per_block=2,
        filters=(32, 64), kernel_size=3, padding="same", batch_norm=True, pooling="max",
        pool_size=2, dense_units=(128,), dropout=0.3),
}

_DESCRIPTIONS = {
    "lenet5": "LeNet-5: tanh, average pooling, valid padding",
    "alexnet": "AlexNet: 11x11/4 first convolution, overlapping max pooling, two 4096 FCs",
    "vgg16": "VGG16: 13 3x3 convolutions in 5 blocks, two 4096 FCs",
    "resnet18": "ResNet-18: 7x7/2 stem, 8 basic residual blocks, global average pooling",
    "allconv": "All-convolutional net: strided convolutions instead of pooling",
    "fcn": "Fully-convolutional net: 1x1 convolutions and global average pooling as the head",
    "simple": "Baseline for small images: 2x2 3x3 convolutions (32, 64), batch norm, 1 FC",
}


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return list(_PRESETS)


def describe_preset(name: str) -> str:
    return _DESCRIPTIONS[_check_name(name)]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in _PRESETS:
        close = difflib.get_close_matches(str(name).lower(), list(_PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"Unknown preset; allowed: {', '.join(_PRESETS)}.{hint} "
                         f"Received: preset={name!r}")
    return name


def get_preset(name: str, input_shape: Optional[Sequence[int]] = None,
               num_classes: Optional[int] = None, **overrides: Any) -> CNNSpec:
    """A classic network as a `CNNSpec`.

    Args:
        name: str. One of `list_presets()`.
        input_shape: tuple of int. Defaults to the preset's own (e.g.
            224x224x3 for vgg16). A different rank turns the 2D preset into
            1D or 3D convolutions.
        num_classes: int. Defaults to the preset's own.
        **overrides: other CNNSpec fields to change.

    Returns:
        CNNSpec.

    Raises:
        InputError: unknown name or an invalid override.

    Example:

    >>> get_preset("vgg16").dense_units
    (4096, 4096)
    """
    config = dict(_PRESETS[_check_name(name)])
    unknown = sorted(set(overrides) - set(field_names()))
    if unknown:
        raise InputError(f"Unrecognized arguments for get_preset: {unknown}. Allowed: "
                         f"{', '.join(field_names())}. Received: {unknown}")
    if input_shape is not None:
        # a list or tuple of sizes; anything else is left for CNNSpec to refuse
        config["input_shape"] = tuple(input_shape) if isinstance(input_shape, (list, tuple)) \
            else input_shape
    if num_classes is not None:
        config["num_classes"] = num_classes
    config.update(overrides)
    return CNNSpec(**config)
