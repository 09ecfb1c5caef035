"""The fine-tuning classifier: raw pixels -> preprocessing -> backbone -> new head.

    Input(raw H, W, C) -> Resizing -> to RGB -> the backbone's own preprocessing
        -> backbone(include_top=False, training=False) -> GlobalAveragePooling2D
        -> Dropout -> Dense(num_classes, softmax)

and the two switches of fine-tuning: `freeze_backbone` (phase 1) and
`unfreeze_backbone` (phase 2, BatchNormalization stays frozen).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from kerascnn.checks import InputError
from kerascnn.finetuning.backbones import (build_backbone, check_image_size, get_backbone,
                                           is_batch_norm, layers_to_unfreeze)

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

def _channel_kernel(channels: int, bgr: bool):
    """A fixed 1x1 convolution kernel mapping `channels` input channels to RGB (or BGR)."""
    kernel = np.zeros((1, 1, channels, 3), dtype="float32")
    if channels in (1, 2):  # gray (+ alpha): copy gray to all three
        kernel[0, 0, 0, :] = 1.0
    else:  # RGB (+ alpha): keep RGB, drop the rest
        for out in range(3):
            kernel[0, 0, (2 - out) if bgr else out, out] = 1.0
    return kernel


def _preprocessing_layers(channels: int, mode: str) -> list:
    """Layers turning `channels`-channel [0, 255] pixels into what the backbone expects."""
    layers = []
    bgr = mode == "caffe"
    if channels != 3 or bgr:
        # a fixed, non-trainable 1x1 convolution: standard Keras, loads in safe mode
        to_rgb = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name="to_rgb")
        to_rgb.build((None, None, None, channels))
        to_rgb.set_weights([_channel_kernel(channels, bgr)])
        layers.append(to_rgb)
    if mode == "caffe":
        layers.append(keras.layers.Rescaling(1.0, offset=[-m for m in _CAFFE_MEAN_BGR],
                                             name="preprocess"))
    elif mode == "tf":
        layers.append(keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess"))
    elif mode == "torch":
        std = np.asarray(_TORCH_STD)
        layers.append(keras.layers.Rescaling(
            list(1.0 / (255.0 * std)), offset=list(-np.asarray(_TORCH_MEAN) / std),
            name="preprocess"))
    return layers


def build_model(
    backbone: str = "mobilenet_v2",
    *,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    weights: str | None = None,
    image_size=None,
    dropout: float = 0.2,
    freeze_batch_norm: bool = True,
    input_scale: float = 1.0,
):
    """A classifier of raw pixels on top of a pretrained backbone (uncompiled).

    Args:
        backbone: str. A name from `list_backbones()`. Defaults to `"mobilenet_v2"`.
        input_shape: (H, W, C). The raw images: any size, 1 (gray), 2 (gray +
            alpha), 3 (RGB) or 4 (RGBA) channels, pixel values in [0, 255].
            Defaults to `(28, 28, 1)`.
        num_classes: int. Defaults to 10.
        weights: str or None. `"imagenet"`, `None`/`"none"` or a weights file.
            Defaults to `None`.
        image_size: int or (int, int). What the images are resized to inside the
            model, i.e. the backbone's input. Defaults to the backbone's default
            (96x96 for the documented four).
        dropout: float. Dropout before the classifier. Defaults to 0.2.
        freeze_batch_norm: bool. Call the backbone with `training=False` so its
            BatchNorm layers always run in inference mode (what fine-tuning needs).
            `False` builds a network meant to be trained from scratch. Defaults
            to `True`.
        input_scale: float. Multiplies the raw inputs first: 255 for float
            images in [0, 1]. Defaults to 1 (pixels in [0, 255]).

    Returns:
        An uncompiled `keras.Model`; the backbone is its layer named `"backbone"`.

    Raises:
        InputError: bad backbone, weights, input shape, image size, classes or dropout.

    Example:
        >>> model = build_model("mobilenet_v2", input_shape=(28, 28, 1), num_classes=10)
        >>> model.get_layer("backbone").input_shape  # doctest: +SKIP
    """
    spec = get_backbone(backbone)
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be (height, width, channels). "
                        f"Received: input_shape={input_shape!r}") from None
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise InputError(f"Fine-tuning takes images: input_shape must be (height, width, "
                         f"channels) of positive ints. Received: input_shape={input_shape!r}")
    if input_shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"Images must have 1, 2, 3 or 4 channels (gray, gray+alpha, RGB, "
                         f"RGBA). Received: input_shape={input_shape!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise InputError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise InputError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    size = check_image_size(image_size, spec)

    base = build_backbone(spec, weights=weights, image_size=size)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if input_scale != 1.0:
        x = keras.layers.Rescaling(float(input_scale), name="to_pixels")(x)
    if tuple(input_shape[:2]) != size:
        x = keras.layers.Resizing(size[0], size[1], name="resize")(x)
    for layer in _preprocessing_layers(input_shape[-1], spec.preprocessing):
        x = layer(x)
    if freeze_batch_norm:
        for layer in base.layers:
            if is_batch_norm(layer):
                layer.trainable = False
        x = base(x, training=False)
    else:
        x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(float(dropout), name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{spec.name}_classifier")


def freeze_backbone(model) -> None:
    """Phase 1: everything but the head is frozen."""
    model.get_layer("backbone").trainable = False


def unfreeze_backbone(model, unfreeze: int | str = "all") -> list[str]:
    """Phase 2: unfreeze the top of the backbone, BatchNorm excluded.

    Args:
        model: a model from `build_model`.
        unfreeze: `"all"`, N (top N layers with weights), `"N blocks"`.

    Returns:
        The names of the backbone layers that are now trainable.
    """
    base = model.get_layer("backbone")
    chosen = layers_to_unfreeze(base, unfreeze)
    names = {layer.name for layer in chosen}
    base.trainable = True  # sets every sublayer; now narrow it down
    for layer in base.layers:
        layer.trainable = layer.name in names and not is_batch_norm(layer)
    return [layer.name for layer in chosen]


