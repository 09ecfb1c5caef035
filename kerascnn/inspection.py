"""What a trained image classifier looks like from outside: inputs, classes, layers.

The one place that answers, for `evaluate`, `predict`, `export` and the
pictures: which `keras.Model` a path names (`resolve_model`), what one input
image must look like (`image_input_shape`), how many classes it predicts and
their names (`num_classes`, `class_names_of`), whether it outputs
probabilities or logits (`outputs_probabilities`, `logit_model`), and where its
convolutions and feature maps are (`conv_layers`, `last_conv_layer`,
`feature_map_layers`, `feature_map_model`).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

import keras

from kerascnn.checks import InputError, is_int, received
from kerascnn.runs import load_model

logger = logging.getLogger(__name__)

CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
               keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
               keras.layers.Conv2DTranspose)
# layers after a convolution that keep its feature map's shape: the map Grad-CAM
# weights is taken after them (after the non-linearity, before any pooling)
SHAPE_KEEPING_LAYERS = (keras.layers.BatchNormalization, keras.layers.Activation,
                        keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                        keras.layers.PReLU)


# ---------------------------------------------------------------------------
# The model, its input and its classes
# ---------------------------------------------------------------------------


def resolve_model(model: Any) -> keras.Model:
    """A `keras.Model` from a model or a path (`.keras`, run folder, tune folder).

    Paths are loaded with `kerascnn.runs.load_model` in Keras safe mode,
    without compiling.

    Raises:
        InputError: the path is not a Keras model, or `model` is neither a
            model nor a path.
    """
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, compile=False)
    if not isinstance(model, keras.Model):
        raise InputError(f"Expected a keras.Model or the path of a '.keras' file, run folder or "
                         f"tune folder. Received: model of type {type(model).__name__}")
    return model


def image_input_shape(model: keras.Model) -> tuple[int | None, int | None, int]:
    """`(height, width, channels)` of one input image (no batch axis).

    Height and width are `None` for a model that takes any size.

    Raises:
        InputError: the model does not take one batch of 2D images.
    """
    inputs = getattr(model, "inputs", None) or []
    shape = tuple(inputs[0].shape) if inputs else ()
    if len(inputs) != 1 or len(shape) != 4 or shape[-1] is None:
        got = shape[1:] if len(inputs) == 1 else [tuple(i.shape) for i in inputs]
        raise InputError("The model must take one batch of 2D images (height, width, "
                         f"channels). Received: input_shape={got}")
    return shape[1], shape[2], int(shape[3])


def num_classes(model: keras.Model) -> int:
    """The width of the model's one output (1 for a one-unit binary classifier).

    Raises:
        InputError: the model has not exactly one output of shape
            `(batch, classes)`.
    """
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        shapes = [tuple(o.shape) for o in outputs]
        raise InputError("The model must be a classifier with one output of shape "
                         f"(batch, classes). Received: output_shapes={shapes}")
    return int(outputs[0].shape[-1])


def class_names_of(model: keras.Model, classes: int | None = None) -> list[str]:
    """Class names stored with a kerascnn model, else `["0", "1", ...]`.

    A one-unit (sigmoid or logit) binary classifier has two classes.

    Args:
        model: the model.
        classes: int, optional. The width of its output. Defaults to
            `num_classes(model)`.
    """
    n = num_classes(model) if classes is None else classes
    n = 2 if n == 1 else n
    names = (getattr(model, "kerascnn_metadata", None) or {}).get("class_names")
    if names and len(names) == n:
        return [str(c) for c in names]
    if names:
        logger.warning("The model stores %d class names but predicts %d classes; "
                       "using class ids instead.", len(names), n)
    return [str(i) for i in range(n)]


def check_class_index(model: keras.Model, class_index: Any) -> int | None:
    """`class_index` as an int, checked against the model's outputs (`None` passes).

    Raises:
        InputError: not an integer, or outside `0 .. classes - 1`.
    """
    if class_index is None:
        return None
    if not is_int(class_index):
        raise InputError(f"The class must be an integer index. {received('class', class_index)}")
    n = num_classes(model)  # the output's width: a class score to explain for each
    class_index = int(class_index)
    if not 0 <= class_index < n:
        raise InputError(f"The class must be an index from 0 to {n - 1} (the model has {n} "
                         f"class outputs). Received: class={class_index}")
    return class_index


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation or ""))


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether the model's output already is a probability (softmax or sigmoid)."""
    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or \
        _activation_name(last) in ("softmax", "sigmoid")


