"""Pretrained backbones for fine-tuning: which exist, how to build and load them, their blocks.

Any `keras.applications` model works by name; the four documented ones
(`vgg16`, `resnet50`, `mobilenet_v2`, `efficientnet_b0`) come first. Each
family expects its pixels its own way (`preprocessing`: `"caffe"`, `"tf"`,
`"torch"` or `"none"`), which `kerascnn.finetuning.build_model` puts inside
the model.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from kerascnn import checks
from kerascnn.checks import InputError

logger = logging.getLogger(__name__)

# `preprocess_input` of each module): "caffe" = RGB->BGR and ImageNet mean
# subtraction; "tf" = scale to [-1, 1]; "torch" = scale to [0, 1] and ImageNet
# mean/std; "none" = the model preprocesses raw [0, 255] pixels itself.
_MODULE_PREPROCESSING = {
    "vgg16": "caffe", "vgg19": "caffe", "resnet": "caffe",
    "resnet_v2": "tf", "mobilenet": "tf", "mobilenet_v2": "tf", "inception_v3": "tf",
    "inception_resnet_v2": "tf", "xception": "tf", "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none", "regnet": "none",
    "mobilenet_v3": "none",
}
# keras.applications' EfficientNet ImageNet checkpoints store the standard
# deviation where the Normalization layer expects the variance; Keras adds a
# correcting Rescaling only for weights="imagenet" (efficientnet.py).
_EFFICIENTNET_STDDEV = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A pretrained network usable as a feature extractor.

    Attributes:
        name: str. kerascnn's name, e.g. `"mobilenet_v2"`.
        application: str. The `keras.applications` constructor, e.g. `"MobileNetV2"`.
        preprocessing: str. `"caffe"`, `"tf"`, `"torch"` or `"none"` (see module docs).
        min_size: int. The smallest input height/width the network accepts.
        default_size: int. The input size used when none is given.
    """

    name: str
    application: str
    preprocessing: str
    min_size: int = 32
    default_size: int = 96


# The backbones kerascnn documents and tests. Any other keras.applications
# model also works by name (e.g. "densenet121", "resnet50_v2").
BACKBONES = {
    "vgg16": Backbone("vgg16", "VGG16", "caffe"),
    "resnet50": Backbone("resnet50", "ResNet50", "caffe"),
    "mobilenet_v2": Backbone("mobilenet_v2", "MobileNetV2", "tf"),
    "efficientnet_b0": Backbone("efficientnet_b0", "EfficientNetB0", "none"),
}
_MIN_SIZE = {"inception_v3": 75, "inception_resnet_v2": 75, "xception": 71}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _applications() -> dict[str, str]:
    """squashed name -> keras.applications constructor, for every model Keras ships."""
    return {
        _squash(attr): attr for attr in dir(keras.applications)
        if attr[:1].isupper() and callable(getattr(keras.applications, attr))
    }


def list_backbones() -> list[str]:
    """Names accepted as `backbone`: the documented four first, then the rest of keras.applications.

    Returns:
        list of str, e.g. `["vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0",
        "convnexttiny", ...]`.
    """
    known = {_squash(b.application) for b in BACKBONES.values()}
    others = sorted(k for k in _applications() if k not in known)
    return list(BACKBONES) + others


def get_backbone(name: str) -> Backbone:
    """Look up a backbone by kerascnn name or any `keras.applications` model name.

    Args:
        name: str. `"mobilenet_v2"`, `"MobileNetV2"`, `"densenet121"`, ...

    Returns:
        A `Backbone`.

    Raises:
        InputError: the name is not a known backbone (the message lists them).
    """
    if not isinstance(name, str):
        raise InputError(f"backbone must be a name (str). Received: backbone={name!r}")
    key = name.strip().lower()
    if key in BACKBONES:
        return BACKBONES[key]
    for backbone in BACKBONES.values():
        if _squash(backbone.application) == _squash(key):
            return backbone
    apps = _applications()
    attr = apps.get(_squash(key))
    if attr is None:
        raise InputError(
            f"Unknown backbone {name!r}; allowed: {', '.join(list_backbones())}. "
            f"Received: backbone={name!r}")
    module = getattr(keras.applications, attr).__module__.rsplit(".", 1)[-1]
    mode = _MODULE_PREPROCESSING.get(module)
    if mode is None:
        raise InputError(
            f"Backbone {name!r} ({attr}) has no known preprocessing; allowed: "
            f"{', '.join(list_backbones())}. Received: backbone={name!r}")
    return Backbone(_squash(key), attr, mode, min_size=_MIN_SIZE.get(module, 32),
                    default_size=max(96, _MIN_SIZE.get(module, 32)))


# ---------------------------------------------------------------------------
# Argument checks (pure Python, before anything is built)
# ---------------------------------------------------------------------------


def check_weights(weights: str | None) -> str | None:
    """`"imagenet"`, `None`/`"none"`, or an existing file path."""
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return None
    if not isinstance(weights, (str, Path)):
        raise InputError(f"weights must be 'imagenet', 'none' or a file path. "
                        f"Received: weights={weights!r}")
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise InputError(
            f"Weights file not found; weights must be 'imagenet', 'none' or the path of a "
            f"weights file (.weights.h5 or .h5). Received: weights={str(weights)!r}")
    return str(path.resolve())


