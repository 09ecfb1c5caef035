"""Preprocessing inside the model: rescale, resize, augment, normalize.

`preprocessing_layers(bundle)` returns Keras layers that go right after the
model's `Input`, so that a saved model takes raw values (uint8 pixels) and
does its own preprocessing at inference:

1. `Rescaling(1/255)` for uint8 pixels (float signals and volumes are left as they are);
2. `Resizing(height, width)` when the size the network sees differs from the raw size;
3. the augmentation layers (`kerascnn.augment`; active only in training);
4. `Normalization` adapted on the training split, when `normalize=True`
   (after augmentation, so contrast works on [0, 1] pixels and padding is black).
"""

from __future__ import annotations

from typing import Any, Sequence

from kerascnn.data.pipeline import _check_image_size

ADAPT_MAX_EXAMPLES = 20000  # Normalization statistics from at most this many training examples


def _target_size(bundle, image_size) -> tuple[int, int] | None:
    size = _check_image_size(image_size) if image_size is not None else bundle.image_size
    if size is not None and bundle.kind != "image":
        raise ValueError(f"image_size applies to images only; this {bundle.kind} data has "
                         f"shape {bundle.input_shape}. Received: image_size={image_size!r}")
    return size


def network_input_shape(bundle, image_size: int | Sequence[int] | None = None
                        ) -> tuple[int, ...]:
    """The shape the CNN body sees after `preprocessing_layers(bundle, image_size=...)`.

    Args:
        bundle: a `DatasetBundle`.
        image_size: int, `(height, width)` or None. Defaults to None
            (`bundle.image_size`, else the raw size).

    Returns:
        `bundle.input_shape` with height and width replaced by the image size:
        use it as the spec's `input_shape`.
    """
    size = _target_size(bundle, image_size)
    if size is None:
        return tuple(bundle.input_shape)
    return (*size, bundle.input_shape[-1])


def preprocessing_layers(
    bundle,
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
        ValueError: for image sizes or augmentation on signals/volumes, or a bad
            augmentation list.
    """
    from kerascnn.augment import augmentation_layers, validate_augmentation

    size = _target_size(bundle, image_size)
    entries = validate_augmentation(augmentation)
    if entries and bundle.kind != "image":
        raise ValueError(f"augmentation applies to images only; this {bundle.kind} data has "
                         f"shape {bundle.input_shape}. Received: augmentation="
                         f"{[e['name'] for e in entries]!r}")
    import keras

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
        import tensorflow as tf

        norm = keras.layers.Normalization(axis=-1, name="normalization")
        batches = max(1, -(-ADAPT_MAX_EXAMPLES // bundle.batch_size))
        xs = bundle.train.take(batches).map(lambda x, y: tf.cast(x, tf.float32) * scale,
                                            num_parallel_calls=tf.data.AUTOTUNE)
        norm.adapt(xs)
        layers.append(norm)
    return layers
