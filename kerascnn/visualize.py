"""What the network sees: filters, feature maps, Grad-CAM, saliency, and training pictures.

Each picture has two halves: a function that computes the numbers
(`filters`, `feature_maps`, `gradcam`, `saliency`, `read_history`) and a
`plot_*` function that draws them and returns a `Plot` holding the figure and
the numbers it drew, so tests (and users) can check a picture by its content.

This module draws the pictures of a model and runs `kerascnn visualize`
(`visualize`). It re-exports, so that `kerascnn.visualize.<name>` keeps
working: the class activation maps and saliency of `kerascnn.attribution`,
the pictures of results of `kerascnn.charts` (learning curves, confusion
matrix, top losses), and the figure helpers of `kerascnn.plotting`. Model
inspection lives in `kerascnn.inspection`, image decoding in
`kerascnn.images`.

Figures are built with `matplotlib.figure.Figure` directly, never through
`pyplot`, and written atomically (temporary file, then rename).

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

import logging
import math
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerascnn import runtime
from kerascnn.attribution import CAM_METHODS, GradCAM, gradcam, saliency
from kerascnn.charts import (NOT_METRICS, evaluation_figures, evaluation_plots,
                             plot_confusion_matrix, plot_learning_curves, plot_top_losses,
                             read_history, top_loss_indices)
from kerascnn.checks import VISUALIZE_KINDS, InputError, received
from kerascnn.images import as_image
from kerascnn.inspection import (check_class_index, class_names_of, conv_layers,
                                 feature_map_layers, feature_map_model, image_input_shape,
                                 num_classes, require_conv, resolve_model)
from kerascnn.inspection import last_conv_layer as gradcam_layer  # the old name
from kerascnn.plotting import (DPI, PICTURE_SUFFIXES, Plot, check_output_path,
                               figure, finish, grid_shape, save_figure, show_image)

__all__ = [
    # the pictures of a model, and `kerascnn visualize`
    "filters", "feature_maps", "plot_filters", "plot_feature_maps", "plot_gradcam",
    "plot_saliency", "visualize", "check_output", "KINDS", "IMAGE_KINDS", "MAX_FILTERS",
    "MAX_CHANNELS_PER_BLOCK",
    # re-exported: class activation maps and saliency (kerascnn.attribution)
    "CAM_METHODS", "GradCAM", "gradcam", "saliency",
    # re-exported: pictures of results (kerascnn.charts)
    "NOT_METRICS", "read_history", "plot_learning_curves", "plot_confusion_matrix",
    "plot_top_losses", "top_loss_indices", "evaluation_figures", "evaluation_plots",
    # re-exported: model inspection (kerascnn.inspection)
    "check_class_index", "class_names_of", "conv_layers", "gradcam_layer", "image_input_shape",
    "num_classes",
    # re-exported: figures (kerascnn.plotting)
    "DPI", "PICTURE_SUFFIXES", "Plot", "save_figure",
]

logger = logging.getLogger(__name__)

KINDS = VISUALIZE_KINDS
IMAGE_KINDS = ("feature-maps", "gradcam", "saliency")
MAX_FILTERS = 64
MAX_CHANNELS_PER_BLOCK = 16


# ---------------------------------------------------------------------------
# What the layers hold
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
        InputError: no (such) 2D convolution layer.
    """
    model = resolve_model(model)
    require_conv(model, "Drawing filters")
    convs = [l for l in conv_layers(model) if len(l.get_weights()[0].shape) == 4]
    if layer is None:
        if not convs:
            raise InputError("Drawing filters needs a 2D convolution layer. "
                             f"Received: model={model.name!r}")
        # a 1x1 convolution first (e.g. gray -> RGB before a pretrained backbone)
        # mixes channels and shows no pattern: take the first spatial kernel
        spatial = [l for l in convs if max(l.get_weights()[0].shape[:2]) > 1]
        chosen = (spatial or convs)[0]
    else:
        by_name = {l.name: l for l in convs}
        if layer not in by_name:
            raise InputError(f"No 2D convolution layer named {layer!r}; allowed: "
                             f"{', '.join(by_name)}. {received('layer', layer)}")
        chosen = by_name[layer]
    return chosen.name, np.asarray(chosen.get_weights()[0], dtype="float32")


