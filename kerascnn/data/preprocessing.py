"""Preprocessing inside the model: rescale, resize, augment, normalize.

`preprocessing_layers(bundle)` returns Keras layers that go right after the
model's `Input`, so that a saved model takes raw values (uint8 pixels) and
does its own preprocessing at inference:

1. `Rescaling(1/255)` for uint8 pixels (float signals and volumes are left as they are);
2. `Resizing(height, width)` when the size the network sees differs from the raw size;
3. the augmentation layers (`augmentation_layers`, from the named list that
   `kerascnn.augment` checks; active only in training);
4. `Normalization` adapted on the training split, when `normalize=True`
   (after augmentation, so contrast works on [0, 1] pixels and padding is black).

`network_input_shape` (in `kerascnn.data.bundle`, re-exported here) is the
shape those layers hand to the CNN body.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from kerascnn.augment import check_strength, scaled_factor, validate_augmentation
from kerascnn.checks import InputError, received
from kerascnn.data.bundle import DatasetBundle, network_input_shape, target_size

__all__ = ["ADAPT_MAX_EXAMPLES", "augmentation_layers", "network_input_shape",
           "preprocessing_layers"]

ADAPT_MAX_EXAMPLES = 20000  # Normalization statistics from at most this many training examples


def augmentation_layers(config: Any, strength: float = 1.0, *, seed: int | None = None,
                        value_range: tuple[float, float] = (0.0, 1.0)) -> list:
    """Keras preprocessing layers for an augmentation list (see `kerascnn.augment`).

    The layers expect images (batch, height, width, channels) with values in any
    range and are active only in training. (Formerly
    `kerascnn.augment.augmentation_layers`; that module now only checks lists.)

    Args:
        config: an augmentation list as accepted by
            `kerascnn.augment.validate_augmentation`.
        strength: float >= 0 that multiplies every `factor` (capped at the
            largest factor each layer accepts); 0 returns no layers.
            Defaults to 1.0.
        seed: int or None, the seed of each random layer (offset per layer).
            Defaults to None (Keras's global seed).
        value_range: `(min, max)` of the values the layers receive; `contrast`
            clips to it. Defaults to `(0.0, 1.0)` (pixels after `Rescaling(1/255)`).

    Returns:
        A list of Keras layers named `augment_<name>`.

    Raises:
        InputError: for a bad `config` or a negative `strength`.
    """
    entries = validate_augmentation(config)
    strength = check_strength(strength)
    if not entries or strength == 0:
        return []
    layers = []
    for i, entry in enumerate(entries):
        name = entry["name"]
        s = None if seed is None else seed + i
        layer_name = f"augment_{name}"
        if name == "flip":
            layers.append(keras.layers.RandomFlip(entry["mode"], seed=s, name=layer_name))
            continue
        factor = scaled_factor(entry, strength)
        if name == "translation":
            layers.append(keras.layers.RandomTranslation(
                factor, factor, fill_mode="reflect", seed=s, name=layer_name))
        elif name == "rotation":
            layers.append(keras.layers.RandomRotation(
                factor, fill_mode="reflect", seed=s, name=layer_name))
        elif name == "zoom":
            layers.append(keras.layers.RandomZoom(
                factor, factor, fill_mode="reflect", seed=s, name=layer_name))
        elif name == "contrast":
            layers.append(keras.layers.RandomContrast(
                factor, value_range=tuple(value_range), seed=s, name=layer_name))
        elif name == "crop":
            layers.append(keras.layers.RandomTranslation(
                factor, factor, fill_mode="constant", fill_value=0.0, interpolation="nearest",
                seed=s, name=layer_name))
    return layers


def preprocessing_layers(
    bundle: DatasetBundle,
    *,
    image_size: int | Sequence[int] | None = None,
    normalize: bool = False,
    augmentation: Any = (),
    augmentation_strength: float = 1.0,
    seed: int | None = None,
) -> list:
    """Keras layers to put between the model's `Input` and the CNN body.

    Pass them as `kerascnn.build_cnn(spec, preprocessing=layers,
    raw_input_shape=bundle.input_shape)` with `spec.input_shape ==
    network_input_shape(bundle, image_size)`.

    Args:
        bundle: the `DatasetBundle` the model will train on.
        image_size: int, `(height, width)` or None: the size the network sees.
            Defaults to None (`bundle.image_size`, else the raw size).
        normalize: bool, add a `Normalization` layer (per channel) adapted on up
            to 20,000 training examples. Defaults to False.
        augmentation: an augmentation list (see `kerascnn.augment`), e.g.
            `["flip", {"name": "zoom", "factor": 0.1}]`. Images only.
            Defaults to () (none).
        augmentation_strength: float >= 0 scaling every augmentation factor.
            Defaults to 1.0.
        seed: int or None, seed of the augmentation layers. Defaults to None.

    Returns:
        A list of Keras layers (possibly empty) named `rescaling`, `resizing`,
        `augment_<name>`, `normalization`.

    Raises:
        InputError: for image sizes or augmentation on signals/volumes, or a bad
            augmentation list.
    """
    size = target_size(bundle, image_size)
    entries = validate_augmentation(augmentation)
    if entries and bundle.kind != "image":
        raise InputError(f"augmentation applies to images only; this {bundle.kind} data has "
                         f"shape {bundle.input_shape}. "
                         f"{received('augmentation', [e['name'] for e in entries])}")
    layers: list = []
    scale = 1.0
    if bundle.dtype == "uint8":
        scale = 1.0 / 255
        layers.append(keras.layers.Rescaling(scale, name="rescaling"))
        value_range = (0.0, 1.0)
    else:
        value_range = tuple(bundle.value_range) if bundle.value_range else (-1e9, 1e9)
    if size is not None and tuple(size) != tuple(bundle.input_shape[:2]):
        layers.append(keras.layers.Resizing(*size, name="resizing"))
    layers += augmentation_layers(entries, augmentation_strength, seed=seed,
                                  value_range=value_range)
    if normalize:
        norm = keras.layers.Normalization(axis=-1, name="normalization")
        train = bundle.train
        if bundle.batch_size is None:  # a bundle made by hand: batches of unknown size
            train = train.unbatch().batch(256)
        batches = max(1, -(-ADAPT_MAX_EXAMPLES // (bundle.batch_size or 256)))
        xs = train.take(batches).map(lambda x, y: tf.cast(x, tf.float32) * scale,
                                     num_parallel_calls=tf.data.AUTOTUNE)
        norm.adapt(xs)
        layers.append(norm)
    return layers
