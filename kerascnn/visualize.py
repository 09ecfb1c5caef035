"""What the network sees: filters, feature maps, Grad-CAM, saliency, and training pictures.

Each picture has two halves: a function that computes the numbers
(`filters`, `feature_maps`, `gradcam`, `saliency`, `read_history`) and a
`plot_*` function that draws them and returns a `Plot` holding the figure and
the numbers it drew, so tests (and users) can check a picture by its content.

Figures are built with `matplotlib.figure.Figure` directly, never through
`pyplot`, so nothing here touches the global matplotlib backend: the pictures
are rendered by Agg whatever the user's session uses. Files are written
atomically (temporary file, then rename).

Image models only: the model's input is `(height, width, channels)` and it
takes raw pixel values (kerascnn models rescale inside the model).

Example:

```python
from kerascnn import load_model
from kerascnn import visualize

model = load_model("runs/simple")
cam = visualize.gradcam(model, "shoe.png")
print(cam.class_index, cam.heatmap.shape)
visualize.plot_gradcam(model, "shoe.png", output="shoe_gradcam.png")
```
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from kerascnn.images import load_image
from kerascnn.plotting import (DPI, PICTURE_SUFFIXES, Plot, check_output_path,  # noqa: F401
                               figure, finish, save_figure)

logger = logging.getLogger(__name__)

CAM_METHODS = ("hirescam", "gradcam")
KINDS = ("filters", "feature-maps", "gradcam", "saliency", "learning-curves")
IMAGE_KINDS = ("feature-maps", "gradcam", "saliency")
# history.csv columns that are bookkeeping, not metrics to draw
NOT_METRICS = ("seconds", "time", "duration", "wall_time", "epoch_seconds")
MAX_FILTERS = 64
MAX_CHANNELS_PER_BLOCK = 16


@dataclass
class GradCAM:
    """A Grad-CAM class activation map.

    Attributes:
        heatmap: float32 array `(height, width)` at the input's resolution,
            in [0, 1] (ReLU of the weighted feature maps, divided by its max).
        coarse: the same map at the target layer's resolution.
        class_index: int. The class explained.
        probability: float. The model's probability for that class.
        predicted: int. The model's predicted class.
        layer: str. The name of the layer whose activations were weighted.
        method: str. `"hirescam"` or `"gradcam"` (see `gradcam`).
    """

    heatmap: Any
    coarse: Any
    class_index: int
    probability: float
    predicted: int
    layer: str
    method: str = "hirescam"


# ---------------------------------------------------------------------------
# Inputs: models, images, classes
# ---------------------------------------------------------------------------


def _as_model(model):
    """A Keras model, loading it (safe mode) if given a path."""
    if isinstance(model, (str, os.PathLike)):
        from kerascnn.runs import load_model

        return load_model(model, compile=False)
    if not hasattr(model, "layers") or not hasattr(model, "inputs"):
        raise TypeError(f"Expected a keras.Model or a path to a .keras file. "
                        f"Received: model={type(model).__name__}")
    return model


def image_input_shape(model) -> tuple[int | None, int | None, int]:
    """`(height, width, channels)` of an image model's input.

    Raises:
        ValueError: the model does not take 2D images.
    """
    inputs = getattr(model, "inputs", None) or []
    shape = tuple(inputs[0].shape) if inputs else ()
    if len(inputs) != 1 or len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            "Pictures need a model that takes one batch of 2D images "
            "(height, width, channels). Received: input_shape="
            f"{shape[1:] if shape else None}")
    return shape[1], shape[2], int(shape[3])


def num_classes(model) -> int:
    """The width of the model's (single) output."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        raise ValueError("Pictures need a classifier with one output of shape (batch, classes). "
                         f"Received: output_shapes={[tuple(o.shape) for o in outputs]}")
    return int(outputs[0].shape[-1])


def class_names_of(model) -> list[str]:
    """Class names stored with a kerascnn model, else `["0", "1", ...]`."""
    n = num_classes(model)
    names = (getattr(model, "kerascnn_metadata", None) or {}).get("class_names")
    if names and len(names) == n:
        return [str(c) for c in names]
    return [str(i) for i in range(n)]


def check_class_index(model, class_index: int | None) -> int | None:
    """Validate `class_index` against the model's classes (None passes)."""
    if class_index is None:
        return None
    n = num_classes(model)
    if isinstance(class_index, bool) or not isinstance(class_index, int):
        try:
            import numpy as np

            if isinstance(class_index, np.integer):
                class_index = int(class_index)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"The class must be an integer index. "
                            f"Received: class={class_index!r}") from None
    if not 0 <= class_index < n:
        raise ValueError(f"The class must be an index from 0 to {n - 1} (the model has {n} "
                         f"classes). Received: class={class_index}")
    return class_index


def as_image(image, model):
    """A single image `(height, width, channels)` for `model` from a path or an array."""
    import numpy as np

    shape = image_input_shape(model)
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, shape[:2], shape[2], dtype="float32")
    array = np.asarray(image, dtype="float32")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    expected = tuple(shape)
    if array.ndim != 3 or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        raise ValueError(f"The image array must have the model's input shape {expected}. "
                         f"Received: image.shape={np.asarray(image).shape}")
    return array


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def _conv_classes():
    import keras

    return (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.Conv2DTranspose)


