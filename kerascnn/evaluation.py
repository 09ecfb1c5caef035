"""Evaluate a classifier on a dataset split, and predict the classes of image files.

Both work on a `keras.Model` or on anything `kerascnn.runs.load_model` accepts
(a `.keras` file, a run folder, a tune folder), loaded in Keras safe mode.
Class names travel inside the `.keras` file (`kerascnn.runs.save_model`).

Models may end in a softmax (probabilities) or in a plain linear layer
(logits): both are handled, and every probability reported here sums to one.

`evaluate` returns an `EvaluationResult` that holds what plots need: the
confusion matrix, per-class metrics, per-sample losses and predictions (in the
order in which the split was read), and the images of the worst predictions
(`top_loss_images`), so a picture of them never has to re-read a dataset that
may shuffle.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from kerascnn import runtime
from kerascnn.checks import SPLITS, InputError, check_choice, check_int, received
from kerascnn.data import load_dataset
from kerascnn.images import COLOR_MODES, IMAGE_EXTENSIONS, find_images, load_image
from kerascnn.inspection import (class_names_of, image_input_shape,
                                 outputs_probabilities, resolve_model)
from kerascnn.runs import check_model_path, read_model_metadata

__all__ = [
    "evaluate", "EvaluationResult", "predict", "PredictionResult", "classification_metrics",
    "to_probabilities", "training_data_options", "SPLITS", "TRAINING_DATA_OPTIONS",
    # re-exported from kerascnn.images and kerascnn.inspection (their old home was here)
    "find_images", "load_image", "IMAGE_EXTENSIONS", "resolve_model", "class_names_of",
    "outputs_probabilities",
]

logger = logging.getLogger(__name__)

# the dataset options a model saved by `train` remembers, which evaluate defaults to
TRAINING_DATA_OPTIONS = ("dataset", "image_size", "color_mode", "validation_split", "seed")
_EPSILON = 1e-7  # keras.backend.epsilon(): what Keras clips probabilities to


# ---------------------------------------------------------------------------
# From model outputs to probabilities
# ---------------------------------------------------------------------------


def _log_probabilities(outputs: np.ndarray, probabilities: bool) -> np.ndarray:
    """Natural-log class probabilities from model outputs, shape (batch, classes)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.shape[-1] == 1:  # binary classifier with one sigmoid/logit unit
        if probabilities:
            p = np.clip(outputs, _EPSILON, 1 - _EPSILON)
            return np.log(np.concatenate([1 - p, p], axis=-1))
        z = np.concatenate([np.zeros_like(outputs), outputs], axis=-1)
    elif probabilities:
        return np.log(np.clip(outputs, _EPSILON, 1 - _EPSILON))
    else:
        z = outputs
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def to_probabilities(outputs: np.ndarray, probabilities: bool) -> np.ndarray:
    """Class probabilities (rows sum to one) from softmax, sigmoid or logit outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if probabilities and outputs.shape[-1] > 1:
        p = np.clip(outputs, 0.0, None)
        return (p / np.maximum(p.sum(axis=-1, keepdims=True), _EPSILON)).astype(np.float32)
    return np.exp(_log_probabilities(outputs, probabilities)).astype(np.float32)


def _predict_fn(model):
    """Run the model in inference mode on one batch, returning numpy outputs."""
    dtype = getattr(model.inputs[0], "dtype", "float32") or "float32"
    full: list[int] = []  # the first batch's size: smaller batches are padded to it

    def run(x):
        x = np.asarray(x)
        if x.dtype != dtype:
            x = x.astype(dtype)
        n = x.shape[0]
        if not full:
            full.append(n)
        if n < full[0]:  # one traced shape for all batches, instead of a retrace at the end
            x = np.concatenate([x, np.zeros((full[0] - n, *x.shape[1:]), x.dtype)])
        return np.asarray(model.predict_on_batch(x))[:n]

    return run


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate` measured.

    Attributes:
        accuracy: float. Fraction of samples whose top class is right.
        loss: float. Mean sparse categorical cross-entropy.
        class_names: list of str.
        confusion_matrix: int array (classes, classes); rows are the true
            class, columns the predicted class.
        precision, recall, f1: float arrays (classes,). A class that is never
            predicted (or never present) gets 0, as scikit-learn's
            `zero_division=0` does.
        support: int array (classes,): samples of each true class.
        class_loss: float array (classes,): mean loss over each class's samples
            (NaN for a class with no samples).
        y_true, y_pred: int arrays (samples,), in the order the split was read.
        losses: float array (samples,): per-sample loss.
        probabilities: float array (samples, classes).
        top_loss_indices: int array: positions (in reading order) of the
            samples with the highest loss, worst first.
        top_loss_images: array (k, height, width, channels): those samples'
            raw images, worst first.
        split: str. Which split was evaluated.
    """

    accuracy: float
    loss: float
    class_names: list[str]
    confusion_matrix: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    class_loss: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    losses: np.ndarray
    probabilities: np.ndarray
    top_loss_indices: np.ndarray
    top_loss_images: np.ndarray
    split: str = "test"

    @property
    def num_samples(self) -> int:
        return int(self.y_true.shape[0])

    @property
    def macro(self) -> dict[str, float]:
        """Unweighted mean of precision, recall and F1 over classes."""
        return {"precision": float(self.precision.mean()), "recall": float(self.recall.mean()),
                "f1": float(self.f1.mean())}

    @property
    def weighted(self) -> dict[str, float]:
        """Mean of precision, recall and F1 weighted by each class's support."""
        w = self.support / max(int(self.support.sum()), 1)
        return {"precision": float((self.precision * w).sum()),
                "recall": float((self.recall * w).sum()), "f1": float((self.f1 * w).sum())}

    def per_class(self) -> list[dict[str, Any]]:
        """One dict per class: name, precision, recall, f1, support, loss."""
        return [
            {"class": name, "precision": float(self.precision[i]),
             "recall": float(self.recall[i]), "f1": float(self.f1[i]),
             "support": int(self.support[i]),
             "loss": None if np.isnan(self.class_loss[i]) else float(self.class_loss[i])}
            for i, name in enumerate(self.class_names)
        ]

    def top_losses(self, k: int = 9) -> list[dict[str, Any]]:
        """The k worst samples: index, true and predicted class, loss, probability."""
        rows = []
        for i in self.top_loss_indices[:k]:
            t, p = int(self.y_true[i]), int(self.y_pred[i])
            rows.append({"index": int(i), "true": self.class_names[t],
                         "predicted": self.class_names[p], "loss": float(self.losses[i]),
                         "probability": float(self.probabilities[i, p])})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-sample arrays)."""
        return {
            "split": self.split,
            "num_samples": self.num_samples,
            "accuracy": float(self.accuracy),
            "loss": float(self.loss),
            "macro_avg": self.macro,
            "weighted_avg": self.weighted,
            "per_class": self.per_class(),
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion_matrix.astype(int).tolist(),
            "top_losses": self.top_losses(),
        }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int):
    """Confusion matrix and per-class precision, recall, F1 and support (numpy only).

    Returns:
        (confusion_matrix, precision, recall, f1, support).
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    cm = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    cm = cm.reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return cm, precision, recall, f1, support


