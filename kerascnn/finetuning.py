"""Fine-tune a pretrained backbone in two phases, fastai style, in Keras 3.

The model takes raw pixels of any size and channel count:

    Input(raw H, W, C) -> Resizing -> to RGB -> the backbone's own preprocessing
        -> backbone(include_top=False, training=False) -> GlobalAveragePooling2D
        -> Dropout -> Dense(num_classes, softmax)

Phase 1 trains the new head with the backbone frozen. Phase 2 unfreezes the
top layers or blocks of the backbone and trains them at a lower learning rate.
Every `BatchNormalization` layer of the backbone stays in inference mode in both
phases (the backbone is called with `training=False` and its BatchNorm layers
are never trainable): updating ImageNet's moving statistics with a few small
batches of a new dataset is the classic way fine-tuning quietly ruins a model.

Per-group (discriminative) learning rates are not offered: Keras 3 optimizers
have one learning rate for all variables, and the ways around that (several
optimizers in a custom `train_step`, or scaling gradients per variable) do not
survive `model.save`/`compile` cleanly. Unfreezing fewer blocks at a lower rate
is the supported alternative.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

# How each family of keras.applications expects its pixels (see the
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
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
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
    import keras

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
        ValueError: the name is not a known backbone (the message lists them).
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a name (str). Received: backbone={name!r}")
    key = name.strip().lower()
    if key in BACKBONES:
        return BACKBONES[key]
    for backbone in BACKBONES.values():
        if _squash(backbone.application) == _squash(key):
            return backbone
    apps = _applications()
    attr = apps.get(_squash(key))
    if attr is None:
        raise ValueError(
            f"Unknown backbone {name!r}; allowed: {', '.join(list_backbones())}. "
            f"Received: backbone={name!r}")
    import keras

    module = getattr(keras.applications, attr).__module__.rsplit(".", 1)[-1]
    mode = _MODULE_PREPROCESSING.get(module)
    if mode is None:
        raise ValueError(
            f"Backbone {name!r} ({attr}) has no known preprocessing; allowed: "
            f"{', '.join(list_backbones())}. Received: backbone={name!r}")
    return Backbone(_squash(key), attr, mode, min_size=_MIN_SIZE.get(module, 32),
                    default_size=max(96, _MIN_SIZE.get(module, 32)))


# ---------------------------------------------------------------------------
# Argument checks (pure Python, before anything is built)
# ---------------------------------------------------------------------------


def _check_weights(weights: str | None) -> str | None:
    """`"imagenet"`, `None`/`"none"`, or an existing file path."""
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return None
    if not isinstance(weights, (str, Path)):
        raise TypeError(f"weights must be 'imagenet', 'none' or a file path. "
                        f"Received: weights={weights!r}")
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            f"Weights file not found; weights must be 'imagenet', 'none' or the path of a "
            f"weights file (.weights.h5 or .h5). Received: weights={str(weights)!r}")
    return str(path.resolve())


def _check_image_size(image_size, backbone: Backbone) -> tuple[int, int]:
    if image_size is None:
        return (backbone.default_size, backbone.default_size)
    try:
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            size = (image_size, image_size)
        else:
            size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be an int or (height, width). "
                        f"Received: image_size={image_size!r}") from None
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width). "
                         f"Received: image_size={image_size!r}")
    if min(size) < backbone.min_size:
        raise ValueError(
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
        ValueError: anything else.
    """
    if isinstance(unfreeze, bool):
        raise TypeError(f"unfreeze must be 'all', an int or 'N blocks'. Received: "
                        f"unfreeze={unfreeze!r}")
    if isinstance(unfreeze, int):
        if unfreeze < 0:
            raise ValueError(f"unfreeze must be >= 0. Received: unfreeze={unfreeze!r}")
        return unfreeze, "layers"
    text = str(unfreeze).strip().lower()
    if text == "all":
        return None, "layers"
    if text == "none":
        return 0, "layers"
    match = _UNFREEZE.match(text)
    if not match:
        raise ValueError(
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


def _is_batch_norm(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def _has_weights(layer) -> bool:
    """Whether a layer has weights that training changes (not BatchNorm or Normalization)."""
    import keras

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
        ValueError: `unfreeze` asks for more layers or blocks than the backbone has.
    """
    count, unit = parse_unfreeze(unfreeze)
    weighted = [layer for layer in backbone_model.layers if _has_weights(layer)]
    if unit == "blocks":
        blocks = backbone_blocks(backbone_model)
        if count is not None and count > len(blocks):
            raise ValueError(
                f"unfreeze asks for {count} blocks but {backbone_model.name} has "
                f"{len(blocks)}; allowed: 0 to {len(blocks)} blocks, or 'all'. "
                f"Received: unfreeze={unfreeze!r}")
        chosen = blocks if count is None else (blocks[len(blocks) - count:] if count else [])
        return [layer for block in chosen for layer in block if _has_weights(layer)]
    if count is not None and count > len(weighted):
        raise ValueError(
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
        import h5py
    except ImportError:  # pragma: no cover - h5py ships with Keras
        return None
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
    """Load a local weights file into the backbone, or raise one clear ValueError."""
    expected = sorted(tuple(int(s) for s in w.shape) for w in backbone_model.weights)
    found = _weight_shapes_in_file(path)
    what = (f"the file does not hold the weights of {backbone.name} without its top "
            f"(include_top=False)")
    hint = (f"Use a file saved from keras.applications.{backbone.application}(include_top=False"
            f", ...).save_weights(...), or weights='imagenet'/'none'. Received: weights={path!r}")
    if found is None:
        raise ValueError(f"Weights file is not an HDF5 weights file (.weights.h5 or .h5). "
                         f"{hint}")
    if sorted(found) != expected:
        missing = len(expected) - len(found)
        detail = (f"{len(found)} arrays in the file, {len(expected)} in the backbone"
                  if missing else "array shapes differ")
        raise ValueError(f"Weights do not fit the backbone: {what} ({detail}). {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone_model.load_weights(path)
    except Exception as e:  # noqa: BLE001 - anything Keras raises here is a mismatched file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"Weights do not fit the backbone: {what} ({first}). {hint}") from None
    if backbone.application.startswith("EfficientNet") and not backbone.application.startswith(
            "EfficientNetV2"):
        _fix_efficientnet_normalization(backbone_model)


def _fix_efficientnet_normalization(backbone_model) -> None:
    """Undo the std-for-variance quirk of ImageNet EfficientNet checkpoints loaded from a file."""
    import keras
    import numpy as np

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
        ValueError: unknown backbone, too small image size, weights that cannot
            be downloaded or do not fit.
    """
    import keras

    spec = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
    weights = _check_weights(weights)
    height, width = _check_image_size(image_size, spec)
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
            raise ValueError(f"{spec.application} refused its ImageNet weights: "
                             f"{' '.join(str(e).split())[:300]}. Received: weights='imagenet', "
                             f"image_size={(height, width)}") from None
        except Exception as e:  # noqa: BLE001 - a failed download, in whatever form
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(
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
        raise ValueError(f"{spec.application} cannot take input {height}x{width}: "
                         f"{' '.join(str(e).split())[:300]}. Received: image_size="
                         f"{(height, width)}") from None
    if weights is not None:
        _load_weights_file(model, weights, spec)
    return model


def _channel_kernel(channels: int, bgr: bool):
    """A fixed 1x1 convolution kernel mapping `channels` input channels to RGB (or BGR)."""
    import numpy as np

    kernel = np.zeros((1, 1, channels, 3), dtype="float32")
    if channels in (1, 2):  # gray (+ alpha): copy gray to all three
        kernel[0, 0, 0, :] = 1.0
    else:  # RGB (+ alpha): keep RGB, drop the rest
        for out in range(3):
            kernel[0, 0, (2 - out) if bgr else out, out] = 1.0
    return kernel


def _preprocessing_layers(channels: int, mode: str) -> list:
    """Layers turning `channels`-channel [0, 255] pixels into what the backbone expects."""
    import keras
    import numpy as np

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
        ValueError: bad backbone, weights, input shape, image size, classes or dropout.

    Example:
        >>> model = build_model("mobilenet_v2", input_shape=(28, 28, 1), num_classes=10)
        >>> model.get_layer("backbone").input_shape  # doctest: +SKIP
    """
    spec = get_backbone(backbone)
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be (height, width, channels). "
                        f"Received: input_shape={input_shape!r}") from None
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"Fine-tuning takes images: input_shape must be (height, width, "
                         f"channels) of positive ints. Received: input_shape={input_shape!r}")
    if input_shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"Images must have 1, 2, 3 or 4 channels (gray, gray+alpha, RGB, "
                         f"RGBA). Received: input_shape={input_shape!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    size = _check_image_size(image_size, spec)

    import keras

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
            if _is_batch_norm(layer):
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
        layer.trainable = layer.name in names and not _is_batch_norm(layer)
    return [layer.name for layer in chosen]


# ---------------------------------------------------------------------------
# The two-phase run
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune()` returns.

    Attributes:
        model: the trained `keras.Model` (raw pixels in, class probabilities out).
        history: list of dicts, one per epoch of both phases (`phase`, `epoch`, metrics).
        metrics: dict with `test_accuracy` and `test_loss` (and per-phase figures).
        output_dir: Path or None. The run folder, when one was written.
        config: dict. The resolved configuration.
    """

    model: Any
    history: list[dict]
    metrics: dict
    output_dir: Path | None
    config: dict


class _EpochLog:
    """A Keras callback that logs one line per epoch (the CLI shows it without -v)."""

    def __new__(cls, phase: str):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                figures = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()
                                    if isinstance(v, (int, float)))
                logger.info("%s epoch %d: %s", phase, epoch + 1, figures)

        return EpochLog()


def _check_positive_float(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number. Received: {name}={value!r}") from None
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    return value


def _check_epochs(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0. Received: {name}={value!r}")
    return value


def finetune(
    backbone: str = "mobilenet_v2",
    *,
    dataset: Any = "fashion_mnist_sample",
    weights: str | None = "imagenet",
    image_size=None,
    epochs: int = 3,
    fine_tune_epochs: int = 3,
    unfreeze: int | str = "all",
    learning_rate: float = 1e-3,
    fine_tune_lr: float = 1e-4,
    optimizer: str = "adam",
    dropout: float = 0.2,
    batch_size: int = 32,
    validation_split: float = 0.1,
    data_dir: str | None = None,
    color_mode: str | None = None,
    download: bool = False,
    output_dir: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    verbose: int | str = 0,
    command_line: Sequence[str] | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on a dataset in two phases.

    Phase 1 trains the new head for `epochs` at `learning_rate` with the
    backbone frozen. Phase 2 unfreezes the top of the backbone (`unfreeze`),
    keeps every BatchNormalization layer in inference mode, recompiles at
    `fine_tune_lr` and trains `fine_tune_epochs` more. Then the model is
    evaluated once on the test split.

    Args:
        backbone: str. A name from `list_backbones()`. Defaults to `"mobilenet_v2"`.
        dataset: str or DatasetBundle. Anything `kerascnn.load_dataset` takes, or
            a loaded bundle. Defaults to `"fashion_mnist_sample"`.
        weights: str or None. `"imagenet"` (downloaded by Keras: needs a network
            or Keras's cache), `None`/`"none"`, or a local weights file of the
            backbone without its top. Defaults to `"imagenet"`.
        image_size: int or (int, int). The backbone's input size; images are
            resized inside the model. Defaults to the backbone's default (96).
        epochs: int. Phase 1 epochs (head only). Defaults to 3.
        fine_tune_epochs: int. Phase 2 epochs. Defaults to 3.
        unfreeze: int or str. What phase 2 trains: `"all"`, N (the top N
            layers with weights) or `"N blocks"`. Defaults to `"all"`, as fastai does.
        learning_rate: float. Phase 1 learning rate. Defaults to 1e-3.
        fine_tune_lr: float. Phase 2 learning rate, ten times lower than phase 1's.
            Defaults to 1e-4.
        optimizer: str. `adam`, `adamw`, `sgd`, `rmsprop` or `nadam`. Defaults to `"adam"`.
        dropout: float. Dropout before the classifier. Defaults to 0.2.
        batch_size, validation_split, data_dir, color_mode, download: passed to
            `kerascnn.load_dataset` when `dataset` is a name.
        output_dir: str or None. The run folder to write (`spec.yaml`,
            `config.yaml`, `history.csv`, `model.keras`, `metrics.json`,
            `manifest.json`). Defaults to `None` (nothing written).
        overwrite: bool. Replace results in `output_dir`. Defaults to `False`.
        seed: int. Random seed. Defaults to 0.
        verbose: int or "auto". Keras progress output. Defaults to 0.
        command_line: list of str. Recorded in the manifest. Defaults to `sys.argv`.

    Returns:
        A `FinetuneResult`.

    Raises:
        ValueError: any bad argument, before anything is trained or written.

    Example:
        >>> result = finetune("mobilenet_v2", weights="mobilenet_v2_notop.weights.h5",
        ...                   epochs=2, fine_tune_epochs=2, unfreeze="2 blocks")  # doctest: +SKIP
        >>> result.metrics["test_accuracy"]  # doctest: +SKIP
    """
    spec = get_backbone(backbone)
    weights = _check_weights(weights)
    size = _check_image_size(image_size, spec)
    parse_unfreeze(unfreeze)
    epochs = _check_epochs("epochs", epochs)
    fine_tune_epochs = _check_epochs("fine_tune_epochs", fine_tune_epochs)
    learning_rate = _check_positive_float("learning_rate", learning_rate)
    fine_tune_lr = _check_positive_float("fine_tune_lr", fine_tune_lr)
    if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    from kerascnn import runs

    out = runs.prepare_output_dir(output_dir, overwrite=overwrite) if output_dir else None

    import keras

    from kerascnn.runs import history_to_csv as _history_rows_to_csv
    from kerascnn.training import compile_model, make_optimizer

    make_optimizer(optimizer, learning_rate)  # validates the name before any work
    keras.utils.set_random_seed(seed)
    from kerascnn.data import as_bundle

    # images of one size keep their raw size (resized inside the model);
    # a folder of mixed sizes is resized to `size` while loading
    bundle = as_bundle(dataset, validation_split=validation_split, batch_size=batch_size,
                       image_size=size, data_dir=data_dir, color_mode=color_mode,
                       download=download, seed=seed)
    if getattr(bundle, "kind", "image") != "image":
        raise ValueError(f"Fine-tuning an ImageNet backbone needs images; this dataset holds "
                         f"{bundle.kind} data of shape {tuple(bundle.input_shape)}. "
                         f"Received: dataset={getattr(bundle, 'source', dataset)!r}")
    value_range = getattr(bundle, "value_range", None)
    input_scale = 255.0 if value_range is not None and max(value_range) <= 1.0 else 1.0
    model = build_model(spec.name, input_shape=bundle.input_shape,
                        num_classes=bundle.num_classes, weights=weights, image_size=size,
                        dropout=dropout, input_scale=input_scale)
    base = model.get_layer("backbone")
    unfrozen = [layer.name for layer in layers_to_unfreeze(base, unfreeze)]  # validates count

    config = {
        "backbone": spec.name, "weights": weights or "none", "image_size": list(size),
        "epochs": epochs, "fine_tune_epochs": fine_tune_epochs, "unfreeze": unfreeze,
        "learning_rate": learning_rate, "fine_tune_lr": fine_tune_lr, "optimizer": optimizer,
        "dropout": dropout, "batch_size": batch_size, "validation_split": validation_split,
        "dataset": dataset if isinstance(dataset, str) else getattr(bundle, "source", None),
        "seed": seed,
    }
    backbone_config = {
        "backbone": spec.name, "application": spec.application, "weights": weights or "none",
        "input_shape": list(bundle.input_shape), "image_size": list(size),
        "num_classes": int(bundle.num_classes), "dropout": dropout,
        "preprocessing": spec.preprocessing, "unfreeze": unfreeze,
        "unfrozen_layers": len(unfrozen), "batch_norm": "inference",
    }

    validation = getattr(bundle, "validation", None)
    if validation is not None and getattr(bundle, "num_validation", 1) == 0:
        validation = None
    history: list[dict] = []

    def run_phase(phase: str, n_epochs: int, lr: float, initial_epoch: int) -> None:
        compile_model(model, optimizer=optimizer, learning_rate=lr)
        callbacks = [keras.callbacks.TerminateOnNaN(), _EpochLog(phase)]
        trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
        logger.info("%s: %d epochs at learning rate %g, %d trainable parameters",
                    phase, n_epochs, lr, trainable)
        h = model.fit(bundle.train, validation_data=validation, epochs=initial_epoch + n_epochs,
                      initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
        for i, epoch in enumerate(h.epoch):
            row = {"epoch": epoch, "phase": phase, "learning_rate": lr}
            row.update({k: float(v[i]) for k, v in h.history.items() if k != "learning_rate"})
            history.append(row)

    freeze_backbone(model)
    if epochs:
        run_phase("head", epochs, learning_rate, 0)
    unfreeze_backbone(model, unfreeze)
    if fine_tune_epochs and unfrozen:
        run_phase("fine_tune", fine_tune_epochs, fine_tune_lr, epochs)
    elif fine_tune_epochs:
        logger.warning("unfreeze=%r leaves nothing to fine-tune; phase 2 skipped", unfreeze)
    if not history:  # nothing trained: compile for the evaluation
        compile_model(model, optimizer=optimizer, learning_rate=fine_tune_lr)

    test_loss, test_accuracy = model.evaluate(bundle.test, verbose=0, return_dict=False)[:2]
    metrics = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss)}
    for row in history[::-1]:
        if "val_accuracy" in row:
            metrics.setdefault("val_accuracy", row["val_accuracy"])
    if any(not math.isfinite(row.get("loss", 0.0)) for row in history):
        metrics["diverged"] = True
        logger.warning("The loss became NaN and training stopped early; try a lower "
                       "learning rate or fine_tune_lr")
    logger.debug("test accuracy %.4f, test loss %.4f", test_accuracy, test_loss)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        runs.write_yaml(out / "spec.yaml", backbone_config)
        runs.write_yaml(out / "config.yaml", config)
        runs.atomic_write_text(out / "history.csv", _history_rows_to_csv(history))
        runs.save_model(model, out / "model.keras", class_names=bundle.class_names,
                        finetune=backbone_config)
        runs.write_json(out / "metrics.json", metrics)
        runs.write_json(out / "manifest.json", runs.manifest(
            seed=seed, dataset_fingerprint=getattr(bundle, "fingerprint", None),
            command_line=command_line, command="finetune", finetune=backbone_config,
            dataset=bundle.describe() if hasattr(bundle, "describe") else None))
    return FinetuneResult(model=model, history=history, metrics=metrics, output_dir=out,
                          config=config)