def feature_maps(model, image) -> list[tuple[str, str, Any]]:
    """The activations of each block for one image.

    Returns:
        A list of `(block_label, layer_name, activations)`, activations a
        float32 array `(h, w, channels)`.
    """
    model = resolve_model(model)
    x = as_image(image, image_input_shape(model))
    require_conv(model, "Feature maps")
    chosen = feature_map_layers(model)
    probe = feature_map_model(model, [layer for _, layer in chosen])
    outputs = probe(x[None], training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [(label, layer.name, np.asarray(keras.ops.convert_to_numpy(out), "float32")[0])
            for (label, layer), out in zip(chosen, outputs)]


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def check_output(output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validate a picture's output path (suffix, existing file, folder) before any work."""
    return check_output_path(output, overwrite=overwrite)


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
    model = resolve_model(model)
    name, kernel = filters(model, layer)
    kh, kw, cin, cout = kernel.shape
    shown = list(range(min(cout, max_filters)))
    rows, cols = grid_shape(len(shown))
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
    model = resolve_model(model)
    x = as_image(image, image_input_shape(model))
    maps = feature_maps(model, x)
    per_row = min(8, max_channels)
    rows_per_block = [math.ceil(min(m.shape[-1], max_channels) / per_row) for _, _, m in maps]
    total_rows = 1 + sum(rows_per_block)
    fig = figure(1.05 * per_row + 0.4, 1.15 * total_rows + 0.8)
    subfigs = fig.subfigures(len(maps) + 1, 1, height_ratios=[1] + rows_per_block, hspace=0.02)
    ax = subfigs[0].subplots(1, 1)
    show_image(ax, x)
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
    model = resolve_model(model)
    x = as_image(image, image_input_shape(model))
    cam = gradcam(model, x, class_index, layer=layer, method=method)
    names = class_names_of(model)
    fig = figure(6.0, 3.3)
    left, right = fig.subplots(1, 2)
    show_image(left, x)
    left.set_title(f"input (predicted: {names[cam.predicted]})", fontsize=8)
    show_image(right, x)
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
    model = resolve_model(model)
    x = as_image(image, image_input_shape(model))
    smap, chosen = saliency(model, x, class_index)
    names = class_names_of(model)
    fig = figure(6.0, 3.3)
    left, right = fig.subplots(1, 2)
    show_image(left, x)
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
        InputError: unknown kind, missing or unreadable image, class outside
            the model's classes, a model without convolutions, an existing
            output without `overwrite`.
    """
    runtime.start()
    if kind not in KINDS:
        raise InputError(f"Unknown picture kind; allowed: {', '.join(KINDS)}. "
                         f"{received('kind', kind)}")
    if cam_method not in CAM_METHODS:
        raise InputError(f"Unknown class activation map method; allowed: "
                         f"{', '.join(CAM_METHODS)}. {received('cam_method', cam_method)}")
    output = check_output(output, overwrite=overwrite)
    if kind == "learning-curves":
        if not isinstance(model, (str, os.PathLike)):
            raise InputError("Learning curves are drawn from a run folder or a history.csv "
                             f"path. Received: model of type {type(model).__name__}")
        history = read_history(model)
        return plot_learning_curves(history, output=output,
                                    title=f"Learning curves ({Path(model).name})")
    if kind in IMAGE_KINDS and image is None:
        raise InputError(f"--kind {kind} needs an image (--image FILE). Received: image=None")
    model = resolve_model(model)
    class_index = check_class_index(model, class_index)
    if image is not None:
        image = as_image(image, image_input_shape(model))
    if kind in ("filters", "gradcam", "feature-maps"):
        require_conv(model, {"filters": "Drawing filters", "gradcam": "Grad-CAM",
                              "feature-maps": "Feature maps"}[kind])
    if kind == "filters":
        return plot_filters(model, layer=layer, output=output)
    if kind == "feature-maps":
        return plot_feature_maps(model, image, output=output)
    if kind == "gradcam":
        return plot_gradcam(model, image, class_index, layer=layer, method=cam_method,
                            output=output)
    return plot_saliency(model, image, class_index, output=output)
