"""From what a user gives to what trains: the dataset, the `CNNSpec` fitted to it, the model.

`resolve_spec` turns a preset name, a dict, a spec file, a `CNNSpec` or a
factory `(input_shape, num_classes) -> CNNSpec` (the command line builds
one from its options) into a `CNNSpec` that fits the data; `data_and_spec`
loads the data and resolves the spec against it; `build_model` puts the
data's preprocessing in front of `build_cnn`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras

from kerascnn.builders import build_cnn
from kerascnn.checks import InputError
from kerascnn.data import DatasetBundle, as_bundle, network_input_shape, preprocessing_layers
from kerascnn.files import read_yaml
from kerascnn.presets import get_preset
from kerascnn.spec import CNNSpec

logger = logging.getLogger(__name__)

def resolve_spec(spec_or_preset, *, input_shape: tuple[int, ...], num_classes: int,
                 **fields: Any) -> CNNSpec:
    """A `CNNSpec` from a spec, a dict, a preset name or a spec file, fitted to the data.

    A preset (or a dict/file without `input_shape`/`num_classes`) takes the
    dataset's shape and class count; an explicit spec must agree with them.
    A callable is called as `spec_or_preset(input_shape, num_classes)` and
    must return a `CNNSpec`. `fields` override spec fields.

    Raises:
        InputError: an unusable spec, or one whose classes differ from the data's.
    """
    if spec_or_preset is None:
        spec_or_preset = "simple"
    if callable(spec_or_preset) and not isinstance(spec_or_preset, (CNNSpec, str, dict)):
        made = spec_or_preset(tuple(input_shape), num_classes)
        if not isinstance(made, CNNSpec):
            raise InputError(f"A spec factory must return a CNNSpec. "
                             f"Received: {type(made).__name__}")
        spec_or_preset = made
    if isinstance(spec_or_preset, CNNSpec):
        spec = spec_or_preset.replace(**fields) if fields else spec_or_preset
    elif isinstance(spec_or_preset, dict):
        config = {"input_shape": input_shape, "num_classes": num_classes,
                  **spec_or_preset, **fields}
        spec = CNNSpec.from_dict(config)
    elif isinstance(spec_or_preset, (str, os.PathLike)):
        text = str(spec_or_preset)
        if text.lower().endswith((".yaml", ".yml", ".json")) or os.path.sep in text:
            data = read_yaml(text)
            if isinstance(data, dict) and isinstance(data.get("spec"), dict):
                data = data["spec"]
            if not isinstance(data, dict):
                raise InputError(f"A spec file must hold a mapping of spec fields. "
                                 f"Received: {type(data).__name__} in {text!r}")
            return resolve_spec(data, input_shape=input_shape, num_classes=num_classes,
                                **fields)
        spec = get_preset(text, input_shape=tuple(input_shape), num_classes=num_classes)
        if fields:
            spec = spec.replace(**fields)
    else:
        raise InputError(f"spec must be a CNNSpec, a dict, a preset name or a spec file path. "
                         f"Received: {type(spec_or_preset).__name__}")
    if spec.num_classes != num_classes:
        raise InputError(f"The spec has num_classes={spec.num_classes} but the dataset has "
                         f"{num_classes} classes; set num_classes to match. "
                         f"Received: num_classes={spec.num_classes}")
    return spec


def fit_input_shape(spec: CNNSpec, bundle: DatasetBundle, image_size):
    """The image size that makes the data fit `spec.input_shape`, or `InputError`."""
    net_shape = tuple(network_input_shape(bundle, image_size))
    if tuple(spec.input_shape) == net_shape:
        return image_size
    if image_size is None and len(spec.input_shape) == 3 and len(net_shape) == 3 \
            and spec.input_shape[-1] == net_shape[-1]:
        logger.info("Images of %s are resized to %s inside the model.",
                    "x".join(map(str, net_shape[:2])), "x".join(map(str, spec.input_shape[:2])))
        return tuple(spec.input_shape[:2])
    raise InputError(f"The spec's input_shape {tuple(spec.input_shape)} does not fit the data "
                     f"(network input {net_shape}); change input_shape, or --image-size for "
                     f"images. Received: input_shape={tuple(spec.input_shape)}")


def build_model(spec: CNNSpec, bundle: DatasetBundle, *, image_size=None,
                normalize: bool = False, augmentation_strength: float = 1.0) -> keras.Model:
    """`build_cnn(spec)` with the data's preprocessing in front (raw pixels in)."""
    layers = preprocessing_layers(bundle, image_size=image_size, normalize=normalize,
                                  augmentation=tuple(spec.augmentation),
                                  augmentation_strength=augmentation_strength)
    return build_cnn(spec, preprocessing=layers, raw_input_shape=tuple(bundle.input_shape))


def normalize_image_size(image_size) -> tuple[int, int] | None:
    """`28` or `(28,)` -> `(28, 28)`; `None` stays `None`."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(v) for v in image_size)
    return (size[0], size[0]) if len(size) == 1 else size


def load_data(dataset, *, validation_split, image_size, color_mode, batch_size, data_dir,
              download, seed) -> tuple[DatasetBundle, tuple[int, int] | None]:
    """`(bundle, image_size)`: `kerascnn.data.as_bundle` with the options of `train`."""
    image_size = normalize_image_size(image_size)
    bundle = as_bundle(dataset, validation_split=validation_split, image_size=image_size,
                       color_mode=color_mode, batch_size=batch_size or 128, data_dir=data_dir,
                       download=download, seed=seed)
    return bundle, image_size


def data_and_spec(spec, fields: dict, dataset, *, image_size, **data_options):
    """Load the data, then resolve the spec against its shape and classes.

    Returns:
        `(bundle, spec, image_size)`.
    """
    bundle, image_size = load_data(dataset, image_size=image_size, **data_options)
    spec = resolve_spec(spec, input_shape=tuple(network_input_shape(bundle, image_size)),
                        num_classes=bundle.num_classes, **fields)
    return bundle, spec, fit_input_shape(spec, bundle, image_size)


def clone_with_weights(model: keras.Model) -> keras.Model:
    """A copy of a Keras model with the same weights, or the model if it cannot be cloned."""
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    except Exception:  # noqa: BLE001 - subclassed models: callers restore the original
        logger.debug("Could not clone %s; using the model itself.", model.name)
        return model