def check_image_size(image_size, backbone: Backbone) -> tuple[int, int]:
    """`checks.check_image_size`, defaulting to the backbone's size and refusing
    sizes below its minimum."""
    if image_size is None:
        return (backbone.default_size, backbone.default_size)
    size = checks.check_image_size(image_size)
    if min(size) < backbone.min_size:
        raise InputError(
            f"Image size {size[0]}x{size[1]} is too small for {backbone.name}: it takes at "
            f"least {backbone.min_size}x{backbone.min_size} (images are resized inside the "
            f"model, so pass a larger --image-size). Received: image_size={image_size!r}")
    return size


_UNFREEZE = re.compile(r"^\s*(\d+)\s*(layers?|blocks?)?\s*$")


def parse_unfreeze(unfreeze: int | str) -> tuple[int | None, str]:
    """Parse `unfreeze`: `"all"`, `N` or `"N layers"` (top N layers with weights), `"N blocks"`.

    Returns:
        `(count, unit)` with `count=None` meaning all, `unit` `"layers"` or `"blocks"`.

    Raises:
        InputError: anything else.
    """
    if isinstance(unfreeze, bool):
        raise InputError(f"unfreeze must be 'all', an int or 'N blocks'. Received: "
                        f"unfreeze={unfreeze!r}")
    if isinstance(unfreeze, int):
        if unfreeze < 0:
            raise InputError(f"unfreeze must be >= 0. Received: unfreeze={unfreeze!r}")
        return unfreeze, "layers"
    text = str(unfreeze).strip().lower()
    if text == "all":
        return None, "layers"
    if text == "none":
        return 0, "layers"
    match = _UNFREEZE.match(text)
    if not match:
        raise InputError(
            f"unfreeze must be 'all', 'none', a number of layers (e.g. 20 or '20 layers') or "
            f"of blocks (e.g. '2 blocks'). Received: unfreeze={unfreeze!r}")
    unit = "blocks" if (match.group(2) or "").startswith("block") else "layers"
    return int(match.group(1)), unit


# ---------------------------------------------------------------------------
# Layers and blocks of a backbone
# ---------------------------------------------------------------------------

_BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),        # resnet, densenet: conv4_block3_...
    re.compile(r"^(block_?\d+[a-z]?)_"),        # vgg, mobilenet_v2 block_1_, effnet block1a_
    re.compile(r"^(expanded_conv(?:_\d+)?)_"),  # mobilenet_v2 block 0, mobilenet_v3
    re.compile(r"^(stem|top)_"),                # efficientnet
    re.compile(r"^(mixed\d+)"),                 # inception (approximate: merge layers)
)


def is_batch_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _has_weights(layer) -> bool:
    """Whether a layer has weights that training changes (not BatchNorm or Normalization)."""
    return bool(layer.weights) and not isinstance(
        layer, (keras.layers.BatchNormalization, keras.layers.Normalization))


def backbone_blocks(backbone_model) -> list[list]:
    """The backbone's layers grouped into blocks, bottom to top.

    A block is the run of consecutive layers whose names share a block prefix
    (`block3_`, `conv4_block2_`, `block_7_`, ...). A layer with weights that
    belongs to no named block (`Conv1`, `Conv_1`) is a block of its own; layers
    without weights join the block before them.
    """
    blocks: list[list] = []
    current_key = None
    for layer in backbone_model.layers:
        key = None
        for pattern in _BLOCK_PATTERNS:
            match = pattern.match(layer.name)
            if match:
                key = match.group(1)
                break
        if key is None:
            if _has_weights(layer) or not blocks:
                key = f"_{layer.name}"
            else:
                key = current_key
        if key != current_key or not blocks:
            blocks.append([])
            current_key = key
        blocks[-1].append(layer)
    # a block is only worth counting if it has something to train
    return [b for b in blocks if any(_has_weights(layer) for layer in b)]


def layers_to_unfreeze(backbone_model, unfreeze: int | str) -> list:
    """The backbone layers that phase 2 trains (never BatchNormalization).

    Raises:
        InputError: `unfreeze` asks for more layers or blocks than the backbone has.
    """
    count, unit = parse_unfreeze(unfreeze)
    weighted = [layer for layer in backbone_model.layers if _has_weights(layer)]
    if unit == "blocks":
        blocks = backbone_blocks(backbone_model)
        if count is not None and count > len(blocks):
            raise InputError(
                f"unfreeze asks for {count} blocks but {backbone_model.name} has "
                f"{len(blocks)}; allowed: 0 to {len(blocks)} blocks, or 'all'. "
                f"Received: unfreeze={unfreeze!r}")
        chosen = blocks if count is None else (blocks[len(blocks) - count:] if count else [])
        return [layer for block in chosen for layer in block if _has_weights(layer)]
    if count is not None and count > len(weighted):
        raise InputError(
            f"unfreeze asks for {count} layers but {backbone_model.name} has {len(weighted)} "
            f"layers with weights (BatchNormalization not counted); allowed: 0 to "
            f"{len(weighted)}, 'N blocks', or 'all'. Received: unfreeze={unfreeze!r}")
    if count is None:
        return weighted
    return weighted[len(weighted) - count:] if count else []


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


