"""Pictures of results: learning curves, confusion matrix, top losses.

What training and evaluation measured, drawn: `plot_learning_curves` (from a
run folder's `history.csv` or Keras's `History.history`),
`plot_confusion_matrix` and `plot_top_losses` (from `kerascnn.evaluate`'s
result), and `evaluation_plots`, the pictures of `kerascnn evaluate --plots`.
Each returns a `kerascnn.plotting.Plot` that holds the numbers it drew, so a
picture can be checked by its content. `kerascnn.visualize` re-exports them.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kerascnn import runs
from kerascnn.checks import InputError, check_int, received
from kerascnn.evaluation import EvaluationResult
from kerascnn.plotting import Plot, figure, finish, grid_shape, save_figure, show_image

logger = logging.getLogger(__name__)

# history.csv columns that are bookkeeping, not metrics to draw
NOT_METRICS = ("seconds", "time", "duration", "wall_time", "epoch_seconds")


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """The columns of a Keras `CSVLogger` file (`history.csv`), or of the one in a run folder.

    The rows are read by `kerascnn.runs.read_history`; only columns that hold
    a number in every row are kept.

    Returns:
        `{"epoch": [...], "loss": [...], "val_loss": [...], ...}`; epochs are
        counted from 1.

    Raises:
        InputError: no such file, or it is not a history (no numeric columns).
    """
    path = Path(path)
    if path.is_dir():
        path = path / runs.HISTORY_FILE
    if not path.is_file():
        raise InputError(f"No training history found: expected a run folder with "
                         f"{runs.HISTORY_FILE} or a history .csv file. "
                         f"{received('path', str(path))}")
    try:
        rows = runs.read_history(path)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise InputError(f"Could not read the history file ({e}). "
                         f"{received('path', str(path))}") from None
    columns = list(dict.fromkeys(key for row in rows for key in row))
    history = {c: [float(row[c]) for row in rows] for c in columns
               if all(isinstance(row.get(c), (int, float)) for row in rows)}
    if not rows or not [c for c in history if c != "epoch"]:
        raise InputError(f"The history file holds no epochs with numeric metrics (a Keras "
                         f"CSVLogger file is expected). {received('path', str(path))}")
    if "epoch" in history:
        history["epoch"] = [e + 1 for e in history["epoch"]]
    else:
        history = {"epoch": [float(i + 1) for i in range(len(rows))], **history}
    return history


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
        raise InputError(f"The history holds no metrics to draw. "
                         f"{received('columns', sorted(history))}")
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
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise InputError(f"A confusion matrix must be square. {received('shape', counts.shape)}")
    if np.any(counts < 0) or not np.all(np.equal(np.mod(counts, 1), 0)):
        raise InputError("A confusion matrix holds non-negative integer counts. "
                         f"Received: min={counts.min()}")
    counts = counts.astype("int64")
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else \
        [str(i) for i in range(n)]
    if len(names) != n:
        raise InputError(f"Need one class name per row of the confusion matrix ({n}). "
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
    losses = np.asarray(losses, dtype="float64").reshape(-1)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if not (len(losses) == len(y_true) == len(y_pred)) or len(losses) == 0:
        raise InputError("losses, y_true and y_pred need one entry per sample. Received: "
                         f"{len(losses)}, {len(y_true)}, {len(y_pred)}")
    k = check_int("k", k)
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

    rows, cols = grid_shape(len(indices), max_columns=5)
    fig = figure(1.75 * cols + 0.3, 1.95 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    titles = []
    for a, idx, picture in zip(axes.flat, indices, pictures):
        show_image(a, np.asarray(picture))
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
    losses = np.asarray(losses, dtype="float64").reshape(-1)
    order = np.argsort(-losses, kind="stable")
    return [int(i) for i in order[:k]]


# ---------------------------------------------------------------------------
# The pictures of `kerascnn evaluate --plots`
# ---------------------------------------------------------------------------


def evaluation_figures(model, bundle, result: EvaluationResult, *, k: int = 9
                       ) -> dict[str, Plot]:
    """The figures of `kerascnn evaluate --plots`, drawn but not saved.

    Args:
        model: keras.Model (or path) that was evaluated. Unused: the result
            holds every number drawn. Kept for the public signature.
        bundle: the `DatasetBundle` it was evaluated on, or `None`. Its split
            is read again, in order, only when the result kept fewer than `k`
            top-loss images (`evaluate(..., top_losses=...)`).
        result: the `kerascnn.evaluation.EvaluationResult`.
        k: int. How many top losses to draw. Defaults to 9.

    Returns:
        `{"confusion_matrix": Plot, "top_losses": Plot}`.

    Raises:
        InputError: `k` < 1, or the images of the top losses are neither in
            the result nor in a dataset given.
    """
    k = check_int("k", k)
    counts = np.asarray(result.confusion_matrix)
    total, correct = int(counts.sum()), int(np.trace(counts))
    title = (f"Confusion matrix ({result.split}): accuracy {correct / max(total, 1):.3f} "
             f"({correct}/{total})")
    wanted = top_loss_indices(result.losses, k)
    pictures = _top_loss_pictures(result, bundle, wanted)
    return {
        "confusion_matrix": plot_confusion_matrix(counts, result.class_names, title=title),
        "top_losses": plot_top_losses(pictures, result.y_true, result.y_pred, result.losses,
                                      class_names=result.class_names,
                                      probabilities=result.probabilities, indices=wanted),
    }


def evaluation_plots(model, bundle, result: EvaluationResult, out_dir: str | os.PathLike, *,
                     k: int = 9) -> list[Path]:
    """Write the pictures of `kerascnn evaluate --plots DIR`.

    Draws `evaluation_figures` and saves them as `confusion_matrix.png` and
    `top_losses.png` in `out_dir` (created if needed).

    Returns:
        The paths written.

    Raises:
        InputError: `out_dir` is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--plots must be a folder. {received('plots', str(out_dir))}")
    figures = evaluation_figures(model, bundle, result, k=k)
    return [save_figure(plot.figure, out_dir / f"{name}.png") for name, plot in figures.items()]


def _top_loss_pictures(result: EvaluationResult, bundle, wanted: list[int]) -> list:
    """The images of the samples in `wanted`: from the result if it kept them, else re-read."""
    position = {int(i): n for n, i in enumerate(result.top_loss_indices)}
    if all(i in position for i in wanted):
        return [result.top_loss_images[position[i]] for i in wanted]
    split = getattr(bundle, result.split, None) if bundle is not None else None
    if split is None:
        raise InputError(f"The evaluation kept {len(position)} top-loss images and no dataset "
                         f"was given to read {len(wanted)}; evaluate with top_losses >= "
                         f"{len(wanted)} or pass the dataset. {received('bundle', bundle)}")
    found: dict[int, Any] = {}
    offset = 0
    for x, y in split:
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        for i in wanted:
            if offset <= i < offset + len(x):
                found[i] = x[i - offset]
                if int(y[i - offset]) != int(result.y_true[i]):
                    logger.warning("Sample %d has label %d on a second pass but %d in the "
                                   "evaluation: is the %s split shuffled?", i,
                                   int(y[i - offset]), int(result.y_true[i]), result.split)
        offset += len(x)
        if len(found) == len(wanted):
            break
    if len(found) != len(wanted):
        raise InputError(f"The {result.split} split holds {offset} samples but the evaluation "
                         f"result names sample {max(wanted)}. {received('samples', offset)}")
    return [found[i] for i in wanted]