def conv_layers(model, *, recursive: bool = True) -> list:
    """The model's convolution layers in order (nested models included if `recursive`)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, _conv_classes()):
            found.append(layer)
        elif recursive and isinstance(layer, keras.Model):
            found.extend(conv_layers(layer, recursive=True))
    return found


def _contains_conv(layer) -> bool:
    import keras

    if isinstance(layer, _conv_classes()):
        return True
    return isinstance(layer, keras.Model) and bool(conv_layers(layer))


def _require_conv(model, what: str) -> None:
    if not conv_layers(model):
        raise ValueError(f"{what} needs a model with convolution layers; this one has none "
                         f"(layers: {', '.join(l.name for l in model.layers[:8])}"
                         f"{', ...' if len(model.layers) > 8 else ''}). "
                         f"Received: model={model.name!r}")


def _outer_output(layer):
    """A layer's output tensor in the graph of the model that holds it.

    A nested model's `.output` belongs to its own graph; in the outer graph
    its output is that of the node created when the outer model called it.
    """
    import keras

    nodes = getattr(layer, "_inbound_nodes", None) if isinstance(layer, keras.Model) else None
    if nodes:
        outputs = nodes[-1].output_tensors
        return outputs[0] if len(outputs) == 1 else outputs
    return layer.output


def _rank(layer) -> int:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return -1


def gradcam_layer(model, layer: str | None = None):
    """The layer Grad-CAM weights: by name, or the last convolution's activation.

    Without a name: the last top-level layer that is (or contains) a
    convolution, then forward through the batch norm and activation layers
    that keep its shape, so the map is taken after the non-linearity and
    before any pooling (as in the Keras Grad-CAM example).
    """
    import keras

    if layer is not None:
        try:
            chosen = model.get_layer(layer)
        except ValueError:
            names = [l.name for l in model.layers if _rank(l) == 4]
            raise ValueError(f"No layer named {layer!r} with a 2D feature map; allowed: "
                             f"{', '.join(names)}. Received: layer={layer!r}") from None
        if _rank(chosen) != 4:
            raise ValueError(f"Grad-CAM needs a layer with a 2D feature map (batch, h, w, c). "
                             f"Received: layer={layer!r} with output {tuple(chosen.output.shape)}")
        return chosen
    _require_conv(model, "Grad-CAM")
    layers = model.layers
    last = max((i for i, l in enumerate(layers) if _contains_conv(l) and _rank(l) == 4),
               default=None)
    if last is None:
        raise ValueError("Grad-CAM needs a convolution with a 2D feature map (batch, h, w, c). "
                         f"Received: model={model.name!r}")
    passthrough = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
                   keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)
    target = layers[last]
    for nxt in layers[last + 1:]:
        if isinstance(nxt, passthrough) and tuple(nxt.output.shape) == tuple(target.output.shape):
            target = nxt
        else:
            break
    return target


def _block_layers(model) -> list[tuple[str, Any]]:
    """One layer per block for feature maps: `(label, layer)`.

    kerascnn models name their layers `block{b}_*`; each block is shown by
    its last 2D layer before the pool (the activation after the block's last
    convolution). Other models: every top-level convolution (or nested model
    holding convolutions).
    """
    blocks: dict[int, Any] = {}
    for layer in model.layers:
        match = re.match(r"block(\d+)_", layer.name)
        if match and _rank(layer) == 4 and not layer.name.endswith("_pool"):
            blocks[int(match.group(1))] = layer
    if blocks:
        return [(f"block{b}", blocks[b]) for b in sorted(blocks)]
    return [(layer.name, layer) for layer in model.layers
            if _contains_conv(layer) and _rank(layer) == 4]


# ---------------------------------------------------------------------------
# Computations
# ---------------------------------------------------------------------------


def filters(model, layer: str | None = None):
    """The kernels of a convolution layer (by default the first one).

    Args:
        model: keras.Model or path.
        layer: str, optional. A convolution layer's name. Defaults to the
            first 2D convolution with a kernel larger than 1x1 (nested
            models, such as a fine-tuning backbone, included).

    Returns:
        `(layer_name, kernel)`: kernel is a float32 array
        `(kernel_h, kernel_w, in_channels, filters)`.

    Raises:
        ValueError: no (such) 2D convolution layer.
    """
    import numpy as np

    model = _as_model(model)
    _require_conv(model, "Drawing filters")
    convs = [l for l in conv_layers(model) if len(l.get_weights()[0].shape) == 4]
    if layer is None:
        if not convs:
            raise ValueError("Drawing filters needs a 2D convolution layer. "
                             f"Received: model={model.name!r}")
        # a 1x1 convolution first (e.g. gray -> RGB before a pretrained backbone)
        # mixes channels and shows no pattern: take the first spatial kernel
        spatial = [l for l in convs if max(l.get_weights()[0].shape[:2]) > 1]
        chosen = (spatial or convs)[0]
    else:
        by_name = {l.name: l for l in convs}
        if layer not in by_name:
            raise ValueError(f"No 2D convolution layer named {layer!r}; allowed: "
                             f"{', '.join(by_name)}. Received: layer={layer!r}")
        chosen = by_name[layer]
    return chosen.name, np.asarray(chosen.get_weights()[0], dtype="float32")


def feature_maps(model, image) -> list[tuple[str, str, Any]]:
    """The activations of each block for one image.

    Returns:
        A list of `(block_label, layer_name, activations)`, activations a
        float32 array `(h, w, channels)`.
    """
    import keras
    import numpy as np

    model = _as_model(model)
    x = as_image(image, model)
    _require_conv(model, "Feature maps")
    chosen = _block_layers(model)
    probe = keras.Model(model.inputs[0], [_outer_output(layer) for _, layer in chosen])
    outputs = probe(x[None], training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [(label, layer.name, np.asarray(keras.ops.convert_to_numpy(out), "float32")[0])
            for (label, layer), out in zip(chosen, outputs)]


def _logit_model(model, target):
    """A model to `[target.output, head_input]` and a function head_input -> class scores.

    Grad-CAM and saliency differentiate the class score before the softmax
    (a saturated softmax has near-zero gradients). For a final `Dense` with
    softmax the logits are recomputed from its kernel; for a final softmax
    `Activation` its input is used; otherwise the output is taken as is.
    """
    import keras

    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    outputs = [_outer_output(target)] if target is not None else []
    if isinstance(last, keras.layers.Dense) and activation == "softmax":
        def head(x):
            x = keras.ops.cast(x, last.kernel.dtype)
            y = keras.ops.matmul(x, last.kernel)
            return y + last.bias if last.use_bias else y
        outputs.append(last.input)
    elif isinstance(last, (keras.layers.Activation, keras.layers.Softmax)) and \
            (activation == "softmax" or isinstance(last, keras.layers.Softmax)):
        def head(x):
            return x
        outputs.append(last.input)
    else:
        def head(x):
            return x
        outputs.append(model.outputs[0])
    return keras.Model(model.inputs[0], outputs), head


def gradcam(model, image, class_index: int | None = None, *, layer: str | None = None,
            method: str = "hirescam") -> GradCAM:
    """A gradient-weighted class activation map for one image.

    The gradients of the class score (the logit) with respect to a
    convolutional feature map weight the map; the ReLU of the weighted sum
    over channels, resized to the input, shows where the evidence for the
    class lies.

    - `method="gradcam"` (Selvaraju et al., 2017) weights each channel by its
      gradient averaged over space.
    - `method="hirescam"` (Draelos & Carin, 2020), the default, weights each
      position by its own gradient. Behind a global-pooling head the two are
      identical; behind a `flatten` head (kerascnn's default) each position
      has its own weights downstream, the spatial average can cancel, and
      Grad-CAM's map can be empty or point at the wrong place, while
      HiResCAM stays the exact contribution of each position to the score.
      (Behind a flatten head, on images whose class is the quadrant of a
      bright square, Grad-CAM's map came out all zero for half of the
      classes while HiResCAM put 85-98% of its mass on the square's
      quadrant; `tests/test_visualize.py` checks the difference.)

    Args:
        model: keras.Model or path.
        image: str path or array `(height, width, channels)` of raw pixels.
        class_index: int, optional. The class to explain. Defaults to the
            predicted class.
        layer: str, optional. The feature-map layer. Defaults to the last
            convolution's activation (see `gradcam_layer`).
        method: str. `"hirescam"` or `"gradcam"`. Defaults to `"hirescam"`.

    Returns:
        A `GradCAM`.

    Raises:
        ValueError: unreadable image, class outside the model's classes, or
            a model without convolutions.
    """
    import numpy as np
    import tensorflow as tf

    if method not in CAM_METHODS:
        raise ValueError(f"Unknown class activation map method; allowed: "
                         f"{', '.join(CAM_METHODS)}. Received: method={method!r}")
    model = _as_model(model)
    class_index = check_class_index(model, class_index)
    x = as_image(image, model)
    target = gradcam_layer(model, layer)
    probe, head = _logit_model(model, target)
    inputs = tf.convert_to_tensor(x[None])
    with tf.GradientTape() as tape:
        fmap, pre = probe(inputs, training=False)
        scores = tf.cast(head(pre), tf.float32)
        predicted = int(tf.argmax(scores[0]))
        chosen = predicted if class_index is None else class_index
        score = scores[:, chosen]
    grads = tape.gradient(score, fmap)  # fmap as computed: a cast copy has no gradient
    if grads is None:
        raise ValueError(f"The class score does not depend on layer {target.name!r}; choose "
                         f"another layer. Received: layer={target.name!r}")
    fmap, grads = tf.cast(fmap, tf.float32), tf.cast(grads, tf.float32)
    if method == "gradcam":
        grads = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(fmap * grads, axis=-1))[0]
    coarse = cam.numpy().astype("float32")
    height, width = x.shape[:2]
    fine = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0].numpy()
    fine = np.maximum(fine, 0.0)
    peak = float(fine.max())
    if peak > 0:
        fine = fine / peak
        coarse = coarse / max(float(coarse.max()), 1e-12)
    else:
        logger.warning("Grad-CAM map is zero everywhere for class %d (no positive evidence "
                       "in layer %s)", chosen, target.name)
    probabilities = _probabilities(scores[0].numpy(), model)
    return GradCAM(heatmap=fine.astype("float32"), coarse=coarse, class_index=chosen,
                   probability=float(probabilities[chosen]), predicted=predicted,
                   layer=target.name, method=method)


def _probabilities(scores, model):
    """Softmax of the scores unless the model already outputs probabilities."""
    import numpy as np

    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    is_prob = False
    if activation == "softmax":
        import keras

        # the scores are logits recomputed from the final layer (see _logit_model),
        # except when that layer was not a Dense/Activation we know how to undo
        is_prob = not isinstance(last, (keras.layers.Dense, keras.layers.Activation))
    scores = np.asarray(scores, dtype="float64")
    if is_prob:
        return scores
    e = np.exp(scores - scores.max())
    return e / e.sum()


def saliency(model, image, class_index: int | None = None, *, samples: int = 16,
             noise: float = 0.1, seed: int = 0) -> tuple[Any, int]:
    """A saliency map: how much each pixel moves the class score.

    The absolute gradient of the class score (the logit) with respect to
    the input pixels (Simonyan et al., 2014), averaged over `samples` copies
    of the image with Gaussian noise added (SmoothGrad, Smilkov et al.,
    2017), which removes most of the speckle a single gradient shows.
    `samples=1, noise=0` gives the plain gradient.

    Args:
        model: keras.Model or path.
        image: str path or array `(height, width, channels)` of raw pixels.
        class_index: int, optional. Defaults to the class predicted for the
            clean image.
        samples: int. Noisy copies to average. Defaults to 16.
        noise: float. Noise standard deviation as a fraction of the image's
            value range (0..255 pixels: 0.1 is about 26). Defaults to 0.1.
        seed: int. Seed of the noise. Defaults to 0.

    Returns:
        `(map, class_index)`: map is float32 `(height, width)` in [0, 1]
        (the maximum over channels, divided by the overall maximum).
    """
    import numpy as np
    import tensorflow as tf

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer. Received: samples={samples!r}")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 1:
        raise ValueError(f"noise is a fraction of the value range in [0, 1]. "
                         f"Received: noise={noise!r}")
    model = _as_model(model)
    class_index = check_class_index(model, class_index)
    x = as_image(image, model)
    probe, head = _logit_model(model, None)

    def scores_of(batch):
        pre = probe(batch, training=False)
        pre = pre[0] if isinstance(pre, (list, tuple)) else pre
        return tf.cast(head(pre), tf.float32)

    if class_index is None:
        class_index = int(tf.argmax(scores_of(tf.convert_to_tensor(x[None]))[0]))
    value_range = 255.0 if float(x.max()) > 1.0 else 1.0
    rng = np.random.default_rng(seed)
    batch = np.repeat(x[None], samples, axis=0)
    if noise > 0:
        batch = batch + rng.normal(0.0, noise * value_range, batch.shape).astype("float32")
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = tf.reduce_sum(scores_of(inputs)[:, class_index])
    grads = tape.gradient(score, inputs)
    smap = np.abs(grads.numpy()).mean(axis=0).max(axis=-1)
    peak = float(smap.max())
    if peak > 0:
        smap = smap / peak
    return smap.astype("float32"), class_index


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """Read a Keras `CSVLogger` file (`history.csv`), or the one in a run folder.

    Returns:
        `{"epoch": [...], "loss": [...], "val_loss": [...], ...}`; epochs are
        counted from 1.

    Raises:
        ValueError: no such file, or it is not a history (no numeric columns).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "history.csv"
    if not path.is_file():
        raise ValueError(f"No training history found: expected a run folder with history.csv "
                         f"or a history .csv file. Received: path={str(path)!r}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"Could not read the history file ({e}). Received: path={str(path)!r}") \
            from None
    history: dict[str, list[float]] = {}
    columns = list(rows[0]) if rows else []
    for column in columns:
        try:
            history[column] = [float(r[column]) for r in rows]
        except (TypeError, ValueError):
            continue
    metrics = [c for c in history if c != "epoch"]
    if not rows or not metrics:
        raise ValueError(f"The history file holds no epochs with numeric metrics (a Keras "
                         f"CSVLogger file is expected). Received: path={str(path)!r}")
    if "epoch" in history:
        history["epoch"] = [e + 1 for e in history["epoch"]]
    else:
        history = {"epoch": [float(i + 1) for i in range(len(rows))], **history}
    return history


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def check_output(output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validate a picture's output path (suffix, existing file, folder) before any work."""
    return check_output_path(output, overwrite=overwrite)


def _grid(n: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(max_columns, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / columns), columns


def _show_image(ax, image) -> None:
    """Draw raw pixels (0..255 or 0..1), gray or RGB."""
    import numpy as np

    img = np.asarray(image, dtype="float32")
    scale = 255.0 if img.max() > 1.0 else 1.0
    img = np.clip(img / scale, 0.0, 1.0)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img[..., :3])
    ax.set_xticks([])
    ax.set_yticks([])


def plot_filters(model, *, layer: str | None = None, output: str | os.PathLike | None = None,
                 max_filters: int = MAX_FILTERS) -> Plot:
    """Draw a convolution layer's kernels as a grid (by default the first layer).

    One cell per filter. With three input channels each kernel is shown in
    colour (scaled to its own range); otherwise the kernel (averaged over
    input channels if there are several) on one shared blue-red scale
    centred at zero.

    Returns:
        A `Plot`; `data` has `layer`, `kernel` (the array drawn from) and
        `shown` (the filter indices drawn).
    """
    import numpy as np

    model = _as_model(model)
    name, kernel = filters(model, layer)
    kh, kw, cin, cout = kernel.shape
    shown = list(range(min(cout, max_filters)))
    rows, cols = _grid(len(shown))
    fig = figure(max(3.2, 0.8 * cols + 0.9), 0.8 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    color = cin == 3
    gray = kernel.mean(axis=2)
    bound = float(np.abs(gray).max()) or 1.0
    image = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(shown):
            ax.set_axis_off()
            continue
        if color:
            k = kernel[..., shown[i]]
            k = (k - k.min()) / max(float(k.max() - k.min()), 1e-12)
            ax.imshow(k, interpolation="nearest")
        else:
            image = ax.imshow(gray[..., shown[i]], cmap="RdBu_r", vmin=-bound, vmax=bound,
                              interpolation="nearest")
        ax.set_title(f"#{shown[i]}", fontsize=7, pad=2)
    what = "RGB" if color else ("weights" if cin == 1 else f"mean over {cin} input channels")
    title = f"Filters of {name}: {len(shown)} of {cout}, {kh}x{kw} ({what})"
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("filter index (# above each kernel)", fontsize=7)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
        bar.set_label("weight", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return finish(fig, title, {"layer": name, "kernel": kernel, "shown": shown}, output)


def plot_feature_maps(model, image, *, output: str | os.PathLike | None = None,
                      max_channels: int = MAX_CHANNELS_PER_BLOCK) -> Plot:
    """Draw the activations of each block for one image, one grid per block.

    Each block shows its `max_channels` most active channels (highest mean
    activation), each on its own colour scale, with the input image first.

    Returns:
        A `Plot`; `data["blocks"]` lists `{label, layer, shape, channels}`
        and `data["activations"]` the arrays drawn from.
    """
    import numpy as np

    model = _as_model(model)
    x = as_image(image, model)
    maps = feature_maps(model, x)
    per_row = min(8, max_channels)
    rows_per_block = [math.ceil(min(m.shape[-1], max_channels) / per_row) for _, _, m in maps]
    total_rows = 1 + sum(rows_per_block)
    fig = figure(1.05 * per_row + 0.4, 1.15 * total_rows + 0.8)
    subfigs = fig.subfigures(len(maps) + 1, 1, height_ratios=[1] + rows_per_block, hspace=0.02)
    ax = subfigs[0].subplots(1, 1)
    _show_image(ax, x)
    ax.set_title(f"input {x.shape[0]}x{x.shape[1]}x{x.shape[2]}", fontsize=7)
    blocks = []
    for subfig, (label, layer_name, act), nrows in zip(subfigs[1:], maps, rows_per_block):
        order = np.argsort(-act.reshape(-1, act.shape[-1]).mean(axis=0), kind="stable")
        channels = [int(c) for c in order[:max_channels]]
        axes = subfig.subplots(nrows, per_row, squeeze=False)
        for i, a in enumerate(axes.flat):
            a.set_xticks([])
            a.set_yticks([])
            if i >= len(channels):
                a.set_axis_off()
                continue
            a.imshow(act[..., channels[i]], cmap="viridis", interpolation="nearest")
            a.set_title(f"ch {channels[i]}", fontsize=6, pad=1)
        h, w, c = act.shape
        subfig.suptitle(f"{label} ({layer_name}): {h}x{w}x{c}, {len(channels)} most active "
                        f"channels", fontsize=8)
        blocks.append({"label": label, "layer": layer_name, "shape": act.shape,
                       "channels": channels})
    title = f"Feature maps of {model.name} for one image"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, {"blocks": blocks, "activations": [m for _, _, m in maps]},
                   output)


def plot_gradcam(model, image, class_index: int | None = None, *, layer: str | None = None,
                 method: str = "hirescam", output: str | os.PathLike | None = None) -> Plot:
    """Draw the image and its Grad-CAM heat map over it.

    Returns:
        A `Plot`; `data["gradcam"]` is the `GradCAM` drawn.
    """
    model = _as_model(model)
    x = as_image(image, model)
    cam = gradcam(model, x, class_index, layer=layer, method=method)
    names = class_names_of(model)
    fig = figure(6.0, 3.3)
    left, right = fig.subplots(1, 2)
    _show_image(left, x)
    left.set_title(f"input (predicted: {names[cam.predicted]})", fontsize=8)
    _show_image(right, x)
    heat = right.imshow(cam.heatmap, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0,
                        interpolation="bilinear")
    right.set_title(f"heat map of {cam.layer}", fontsize=8)
    bar = fig.colorbar(heat, ax=right, shrink=0.85)
    bar.set_label("relative importance", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    title = (f"{'HiResCAM' if method == 'hirescam' else 'Grad-CAM'} for class "
             f"{names[cam.class_index]!r} (p = {cam.probability:.2f})")
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, {"gradcam": cam}, output)


def plot_saliency(model, image, class_index: int | None = None, *,
                  output: str | os.PathLike | None = None) -> Plot:
    """Draw the image and its saliency map (input gradients, SmoothGrad; see `saliency`).

    Returns:
        A `Plot`; `data["saliency"]` is the map drawn, `data["class_index"]`.
    """
    model = _as_model(model)
    x = as_image(image, model)
    smap, chosen = saliency(model, x, class_index)
    names = class_names_of(model)
    fig = figure(6.0, 3.3)
    left, right = fig.subplots(1, 2)
    _show_image(left, x)
    left.set_title("input", fontsize=8)
    shown = right.imshow(smap, cmap="hot", vmin=0.0, vmax=1.0, interpolation="nearest")
    right.set_xticks([])
    right.set_yticks([])
    right.set_title("|d score / d pixel|, SmoothGrad", fontsize=8)
    bar = fig.colorbar(shown, ax=right, shrink=0.85)
    bar.set_label("relative gradient", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    title = f"Saliency for class {names[chosen]!r}"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, {"saliency": smap, "class_index": chosen}, output)


def plot_learning_curves(history: str | os.PathLike | Mapping[str, Sequence[float]], *,
                         output: str | os.PathLike | None = None,
                         title: str | None = None) -> Plot:
    """Draw training and validation curves, one panel per metric.

    Args:
        history: a run folder, a `history.csv`, or a mapping such as Keras's
            `History.history` (`{"loss": [...], "val_loss": [...]}`).
        output: optional picture path.
        title: optional figure title. Defaults to "Learning curves".

    Returns:
        A `Plot`; `data` maps each panel's metric to the series drawn
        (`{"loss": {"loss": [...], "val_loss": [...]}, ...}`) and `epochs`.
    """
    if isinstance(history, (str, os.PathLike)):
        source = Path(history)
        history = read_history(history)
        title = title or f"Learning curves ({source.name if source.is_dir() else source})"
    history = {k: [float(v) for v in vals] for k, vals in dict(history).items()}
    n = max((len(v) for v in history.values()), default=0)
    epochs = history.pop("epoch", None) or [float(i + 1) for i in range(n)]
    lr = history.pop("learning_rate", None) or history.pop("lr", None)
    for column in NOT_METRICS:
        history.pop(column, None)
    bases = [k for k in history if not k.startswith("val_")]
    bases += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history]
    if not bases:
        raise ValueError(f"The history holds no metrics to draw. "
                         f"Received: columns={sorted(history)}")
    ordered = sorted(bases, key=lambda k: (k != "loss", k))
    panels = len(ordered) + (1 if lr is not None and len(set(lr)) > 1 else 0)
    fig = figure(3.3 * panels, 3.0)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    data: dict[str, Any] = {"epochs": epochs}
    for ax, base in zip(axes, ordered):
        series = {}
        for key, label, style in ((base, "train", "-o"), (f"val_{base}", "validation", "-s")):
            if key in history:
                ax.plot(epochs[:len(history[key])], history[key], style, markersize=3,
                        label=label)
                series[key] = history[key]
        val = history.get(f"val_{base}")
        if val:
            best = min(range(len(val)), key=val.__getitem__) if "loss" in base else \
                max(range(len(val)), key=val.__getitem__)
            ax.axvline(epochs[best], color="gray", linestyle=":", linewidth=1,
                       label=f"best epoch {epochs[best]:g}")
        ax.set_title(base.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(base)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        data[base] = series
    if panels > len(ordered):
        ax = axes[-1]
        ax.plot(epochs[:len(lr)], lr, "-", color="tab:green")
        ax.set_yscale("log")
        ax.set_title("learning rate", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3)
        data["learning_rate"] = {"learning_rate": lr}
    title = title or "Learning curves"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, data, output)


def plot_confusion_matrix(matrix, class_names: Sequence[str] | None = None, *,
                          output: str | os.PathLike | None = None,
                          title: str | None = None) -> Plot:
    """Draw a confusion matrix with the count in every cell.

    Rows are true classes, columns predicted classes (as in
    `sklearn.metrics.confusion_matrix`). Cells are coloured by the fraction
    of their row (recall), and annotated with the counts.

    Returns:
        A `Plot`; `data["counts"]` is the matrix drawn and
        `data["annotations"]` the cell texts as read back from the figure
        (row by row), so a test can compare them with `evaluate`'s numbers.
    """
    import numpy as np

    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"A confusion matrix must be square. Received: shape={counts.shape}")
    if np.any(counts < 0) or not np.all(np.equal(np.mod(counts, 1), 0)):
        raise ValueError("A confusion matrix holds non-negative integer counts. "
                         f"Received: min={counts.min()}")
    counts = counts.astype("int64")
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else \
        [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"Need one class name per row of the confusion matrix ({n}). "
                         f"Received: {len(names)} class names")
    rows = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, rows, out=np.zeros(counts.shape, "float64"), where=rows > 0)
    size = min(12.0, max(4.0, 0.45 * n + 2.3))
    fig = figure(size + 0.8, size)
    ax = fig.subplots(1, 1)
    shown = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fontsize = 8 if n <= 12 else 6
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if fraction[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 3 else 0,
                  ha="right" if max(map(len, names)) > 3 else "center", fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    bar = fig.colorbar(shown, ax=ax, shrink=0.8)
    bar.set_label("fraction of the true class", fontsize=7)
    total = int(counts.sum())
    correct = int(np.trace(counts))
    accuracy = correct / total if total else 0.0
    title = title or f"Confusion matrix: accuracy {accuracy:.3f} ({correct}/{total})"
    ax.set_title(title, fontsize=10)
    texts = [t.get_text() for t in ax.texts]
    annotations = [texts[i * n:(i + 1) * n] for i in range(n)]
    return finish(fig, title, {"counts": counts.tolist(), "annotations": annotations,
                                "class_names": names}, output)


def plot_top_losses(images, y_true, y_pred, losses, *, class_names: Sequence[str] | None = None,
                    probabilities=None, indices: Sequence[int] | None = None, k: int = 9,
                    output: str | os.PathLike | None = None) -> Plot:
    """Draw the `k` test images with the highest loss, with their labels.

    Args:
        images: the images to draw, either one per sample (indexable by
            sample index) or exactly the top-`k` images in `indices` order.
        y_true, y_pred, losses: per-sample true class, predicted class, loss.
        class_names: optional names for the class ids.
        probabilities: optional per-sample class probabilities (to print the
            probability of the predicted class).
        indices: optional sample indices to draw (default: the `k` highest
            losses).
        k: int. How many to draw. Defaults to 9.

    Returns:
        A `Plot`; `data` has `indices`, `losses`, `true`, `predicted`, and
        `titles` (the text above each image).
    """
    import numpy as np

    losses = np.asarray(losses, dtype="float64").reshape(-1)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if not (len(losses) == len(y_true) == len(y_pred)) or len(losses) == 0:
        raise ValueError("losses, y_true and y_pred need one entry per sample. Received: "
                         f"{len(losses)}, {len(y_true)}, {len(y_pred)}")
    if k < 1:
        raise ValueError(f"k must be at least 1. Received: k={k}")
    if indices is None:
        indices = top_loss_indices(losses, k)
    indices = [int(i) for i in indices]
    if len(images) == len(indices) and len(images) != len(losses):
        pictures = list(images)
    else:
        pictures = [images[i] for i in indices]
    names = [str(c) for c in class_names] if class_names is not None else None

    def name(c):
        return names[int(c)] if names is not None and 0 <= int(c) < len(names) else str(int(c))

    rows, cols = _grid(len(indices), max_columns=5)
    fig = figure(1.75 * cols + 0.3, 1.95 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    titles = []
    for a, idx, picture in zip(axes.flat, indices, pictures):
        _show_image(a, np.asarray(picture))
        text = f"true: {name(y_true[idx])}\npred: {name(y_pred[idx])}"
        if probabilities is not None:
            text += f" ({float(np.asarray(probabilities)[idx][int(y_pred[idx])]):.2f})"
        text += f"\nloss {losses[idx]:.2f}  #{idx}"
        a.set_title(text, fontsize=7)
        titles.append(text)
    for a in list(axes.flat)[len(indices):]:
        a.set_axis_off()
    title = f"Top {len(indices)} losses (worst-classified test images)"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, {
        "indices": indices, "losses": [float(losses[i]) for i in indices],
        "true": [int(y_true[i]) for i in indices], "predicted": [int(y_pred[i]) for i in indices],
        "titles": titles}, output)


def top_loss_indices(losses, k: int) -> list[int]:
    """Indices of the `k` largest losses, largest first (ties: lower index first)."""
    import numpy as np

    losses = np.asarray(losses, dtype="float64").reshape(-1)
    order = np.argsort(-losses, kind="stable")
    return [int(i) for i in order[:k]]


# ---------------------------------------------------------------------------
# Entry points used by the CLI and by `evaluate --plots`
# ---------------------------------------------------------------------------

_MISSING = object()


def _field(result, *names, default=_MISSING):
    for n in names:
        if isinstance(result, Mapping) and n in result:
            return result[n]
        if not isinstance(result, Mapping) and hasattr(result, n):
            return getattr(result, n)
    if default is _MISSING:
        raise ValueError(f"The evaluation result lacks {names[0]!r}. Received: keys="
                         f"{sorted(result) if isinstance(result, Mapping) else type(result)}")
    return default


def _iterate_test(bundle) -> Iterable[tuple[Any, Any]]:
    import numpy as np

    for x, y in bundle.test:
        yield np.asarray(x), np.asarray(y).reshape(-1)


def evaluation_figures(model, bundle, result, *, k: int = 9) -> dict[str, Plot]:
    """The figures of `kerascnn evaluate --plots`, drawn but not saved.

    Args:
        model: keras.Model (or path) that was evaluated.
        bundle: the `DatasetBundle` it was evaluated on (or `None` when
            `result` holds the top-loss images). `bundle.test` is read again,
            in order, only if the result did not keep the images.
        result: the evaluation result (`kerascnn.evaluation.EvaluationResult`,
            or a mapping with the same names): `confusion_matrix` (rows
            true, columns predicted), `class_names`, `split`, and per sample
            in reading order `y_true`, `y_pred`, `losses`, `probabilities`,
            plus `top_loss_indices` / `top_loss_images`. Per-sample values
            that are missing are computed from the model.
        k: int. How many top losses to draw. Defaults to 9.

    Returns:
        `{"confusion_matrix": Plot, "top_losses": Plot}`.
    """
    import numpy as np

    class_names = _field(result, "class_names", default=None) or getattr(
        bundle, "class_names", None)
    split = _field(result, "split", default="test")
    y_true = _field(result, "y_true", "labels", default=None)
    y_pred = _field(result, "y_pred", "predictions", "predicted", default=None)
    losses = _field(result, "losses", "per_sample_loss", "sample_losses", default=None)
    probabilities = _field(result, "probabilities", "probs", default=None)
    if y_true is None or y_pred is None or losses is None:
        if bundle is None:
            raise ValueError("The evaluation result holds no per-sample values and no dataset "
                             "was given to compute them. Received: bundle=None")
        y_true, y_pred, losses, probabilities = _per_sample(_as_model(model), bundle)
    y_true = np.asarray(y_true).reshape(-1).astype("int64")
    y_pred = np.asarray(y_pred).reshape(-1).astype("int64")
    matrix = _field(result, "confusion_matrix", default=None)
    if matrix is None:
        n = len(class_names) if class_names else int(max(y_true.max(), y_pred.max()) + 1)
        matrix = np.zeros((n, n), dtype="int64")
        np.add.at(matrix, (y_true, y_pred), 1)
    counts = np.asarray(matrix)
    total, correct = int(counts.sum()), int(np.trace(counts))
    title = (f"Confusion matrix ({split}): accuracy {correct / max(total, 1):.3f} "
             f"({correct}/{total})")
    wanted = top_loss_indices(losses, k)
    pictures = _top_loss_pictures(result, bundle, wanted, y_true)
    return {
        "confusion_matrix": plot_confusion_matrix(matrix, class_names, title=title),
        "top_losses": plot_top_losses(pictures, y_true, y_pred, losses, class_names=class_names,
                                      probabilities=probabilities, indices=wanted),
    }


def evaluation_plots(model, bundle, result, out_dir: str | os.PathLike, *,
                     k: int = 9) -> list[Path]:
    """Write the pictures of `kerascnn evaluate --plots DIR`.

    Draws `evaluation_figures` and saves them as `confusion_matrix.png` and
    `top_losses.png` in `out_dir` (created if needed).

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--plots must be a folder. Received: plots={str(out_dir)!r}")
    figures = evaluation_figures(model, bundle, result, k=k)
    return [save_figure(plot.figure, out_dir / f"{name}.png") for name, plot in figures.items()]


def _top_loss_pictures(result, bundle, wanted: list[int], y_true) -> list:
    """The images of the samples in `wanted`: from the result if it kept them, else re-read."""
    kept_index = _field(result, "top_loss_indices", default=None)
    kept_images = _field(result, "top_loss_images", default=None)
    if kept_index is not None and kept_images is not None:
        position = {int(i): n for n, i in enumerate(kept_index)}
        if all(i in position for i in wanted):
            return [kept_images[position[i]] for i in wanted]
    found: dict[int, Any] = {}
    offset = 0
    for x, y in _iterate_test(bundle):
        for i in wanted:
            if offset <= i < offset + len(x):
                found[i] = x[i - offset]
                if int(y[i - offset]) != int(y_true[i]):
                    logger.warning("Test sample %d has label %d on a second pass but %d in the "
                                   "evaluation: is the test split shuffled?", i,
                                   int(y[i - offset]), int(y_true[i]))
        offset += len(x)
        if len(found) == len(wanted):
            break
    if len(found) != len(wanted):
        raise ValueError(f"The test split holds {offset} samples but the evaluation result "
                         f"names sample {max(wanted)}. Received: samples={offset}")
    return [found[i] for i in wanted]


def _per_sample(model, bundle):
    """True class, predicted class, loss and probabilities of every test sample."""
    import numpy as np

    y_true, probs = [], []
    for x, y in _iterate_test(bundle):
        out = np.asarray(model(x, training=False), dtype="float64")
        if not (np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        probs.append(out)
        y_true.append(y)
    probs = np.concatenate(probs)
    y_true = np.concatenate(y_true).astype("int64")
    losses = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0))
    return y_true, probs.argmax(axis=1), losses, probs


def visualize(model, kind: str, output: str | os.PathLike, *, image=None,
              class_index: int | None = None, layer: str | None = None,
              cam_method: str = "hirescam", overwrite: bool = False) -> Plot:
    """Draw one picture of a model (what `kerascnn visualize` runs).

    Everything is checked before anything is computed or written.

    Args:
        model: keras.Model, a `.keras` path, a run folder, or a tune folder.
            For `kind="learning-curves"`, a run folder or a `history.csv`.
        kind: str. One of `filters`, `feature-maps`, `gradcam`, `saliency`,
            `learning-curves`.
        output: str. The picture file (`.png`, `.svg`, `.pdf`, `.jpg`).
        image: str path or array. Required by `feature-maps`, `gradcam`,
            `saliency`.
        class_index: int, optional. The class to explain (`gradcam`,
            `saliency`). Defaults to the predicted class.
        layer: str, optional. The layer to draw (`filters`, `gradcam`).
        cam_method: str. `"hirescam"` or `"gradcam"` (see `gradcam`).
            Defaults to `"hirescam"`.
        overwrite: bool. Replace an existing output file. Defaults to `False`.

    Returns:
        The `Plot`.

    Raises:
        ValueError: unknown kind, missing or unreadable image, class outside
            the model's classes, a model without convolutions, an existing
            output without `overwrite`.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown picture kind; allowed: {', '.join(KINDS)}. "
                         f"Received: kind={kind!r}")
    if cam_method not in CAM_METHODS:
        raise ValueError(f"Unknown class activation map method; allowed: "
                         f"{', '.join(CAM_METHODS)}. Received: cam_method={cam_method!r}")
    output = check_output(output, overwrite=overwrite)
    if kind == "learning-curves":
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("Learning curves are drawn from a run folder or a history.csv path. "
                            f"Received: {type(model).__name__}")
        history = read_history(model)
        return plot_learning_curves(history, output=output,
                                    title=f"Learning curves ({Path(model).name})")
    if kind in IMAGE_KINDS and image is None:
        raise ValueError(f"--kind {kind} needs an image (--image FILE). Received: image=None")
    model = _as_model(model)
    class_index = check_class_index(model, class_index)
    if image is not None:
        image = as_image(image, model)
    if kind in ("filters", "gradcam", "feature-maps"):
        _require_conv(model, {"filters": "Drawing filters", "gradcam": "Grad-CAM",
                              "feature-maps": "Feature maps"}[kind])
    if kind == "filters":
        return plot_filters(model, layer=layer, output=output)
    if kind == "feature-maps":
        return plot_feature_maps(model, image, output=output)
    if kind == "gradcam":
        return plot_gradcam(model, image, class_index, layer=layer, method=cam_method,
                            output=output)
    return plot_saliency(model, image, class_index, output=output)