def _weight_shapes_in_file(path: str) -> list[tuple[int, ...]] | None:
    """Shapes of every array stored in an HDF5 weights file, or None if it is not HDF5."""
    try:
        with h5py.File(path, "r") as f:
            shapes: list[tuple[int, ...]] = []

            def visit(_name, obj):
                if isinstance(obj, h5py.Dataset) and obj.shape is not None:
                    shapes.append(tuple(int(s) for s in obj.shape))

            f.visititems(visit)
            return shapes
    except OSError:
        return None


def _load_weights_file(backbone_model, path: str, backbone: Backbone) -> None:
    """Load a local weights file into the backbone, or raise one clear `InputError`."""
    expected = sorted(tuple(int(s) for s in w.shape) for w in backbone_model.weights)
    found = _weight_shapes_in_file(path)
    what = (f"the file does not hold the weights of {backbone.name} without its top "
            f"(include_top=False)")
    hint = (f"Use a file saved from keras.applications.{backbone.application}(include_top=False"
            f", ...).save_weights(...), or weights='imagenet'/'none'. Received: weights={path!r}")
    if found is None:
        raise InputError(f"Weights file is not an HDF5 weights file (.weights.h5 or .h5). "
                         f"{hint}")
    if sorted(found) != expected:
        missing = len(expected) - len(found)
        detail = (f"{len(found)} arrays in the file, {len(expected)} in the backbone"
                  if missing else "array shapes differ")
        raise InputError(f"Weights do not fit the backbone: {what} ({detail}). {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone_model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - anything Keras raises here is a mismatched file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(f"Weights do not fit the backbone: {what} ({first}). {hint}") from None
    if backbone.application.startswith("EfficientNet") and not backbone.application.startswith(
            "EfficientNetV2"):
        _fix_efficientnet_normalization(backbone_model)


def _fix_efficientnet_normalization(backbone_model) -> None:
    """Undo the std-for-variance quirk of ImageNet EfficientNet checkpoints loaded from a file."""
    for layer in backbone_model.layers:
        if isinstance(layer, keras.layers.Normalization) and hasattr(layer, "adapt_variance"):
            variance = np.asarray(keras.ops.convert_to_numpy(layer.adapt_variance)).reshape(-1)
            if variance.shape == (3,) and np.allclose(variance, _EFFICIENTNET_STDDEV, atol=1e-4):
                layer.adapt_variance.assign(np.reshape(variance ** 2,
                                                       layer.adapt_variance.shape))
                layer.finalize_state()
                logger.info("EfficientNet ImageNet checkpoint: stored standard deviations "
                            "converted to variances in %s", layer.name)
            return


def build_backbone(backbone: str | Backbone, *, weights: str | None = None,
                   image_size=None):
    """The `keras.applications` model without its top, weights loaded.

    Args:
        backbone: str or Backbone. A name from `list_backbones()`.
        weights: str or None. `"imagenet"` (downloaded by Keras), `None`/`"none"`,
            or the path of a local weights file. Defaults to `None`.
        image_size: int or (int, int). Input height and width. Defaults to the
            backbone's default size.

    Returns:
        A functional `keras.Model` named `"backbone"` taking `(H, W, 3)` images
        already preprocessed the backbone's way.

    Raises:
        InputError: unknown backbone, too small image size, weights that cannot
            be downloaded or do not fit.
    """
    spec = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
    weights = check_weights(weights)
    height, width = check_image_size(image_size, spec)
    constructor = getattr(keras.applications, spec.application)
    kwargs = dict(include_top=False, input_shape=(height, width, 3), name="backbone")
    if spec.application.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = True
    if weights == "imagenet":
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # a stalled connection fails instead of hanging
        try:
            return constructor(weights="imagenet", **kwargs)
        except ValueError as e:
            raise InputError(f"{spec.application} refused its ImageNet weights: "
                             f"{' '.join(str(e).split())[:300]}. Received: weights='imagenet', "
                             f"image_size={(height, width)}") from None
        except Exception as e:  # noqa: BLE001 - a failed download, in whatever form
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(
                f"Could not download the ImageNet weights of {spec.name} ({first}). Offline, "
                f"pass the path of a local weights file instead (saved with keras.applications."
                f"{spec.application}(include_top=False, weights='imagenet').save_weights(PATH) "
                f"on a machine that is online), or weights='none'. "
                f"Received: weights='imagenet'") from None
        finally:
            socket.setdefaulttimeout(previous)
    try:
        model = constructor(weights=None, **kwargs)
    except ValueError as e:
        raise InputError(f"{spec.application} cannot take input {height}x{width}: "
                         f"{' '.join(str(e).split())[:300]}. Received: image_size="
                         f"{(height, width)}") from None
    if weights is not None:
        _load_weights_file(model, weights, spec)
    return model