def _iter_batches(data: Any, split: str, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """(x, y) batches from a bundle split, a tf.data.Dataset, or an (x, y) tuple."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise InputError(f"x and y must have as many samples. "
                             f"Received: len(x)={len(x)}, len(y)={len(y)}")
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    dataset = getattr(data, split) if hasattr(data, "num_classes") else data
    if dataset is None:
        raise InputError(f"The dataset has no {split!r} split; choose another split "
                         f"({', '.join(SPLITS)}). {received('split', split)}")
    for batch in dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputError("The dataset must yield (x, y) batches. "
                             f"Received: elements of type {type(batch).__name__}")
        yield batch[0], batch[1]


def training_data_options(model: str | os.PathLike) -> dict[str, Any]:
    """The dataset options a model was trained with, as `kerascnn train` saved them.

    `kerascnn evaluate` uses them for the options the user did not give, so a
    model is evaluated on the data (and split) it was trained on.

    Args:
        model: str or PathLike. A `.keras` file, a run folder or a tune folder.

    Returns:
        A dict with those of `TRAINING_DATA_OPTIONS` the model's saved config
        holds (lists as tuples); empty for a model saved without one.

    Raises:
        InputError: no model at that path.
    """
    config = read_model_metadata(check_model_path(model)).get("config") or {}
    if not isinstance(config, dict):
        return {}
    return {name: tuple(config[name]) if isinstance(config[name], list) else config[name]
            for name in TRAINING_DATA_OPTIONS if name in config}


def evaluate(
    model: Any,
    data: Any = "fashion_mnist_sample",
    *,
    split: str = "test",
    batch_size: int = 128,
    top_losses: int = 25,
    **dataset_kwargs: Any,
) -> EvaluationResult:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix.

    Args:
        model: `keras.Model`, or the path of a `.keras` file, a run folder or a
            tune folder (loaded in Keras safe mode).
        data: A `DatasetBundle` (from `kerascnn.load_dataset`), a dataset
            source for `load_dataset` (e.g. `"fashion_mnist_sample"`, a folder,
            an `.npz` file), a `tf.data.Dataset` of `(x, y)` batches, or an
            `(x, y)` tuple of arrays. Defaults to `"fashion_mnist_sample"`.
        split: str. `"train"`, `"validation"` or `"test"` (for bundles and
            sources). Defaults to `"test"`.
        batch_size: int. Batch size for `(x, y)` arrays and for
            `load_dataset`. Defaults to 128.
        top_losses: int. How many of the worst samples to keep, with their
            images, in the result. Defaults to 25.
        **dataset_kwargs: Passed to `load_dataset` when `data` is a source.

    Returns:
        An `EvaluationResult`.

    Raises:
        InputError: unknown split, model file missing or not a Keras model,
            labels or images that do not match the model.

    Example:

    >>> result = kerascnn.evaluate("runs/lenet/model.keras")  # doctest: +SKIP
    >>> result.accuracy, result.confusion_matrix  # doctest: +SKIP
    """
    runtime.start()
    check_choice("split", split, SPLITS)
    batch_size = check_int("batch_size", batch_size)
    top_losses = check_int("top_losses", top_losses, minimum=0)
    model = resolve_model(model)
    input_shape = image_input_shape(model)
    class_names = class_names_of(model)
    width = len(class_names)
    probabilities_out = outputs_probabilities(model)

    if isinstance(data, (str, os.PathLike)):
        data = load_dataset(str(data), batch_size=batch_size, **dataset_kwargs)
    if hasattr(data, "num_classes"):  # a DatasetBundle
        if int(data.num_classes) != width:
            raise InputError(
                f"The model predicts {width} classes but the dataset has {data.num_classes}. "
                f"Evaluate on the dataset the model was trained on. "
                f"Received: model classes={width}, dataset classes={data.num_classes}")
        data_shape = tuple(data.input_shape)
        if len(data_shape) != 3 or any(m is not None and m != d
                                       for m, d in zip(input_shape, data_shape)):
            raise InputError(
                f"The dataset's images do not fit the model's input. Use the dataset (and "
                f"--image-size / --color-mode) the model was trained with. "
                f"Received: model input {input_shape}, dataset images {data_shape}")
        bundle_names = [str(c) for c in (data.class_names or [])]
        if bundle_names and bundle_names != class_names:
            if any(not c.isdigit() for c in class_names):
                logger.warning("The model's class names differ from the dataset's; "
                               "reporting the dataset's.")
            class_names = bundle_names

    run = _predict_fn(model)
    y_true, log_probs, images_buf, loss_buf, index_buf = [], [], None, None, None
    seen = 0
    for x, y in _iter_batches(data, split, batch_size):
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        y = (y.numpy() if hasattr(y, "numpy") else np.asarray(y)).reshape(-1).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise InputError(f"A batch has {x.shape[0]} images but {y.shape[0]} labels. "
                             f"Received: x.shape={x.shape}, y.shape={y.shape}")
        if y.size and (y.min() < 0 or y.max() >= width):
            raise InputError(
                f"Labels must be class ids in [0, {width - 1}] for this model. "
                f"Received: labels from {int(y.min())} to {int(y.max())}")
        lp = _log_probabilities(run(x), probabilities_out)
        batch_losses = -lp[np.arange(len(y)), y]
        y_true.append(y)
        log_probs.append(lp.astype(np.float32))
        if top_losses:
            idx = np.arange(seen, seen + len(y))
            if images_buf is None:
                images_buf, loss_buf, index_buf = x[:0], batch_losses[:0], idx[:0]
            cand_images = np.concatenate([images_buf, x])
            cand_losses = np.concatenate([loss_buf, batch_losses])
            cand_index = np.concatenate([index_buf, idx])
            keep = np.argsort(-cand_losses, kind="stable")[:top_losses]
            images_buf, loss_buf, index_buf = cand_images[keep], cand_losses[keep], cand_index[keep]
        seen += len(y)
    if seen == 0:
        raise InputError(f"The {split!r} split holds no samples. {received('split', split)}")

    y_true_arr = np.concatenate(y_true)
    lp_all = np.concatenate(log_probs)
    probs = np.exp(lp_all)
    probs /= probs.sum(axis=1, keepdims=True)
    y_pred = lp_all.argmax(axis=1)
    losses = -lp_all[np.arange(seen), y_true_arr].astype(np.float64)
    cm, precision, recall, f1, support = classification_metrics(y_true_arr, y_pred, width)
    class_loss = np.full(width, np.nan)
    sums = np.bincount(y_true_arr, weights=losses, minlength=width)
    class_loss[support > 0] = sums[support > 0] / support[support > 0]
    if images_buf is None:
        images_buf, index_buf = np.zeros((0, *input_shape)), np.zeros((0,), np.int64)
    result = EvaluationResult(
        accuracy=float((y_pred == y_true_arr).mean()),
        loss=float(losses.mean()),
        class_names=list(class_names),
        confusion_matrix=cm,
        precision=precision, recall=recall, f1=f1, support=support, class_loss=class_loss,
        y_true=y_true_arr, y_pred=y_pred, losses=losses, probabilities=probs.astype(np.float32),
        top_loss_indices=index_buf.astype(np.int64), top_loss_images=images_buf, split=split,
    )
    logger.info("Evaluated %d %s samples: accuracy %.4f, loss %.4f", seen, split,
                result.accuracy, result.loss)
    return result


# ---------------------------------------------------------------------------
# Images and prediction
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class PredictionResult:
    """Class probabilities for a list of images.

    Attributes:
        files: list of str, one per image (empty strings for array inputs).
        probabilities: float array (images, classes); rows sum to one.
        class_names: list of str.
        top_k: int. How many classes `rows()` reports per image.
    """

    files: list[str]
    probabilities: np.ndarray
    class_names: list[str]
    top_k: int = 5

    def __len__(self) -> int:
        return len(self.files)

    def top(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class ids, probabilities) of the k most likely classes, best first."""
        k = self.top_k if k is None else k
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(self.probabilities, order, axis=1)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image: `file` and `predictions` (class, probability)."""
        ids, probs = self.top()
        return [
            {"file": f, "predictions": [{"class": self.class_names[c], "probability": float(p)}
                                        for c, p in zip(ids[i], probs[i])]}
            for i, f in enumerate(self.files)
        ]


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict(
    model: Any,
    inputs: Any,
    *,
    top_k: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
) -> PredictionResult:
    """Class probabilities for images: files, folders of them, or an array.

    Images are decoded with Pillow, converted to the model's number of channels
    (grayscale, RGB, RGBA) and resized to its input size, then predicted in
    batches while the next batch decodes in background threads. Pixel values
    are passed as 0-255, as the datasets give them to `train` (a kerascnn model
    rescales inside itself).

    Args:
        model: `keras.Model`, or the path of a `.keras` file, run folder or tune
            folder.
        inputs: An image path, a folder (searched recursively), a list of
            those, or an array of images `(n, height, width, channels)` already
            at the model's size.
        top_k: int. How many classes `PredictionResult.rows()` reports per
            image; at most the number of classes. Defaults to 5, or the
            number of classes if that is smaller.
        batch_size: int. Images per model call. Defaults to 64.
        workers: int. Threads decoding images. Defaults to
            `min(4, os.cpu_count())`.

    Returns:
        A `PredictionResult`.

    Raises:
        InputError: model missing or not a Keras model, `top_k` larger than the
            number of classes, an image that cannot be read (named), a folder
            with no images.

    Example:

    >>> result = kerascnn.predict("runs/lenet", ["shoe.png"], top_k=3)  # doctest: +SKIP
    >>> result.rows()[0]["predictions"][0]  # doctest: +SKIP
    {'class': 'Sneaker', 'probability': 0.97}
    """
    runtime.start()
    if top_k is not None:
        top_k = check_int("top_k", top_k)
    batch_size = check_int("batch_size", batch_size)
    if workers is not None:
        workers = check_int("workers", workers)
    model = resolve_model(model)
    input_shape = image_input_shape(model)
    class_names = class_names_of(model)
    if top_k is None:
        top_k = min(5, len(class_names))
    if top_k > len(class_names):
        raise InputError(
            f"top_k cannot be larger than the number of classes ({len(class_names)}). "
            f"Received: top_k={top_k}")
    probabilities_out = outputs_probabilities(model)
    run = _predict_fn(model)

    if isinstance(inputs, np.ndarray) or hasattr(inputs, "numpy"):
        x = inputs.numpy() if hasattr(inputs, "numpy") else inputs
        if x.ndim == 3 and input_shape[-1] == 1 and x.shape[-1] != 1:
            x = x[..., None]
        if x.ndim != 4 or any(m is not None and m != d for m, d in zip(input_shape, x.shape[1:])):
            raise InputError(f"Images must have the model's input shape {input_shape}. "
                             f"Received: array of shape {x.shape}")
        out = [to_probabilities(run(b), probabilities_out) for b in _chunks(x, batch_size)]
        probs = np.concatenate(out) if out else np.zeros((0, len(class_names)), np.float32)
        return PredictionResult([""] * len(x), probs, class_names, top_k)

    files = find_images(inputs)
    size, channels = (input_shape[0], input_shape[1]), input_shape[2]
    if channels not in COLOR_MODES:
        raise InputError(f"Images can be given to models with 1, 3 or 4 channels. "
                         f"Received: model input shape {input_shape}")
    fixed_size = None not in size
    workers = workers or min(4, os.cpu_count() or 1)
    probs = np.zeros((len(files), len(class_names)), np.float32)
    batches = list(_chunks(range(len(files)), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(indices):
            return [pool.submit(load_image, files[i], size, channels) for i in indices]

        pending = submit(batches[0]) if batches else []
        for n, indices in enumerate(batches):
            images = [f.result() for f in pending]
            pending = submit(batches[n + 1]) if n + 1 < len(batches) else []
            if fixed_size:
                probs[indices.start:indices.stop] = to_probabilities(
                    run(np.stack(images)), probabilities_out)
            else:  # a model that takes any size: one call per distinct size
                by_shape: dict[tuple[int, ...], list[int]] = {}
                for j, img in enumerate(images):
                    by_shape.setdefault(img.shape, []).append(j)
                for members in by_shape.values():
                    p = to_probabilities(run(np.stack([images[j] for j in members])),
                                         probabilities_out)
                    probs[[indices.start + j for j in members]] = p
    logger.info("Predicted %d images", len(files))
    return PredictionResult([str(f) for f in files], probs, class_names, top_k)