def logit_model(model: keras.Model, target=None) -> tuple[keras.Model, Callable, bool]:
    """A model to the class scores before the softmax, for gradients.

    A saturated softmax has near-zero gradients, so Grad-CAM and saliency
    differentiate the logits: for a final softmax `Dense` they are recomputed
    from its kernel; for a final softmax `Activation` (or `Softmax`) its input
    is used; otherwise the output is taken as it is.

    Args:
        model: the classifier.
        target: a layer, optional. Its output (in `model`'s graph) comes first.

    Returns:
        `(probe, head, logits)`: `probe` maps the input to `[target output,
        head input]` (or to the head input alone without `target`), `head`
        maps the head input to the class scores, and `logits` tells whether
        those scores are logits (False: the model's own outputs, which may be
        probabilities).
    """
    last = model.layers[-1]
    softmax = _activation_name(last) == "softmax"
    outputs = [outer_output(target)] if target is not None else []
    if isinstance(last, keras.layers.Dense) and softmax:
        def head(x):
            x = keras.ops.cast(x, last.kernel.dtype)
            y = keras.ops.matmul(x, last.kernel)
            return y + last.bias if last.use_bias else y
        outputs.append(last.input)
        logits = True
    elif isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and softmax):
        def head(x):
            return x
        outputs.append(last.input)
        logits = True
    else:
        def head(x):
            return x
        outputs.append(model.outputs[0])
        logits = not outputs_probabilities(model)
    probe = keras.Model(model.inputs[0], outputs if len(outputs) > 1 else outputs[0])
    return probe, head, logits


# ---------------------------------------------------------------------------
# Convolutions and feature maps
# ---------------------------------------------------------------------------


def conv_layers(model: keras.Model, *, recursive: bool = True) -> list:
    """The model's convolution layers in order (nested models included if `recursive`)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, CONV_LAYERS):
            found.append(layer)
        elif recursive and isinstance(layer, keras.Model):
            found.extend(conv_layers(layer, recursive=True))
    return found


def contains_conv(layer) -> bool:
    """Whether `layer` is a convolution or a nested model holding one."""
    if isinstance(layer, CONV_LAYERS):
        return True
    return isinstance(layer, keras.Model) and bool(conv_layers(layer))


def require_conv(model: keras.Model, what: str) -> None:
    """Refuse a model without convolution layers for `what` (e.g. "Grad-CAM")."""
    if not conv_layers(model):
        names = ", ".join(layer.name for layer in model.layers[:8])
        more = ", ..." if len(model.layers) > 8 else ""
        raise InputError(f"{what} needs a model with convolution layers; this one has none "
                         f"(layers: {names}{more}). Received: model={model.name!r}")


def outer_output(layer):
    """A layer's output tensor in the graph of the model that holds it.

    A nested model's `.output` belongs to its own graph; in the outer graph
    its output is that of the node created when the outer model called it.
    """
    nodes = getattr(layer, "_inbound_nodes", None) if isinstance(layer, keras.Model) else None
    if nodes:
        outputs = nodes[-1].output_tensors
        return outputs[0] if len(outputs) == 1 else outputs
    return layer.output


def output_rank(layer) -> int:
    """The rank of a layer's output (4 for a 2D feature map), -1 when it has none."""
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return -1


def last_conv_layer(model: keras.Model, name: str | None = None):
    """The feature-map layer a class activation map weights.

    Without a name: the last top-level layer that is (or contains) a 2D
    convolution, then forward through the batch-norm and activation layers
    that keep its shape, so the map is taken after the non-linearity and
    before any pooling (as in the Keras Grad-CAM example).

    Args:
        model: the model.
        name: str, optional. A layer with a 2D feature map, by name.

    Raises:
        InputError: no such layer, a layer without a 2D feature map, or a
            model without 2D convolutions.
    """
    if name is not None:
        try:
            chosen = model.get_layer(name)
        except ValueError:
            names = [layer.name for layer in model.layers if output_rank(layer) == 4
                     and not isinstance(layer, keras.layers.InputLayer)]
            raise InputError(f"No layer named {name!r} with a 2D feature map; allowed: "
                             f"{', '.join(names)}. {received('layer', name)}") from None
        if output_rank(chosen) != 4:
            raise InputError(f"Grad-CAM needs a layer with a 2D feature map (batch, h, w, c). "
                             f"Received: layer={name!r} with output "
                             f"{tuple(chosen.output.shape)}")
        return chosen
    require_conv(model, "Grad-CAM")
    layers = model.layers
    last = max((i for i, layer in enumerate(layers)
                if contains_conv(layer) and output_rank(layer) == 4), default=None)
    if last is None:
        raise InputError("Grad-CAM needs a convolution with a 2D feature map (batch, h, w, c). "
                         f"Received: model={model.name!r}")
    target = layers[last]
    for nxt in layers[last + 1:]:
        if isinstance(nxt, SHAPE_KEEPING_LAYERS) and \
                tuple(nxt.output.shape) == tuple(target.output.shape):
            target = nxt
        else:
            break
    return target


def feature_map_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """One layer per block for feature maps: `(label, layer)`.

    kerascnn models name their layers `block{b}_*`; each block is shown by
    its last 2D layer before the pool (the activation after the block's last
    convolution). Other models: every top-level convolution (or nested model
    holding convolutions).
    """
    blocks: dict[int, Any] = {}
    for layer in model.layers:
        match = re.match(r"block(\d+)_", layer.name)
        if match and output_rank(layer) == 4 and not layer.name.endswith("_pool"):
            blocks[int(match.group(1))] = layer
    if blocks:
        return [(f"block{b}", blocks[b]) for b in sorted(blocks)]
    return [(layer.name, layer) for layer in model.layers
            if contains_conv(layer) and output_rank(layer) == 4]


def feature_map_model(model: keras.Model, layers: list) -> keras.Model:
    """A model from `model`'s input to the outputs of `layers` (a list, in order)."""
    return keras.Model(model.inputs[0], [outer_output(layer) for layer in layers])
