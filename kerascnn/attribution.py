"""Where the evidence for a class lies: class activation maps and saliency.

`gradcam` weights a convolutional feature map by the gradients of the class
score (HiResCAM or Grad-CAM); `saliency` takes the gradients of the class
score with respect to the input pixels (SmoothGrad). Both differentiate the
score before the softmax (`kerascnn.inspection.logit_model`). The pictures of
them are in `kerascnn.visualize` (`plot_gradcam`, `plot_saliency`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from kerascnn.checks import CAM_METHODS, InputError, check_int, received
from kerascnn.images import as_image
from kerascnn.inspection import (check_class_index, image_input_shape, last_conv_layer,
                                 logit_model, resolve_model)

logger = logging.getLogger(__name__)

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
            convolution's activation (see
            `kerascnn.inspection.last_conv_layer`).
        method: str. `"hirescam"` or `"gradcam"`. Defaults to `"hirescam"`.

    Returns:
        A `GradCAM`.

    Raises:
        InputError: unreadable image, class outside the model's classes, an
            unknown method, or a model without convolutions.
    """
    if method not in CAM_METHODS:
        raise InputError(f"Unknown class activation map method; allowed: "
                         f"{', '.join(CAM_METHODS)}. {received('method', method)}")
    model = resolve_model(model)
    class_index = check_class_index(model, class_index)
    x = as_image(image, image_input_shape(model))
    target = last_conv_layer(model, layer)
    probe, head, logits = logit_model(model, target)
    inputs = tf.convert_to_tensor(x[None])
    with tf.GradientTape() as tape:
        fmap, pre = probe(inputs, training=False)
        scores = tf.cast(head(pre), tf.float32)
        predicted = int(tf.argmax(scores[0]))
        chosen = predicted if class_index is None else class_index
        score = scores[:, chosen]
    grads = tape.gradient(score, fmap)  # fmap as computed: a cast copy has no gradient
    if grads is None:
        raise InputError(f"The class score does not depend on layer {target.name!r}; choose "
                         f"another layer. {received('layer', target.name)}")
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
    probabilities = _probabilities(scores[0].numpy(), logits)
    return GradCAM(heatmap=fine.astype("float32"), coarse=coarse, class_index=chosen,
                   probability=float(probabilities[chosen]), predicted=predicted,
                   layer=target.name, method=method)


def _probabilities(scores, logits: bool) -> np.ndarray:
    """Class probabilities from the scores: a softmax of logits, else the scores as they are."""
    scores = np.asarray(scores, dtype="float64")
    if not logits:
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
    samples = check_int("samples", samples)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 1:
        raise InputError(f"noise is a fraction of the value range in [0, 1]. "
                         f"{received('noise', noise)}")
    model = resolve_model(model)
    class_index = check_class_index(model, class_index)
    x = as_image(image, image_input_shape(model))
    probe, head, _ = logit_model(model)

    def scores_of(batch):
        return tf.cast(head(probe(batch, training=False)), tf.float32)

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
