"""Figures: one way to make a figure, check where it goes, and save it.

Every picture kerascnn draws (`kerascnn.visualize`, `kerascnn.report`, the
learning-rate range test) is a `matplotlib.figure.Figure` made by `figure`,
checked before any work by `check_output_path`, and written by `save_figure`
atomically (a temporary file beside the target, then a rename), so a kill
never leaves half a picture.

Figures are made with `Figure` directly, never through `pyplot`: nothing here
opens a window or keeps figures alive in pyplot's registry. When there is no
display (and no `MPLBACKEND`), the Agg backend is selected at import so that a
later `pyplot` user on a headless machine does not probe for a GUI.

Example:

```python
from kerascnn import plotting

output = plotting.check_output_path("curve.png", overwrite=True)
fig = plotting.figure(4, 3)
fig.subplots().plot([1, 2, 3], [3, 1, 2])
plotting.save_figure(fig, output)
```
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

if (not os.environ.get("MPLBACKEND") and "matplotlib.pyplot" not in sys.modules
        and sys.platform.startswith("linux")
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
    matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after the backend choice)

from kerascnn.checks import InputError, received  # noqa: E402
from kerascnn.files import atomic_path  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 100
PICTURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
# the savefig format of each suffix
_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpeg", ".jpeg": "jpeg"}


@dataclass
class Plot:
    """A drawn figure and the numbers it shows.

    Attributes:
        figure: the `matplotlib.figure.Figure`.
        title: str. The figure's title.
        data: dict. The values drawn (arrays, counts, annotations), for checks.
        path: `Path` or `None`. Where the figure was saved, if it was.
    """

    figure: Any
    title: str
    data: dict = field(default_factory=dict)
    path: Path | None = None


def figure(width: float, height: float, *, dpi: int = DPI,
           layout: str | None = "constrained") -> Figure:
    """A new figure of `width` x `height` inches, not registered with pyplot.

    Args:
        width: float. Width in inches.
        height: float. Height in inches.
        dpi: int. Dots per inch. Defaults to 100.
        layout: str or None. Matplotlib's layout engine. Defaults to
            `"constrained"` (titles, labels and colour bars never overlap).

    Returns:
        A `matplotlib.figure.Figure`.
    """
    return Figure(figsize=(width, height), dpi=dpi, layout=layout)


def _nearest_existing(path: Path) -> Path:
    """`path` or the closest of its parents that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_path(output: str | os.PathLike, *, overwrite: bool = False,
                      suffixes: tuple[str, ...] = PICTURE_SUFFIXES,
                      name: str = "output") -> Path:
    """Check a picture's output path before any work is done.

    The suffix must be one of `suffixes`, the path must not be a folder, an
    existing file is refused unless `overwrite`, and the folder it goes in
    must be (or be creatable inside) a writable folder.

    Args:
        output: str or PathLike. The picture file to write.
        overwrite: bool. Accept an existing file (it is replaced when the
            picture is saved). Defaults to `False`.
        suffixes: tuple of str. The allowed suffixes (lower case). Defaults to
            `PICTURE_SUFFIXES`.
        name: str. The argument's name in error messages. Defaults to
            `"output"`.

    Returns:
        The output as a `Path`.

    Raises:
        InputError: a suffix not allowed, a folder, an existing file without
            `overwrite`, or a folder that cannot be written.
    """
    path = Path(output)
    text = str(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"The {name} must be a picture file ending in {', '.join(suffixes)}. "
                         f"{received(name, text)}")
    if path.is_dir():
        raise InputError(f"The {name} is a folder; give a picture file name inside it. "
                         f"{received(name, text)}")
    if path.exists() and not overwrite:
        raise InputError(f"The {name} file already exists; pass --overwrite (overwrite=True) "
                         f"to replace it. {received(name, text)}")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise InputError(f"The {name}'s folder cannot be made: {str(base)!r} is a file. "
                         f"{received(name, text)}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"The {name}'s folder {str(base)!r} is not writable; choose another "
                         f"place. {received(name, text)}")
    return path


def save_figure(fig: Figure, output: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Save a figure atomically; the format follows the suffix.

    Args:
        fig: the `matplotlib.figure.Figure`.
        output: str or PathLike. A `.png`, `.svg`, `.pdf`, `.jpg` or `.jpeg`
            file; its folder is created if needed.
        dpi: int. Dots per inch of raster formats. Defaults to 100.

    Returns:
        The path written.

    Raises:
        InputError: a suffix that is not a picture format.
    """
    output = Path(output)
    fmt = _FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise InputError(f"A picture file must end in {', '.join(PICTURE_SUFFIXES)}. "
                         f"{received('output', str(output))}")
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    logger.info("Wrote %s", output)
    return output


def finish(fig: Figure, title: str, data: dict, output: str | os.PathLike | None = None) -> Plot:
    """A `Plot` of `fig`, saved to `output` when one is given."""
    plot = Plot(figure=fig, title=title, data=data)
    if output is not None:
        plot.path = save_figure(fig, output)
    return plot


def plot_lr_find(result: Any, path: str | os.PathLike, *,
                 title: str = "Learning-rate range test") -> Path:
    """Save the loss-vs-learning-rate curve of `kerascnn.lr_find` as a picture.

    Args:
        result: a `kerascnn.training.LRFindResult` (its `learning_rates`,
            `losses`, `smoothed_losses`, `steepest`, `minimum`, `suggestion`).
        path: str or PathLike. The picture file (PNG for `kerascnn lr-find`).
        title: str. Defaults to `"Learning-rate range test"`.

    Returns:
        The path written (atomically, by `save_figure`).
    """
    fig = figure(7, 4.5, layout=None)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.learning_rates, result.losses, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(result.learning_rates, result.smoothed_losses, color="C0", lw=2,
            label="smoothed loss")
    ax.set_xscale("log")
    ax.axvline(result.steepest, color="C3", ls="--",
               label=f"steepest descent: {result.steepest:.2g}")
    ax.axvline(result.minimum / 10, color="C2", ls=":",
               label=f"minimum / 10: {result.minimum / 10:.2g}")
    finite = [v for v in result.smoothed_losses if math.isfinite(v)]
    if finite:  # keep the divergence from flattening the interesting part
        raw = [v for v in result.losses if math.isfinite(v)]
        low, first = min(finite + raw), finite[0]
        ax.set_ylim(low - 0.1 * abs(first - low) - 1e-3, first + 0.5 * abs(first - low) + 1e-3)
    ax.set_title(f"{title} (suggested rate {result.suggestion:.2g})")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def grid_shape(n: int, max_columns: int = 8) -> tuple[int, int]:
    """`(rows, columns)` of a near-square grid for `n` panels, at most `max_columns` wide."""
    columns = min(max_columns, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / columns), columns


def show_image(ax, image) -> None:
    """Draw raw pixels (0..255 or 0..1), gray or RGB, without ticks."""
    img = np.asarray(image, dtype="float32")
    scale = 255.0 if img.max() > 1.0 else 1.0
    img = np.clip(img / scale, 0.0, 1.0)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img[..., :3])
    ax.set_xticks([])
    ax.set_yticks([])
