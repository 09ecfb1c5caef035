"""A readable page from a search: `kerascnn report SEARCH_DIR --output DIR`.

Reads what `kerascnn tune` leaves in `<directory>/<project-name>/`
(`leaderboard.json`, keras-tuner's `trial_*/trial.json`) and writes, in the
output folder:

- `index.html` and `report.md`: the leaderboard (exactly the rows of
  `leaderboard.json`, in its order) and the pictures below;
- `score_vs_cost.png`: score against parameters and against MACs, the
  Pareto front (no other trial is both smaller and better) marked;
- `score_by_depth.png`: score by N (`convs_per_block`), M (`conv_blocks`)
  and K (the number of dense layers);
- `learning_curves.png`: the per-epoch objective and loss of the best trials
  (from keras-tuner's trial files).

Example:

```python
from kerascnn.report import write_report

paths = write_report("tuning/kerascnn", "report/")
print(paths["html"])
```
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

from kerascnn.charts import read_history
from kerascnn.checks import InputError, check_int, received
from kerascnn.files import atomic_write_text, read_yaml
from kerascnn.plotting import Plot, figure, finish
from kerascnn.runs import LEADERBOARD, find_search, prepare_output_dir
from kerascnn.tuning import leaderboard

logger = logging.getLogger(__name__)

# shown first, in this order, when present; every other key follows in file order
LEADING_COLUMNS = ("rank", "trial_id", "status", "score", "val_loss", "params", "macs",
                   "receptive_field", "epochs", "seconds")
DEPTH_AXES = (
    ("N", "convs per block", ("convs_per_block",)),
    ("M", "conv blocks", ("conv_blocks",)),
    ("K", "dense layers", ("dense_layers", "num_dense_layers", "dense_blocks", "fc_layers")),
)


@dataclass
class Search:
    """A search folder as the report reads it.

    Attributes:
        path: Path. The project folder holding `leaderboard.json`.
        rows: list of dict. The leaderboard rows, in the file's order.
        objective: str. The objective's name (e.g. `val_accuracy`).
        direction: str. `"max"` or `"min"`.
        extra: dict. Other top-level entries of a mapping-shaped leaderboard.
        fixed: dict. Search-space values fixed in `search.yaml` (not in the
            rows, since only searched hyperparameters are).
    """

    path: Path
    rows: list[dict[str, Any]]
    objective: str = "score"
    direction: str = "max"
    extra: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> list[dict[str, Any]]:
        """Completed rows with a finite score."""
        return [r for r in self.rows if _finite(r.get("score")) and
                str(r.get("status", "COMPLETED")).upper() == "COMPLETED"]

    def best(self, n: int = 1) -> list[dict[str, Any]]:
        """The `n` best completed rows, best first."""
        sign = -1.0 if self.direction == "max" else 1.0
        return sorted(self.completed, key=lambda r: sign * float(r["score"]))[:n]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _bad_leaderboard(path: Path, why: str) -> InputError:
    return InputError(f"Not a readable search: {why}. Give the folder `kerascnn tune` wrote "
                      f"(<directory>/<project-name>). {received('search_dir', str(path))}")


def load_search(search_dir: str | os.PathLike) -> Search:
    """Read a search folder's leaderboard.

    Args:
        search_dir: str. The `tune` project folder, or the `--directory`
            above it when it holds a single project.

    Returns:
        A `Search`.

    Raises:
        InputError: the folder is not a search or its leaderboard is unreadable.
    """
    path = find_search(search_dir)
    file = path / LEADERBOARD
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad_leaderboard(path, f"{LEADERBOARD} is not valid JSON ({e})") from None
    extra: dict[str, Any] = {}
    rows = data
    if isinstance(data, dict):
        extra = {k: v for k, v in data.items() if not isinstance(v, list)}
        rows = next((data[k] for k in ("rows", "trials", "leaderboard") if
                     isinstance(data.get(k), list)), None)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "trial_id" in r
                                             for r in rows):
        raise _bad_leaderboard(path, f"{LEADERBOARD} is not a list of trials with a trial_id")
    objective, direction = _objective(path, extra)
    return Search(path=path, rows=rows, objective=objective, direction=direction, extra=extra,
                  fixed=_fixed_values(path))


def _fixed_values(path: Path) -> dict[str, Any]:
    """Search-space entries `search.yaml` fixes to one value (they are not in the rows)."""
    if not (path / "search.yaml").is_file():
        return {}
    try:
        config = read_yaml(path / "search.yaml") or {}
    except InputError:
        return {}
    space = config.get("space") if isinstance(config, dict) else None
    if not isinstance(space, dict):
        return {}
    return {k: v for k, v in space.items() if isinstance(v, (int, float, str, bool))}


def _objective(path: Path, extra: dict[str, Any]) -> tuple[str, str]:
    """The objective's name and direction: from the leaderboard, search.yaml, or trial files."""
    name, direction = extra.get("objective"), extra.get("direction")
    if isinstance(name, dict):
        name, direction = name.get("name"), name.get("direction", direction)
    if name is None and (path / "search.yaml").is_file():
        try:
            config = read_yaml(path / "search.yaml") or {}
        except InputError:
            config = {}
        value = config.get("objective") if isinstance(config, dict) else None
        if isinstance(value, dict):
            name, direction = value.get("name"), value.get("direction", direction)
        elif isinstance(value, str):
            name = value
    if name is None or direction is None:
        # keras-tuner's trial files: the objective is the metric whose best value
        # is the trial's score; each metric records its direction
        for trial in sorted(path.glob("trial_*/trial.json")):
            try:
                state = json.loads(trial.read_text(encoding="utf-8"))
                metrics = state["metrics"]["metrics"]
                score = state.get("score")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if name is None and _finite(score):
                matches = [m for m, record in metrics.items()
                           if any(_observed(o) == score for o in record.get("observations", []))]
                matches.sort(key=lambda m: not m.startswith("val_"))
                name = matches[0] if matches else None
            if name is not None:
                direction = direction or (metrics.get(name) or {}).get("direction")
                break
    name = str(name) if name else "score"
    if direction not in ("max", "min"):
        direction = "min" if "loss" in name or "error" in name else "max"
    return name, direction


def _observed(observation: Any) -> Any:
    value = observation.get("value") if isinstance(observation, dict) else None
    return value[-1] if isinstance(value, list) and value else value


# ---------------------------------------------------------------------------
# Numbers behind the pictures
# ---------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]], direction: str = "max") -> list[int]:
    """Indices of the points no other point beats on both cost and score.

    A point is on the front when no other point has a cost at most as large
    and a better score (strictly better on at least one). Cost is minimised;
    the score is maximised (`direction="max"`) or minimised.

    Returns:
        Indices into `points`, by increasing cost.
    """
    sign = 1.0 if direction == "max" else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        score = sign * points[i][1]
        if score > best:
            front.append(i)
            best = score
    return front


def row_values(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values with a nested `hyperparameters` mapping (if any) flattened in."""
    values = {k: v for k, v in row.items() if k != "hyperparameters"}
    nested = row.get("hyperparameters")
    if isinstance(nested, dict):
        values.update({k: v for k, v in nested.items() if k not in values})
    return values


def depth_values(row: dict[str, Any], fixed: dict[str, Any] | None = None
                 ) -> dict[str, float | None]:
    """N, M and K of a leaderboard row, from its active hyperparameters.

    N is `convs_per_block` (the mean over blocks when it is chosen per block,
    e.g. `convs_per_block_1`, `convs_per_block_2`); M is `conv_blocks`; K the
    number of dense layers (`dense_layers`, or the length of `dense_units`).
    Values missing from the row are taken from `fixed` (the search's fixed
    values) when given.
    """
    hp = {**(fixed or {}), **row_values(row)}
    values: dict[str, float | None] = {}
    for letter, _, names in DEPTH_AXES:
        value = next((hp[n] for n in names if n in hp), None)
        if value is None and letter == "N":
            per_block = [v for k, v in hp.items()
                         if re.fullmatch(r"(block\d+_)?convs_per_block(_\d+)?", k) and
                         _finite(v)]
            value = sum(per_block) / len(per_block) if per_block else None
        if value is None and letter == "K" and isinstance(hp.get("dense_units"), (list, tuple)):
            value = len(hp["dense_units"])
        if isinstance(value, (list, tuple)):
            value = len(value) if letter == "K" else (sum(value) / len(value) if value else None)
        values[letter] = float(value) if _finite(value) else None
    return values


def trial_history(search: Search, trial_id: str) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch metrics of one trial, from its folder `trial_<id>/`.

    Read from, in order: `history.csv` (a Keras `CSVLogger` file),
    `history.json` (Keras's `History.history` mapping), or keras-tuner's
    `trial.json` when it holds more than one step per metric (keras-tuner
    1.4 keeps only the best epoch there).

    Returns:
        `{metric: [(epoch, value), ...]}` (epochs from 1); `{}` when the
        trial folder holds no per-epoch history.
    """
    folder = search.path / f"trial_{trial_id}"
    if (folder / "history.csv").is_file():
        try:
            history = read_history(folder / "history.csv")
        except InputError:
            history = {}
        epochs = [int(e) for e in history.pop("epoch", [])]
        return {name: list(zip(epochs, values)) for name, values in history.items()
                if all(_finite(v) for v in values)}
    if (folder / "history.json").is_file():
        try:
            data = json.loads((folder / "history.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return {name: [(i + 1, float(v)) for i, v in enumerate(values)]
                    for name, values in data.items()
                    if isinstance(values, list) and values and all(_finite(v) for v in values)}
    try:
        metrics = json.loads((folder / "trial.json").read_text(encoding="utf-8"))
        metrics = metrics["metrics"]["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    history = {}
    for name, record in metrics.items():
        points = []
        for obs in record.get("observations", []):
            value = obs.get("value")
            value = value[-1] if isinstance(value, list) and value else value
            if _finite(value) and isinstance(obs.get("step"), int):
                points.append((obs["step"] + 1, float(value)))
        if len(points) > 1:
            history[name] = sorted(points)
    return history


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------


def plot_score_vs_cost(search: Search, *, output=None) -> Plot:
    """Score against parameters and against MACs, Pareto fronts marked.

    Returns:
        A `kerascnn.plotting.Plot`; `data` maps `params` and `macs` to
        `{"trial_ids": [...], "front": [trial ids on the front]}`.
    """
    fig = figure(8.4, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    data: dict[str, Any] = {}
    best = search.best(1)
    for ax, key, label in zip(axes, ("params", "macs"), ("parameters", "multiply-adds (MACs)")):
        rows = [r for r in search.completed if _finite(r.get(key)) and r[key] > 0]
        xs = [float(r[key]) for r in rows]
        ys = [float(r["score"]) for r in rows]
        front = pareto_front(list(zip(xs, ys)), search.direction)
        ax.scatter(xs, ys, s=22, color="tab:blue", alpha=0.7, label="trial")
        if front:
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="tab:red",
                    markersize=6, drawstyle="steps-post", label="Pareto front")
        for b in best:
            if b in rows:
                ax.scatter([b[key]], [b["score"]], marker="*", s=180, color="gold",
                           edgecolor="black", zorder=5, label="best")
        if xs and max(xs) / max(min(xs), 1) > 5:
            ax.set_xscale("log")
            # 1-2-5 ticks written 20k, 50k, 100k: readable over one or two decades
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_title(f"score vs {label.split(' ')[0]}", fontsize=9)
        ax.grid(alpha=0.3)
        data[key] = {"trial_ids": [str(r["trial_id"]) for r in rows],
                     "front": [str(rows[i]["trial_id"]) for i in front]}
    axes[0].set_ylabel(f"{search.objective} ({search.direction})")
    axes[0].legend(fontsize=7, loc="lower right")
    title = f"Score against size: {len(search.completed)} completed trials"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, data, output)


def plot_score_by_depth(search: Search, *, output=None) -> Plot:
    """Score by N (convs per block), M (conv blocks) and K (dense layers).

    Each panel shows every completed trial as a dot (slightly jittered) and
    the best score reached at each value as a line.

    Returns:
        A `Plot`; `data[letter]` is `{value: [scores]}`.
    """
    fig = figure(9.0, 3.3)
    axes = fig.subplots(1, 3, sharey=True)
    rng = np.random.default_rng(0)
    data: dict[str, Any] = {}
    for ax, (letter, label, _) in zip(axes, DEPTH_AXES):
        groups: dict[float, list[float]] = {}
        names = DEPTH_AXES[[a[0] for a in DEPTH_AXES].index(letter)][2]
        is_fixed = not any(n in row_values(r) for r in search.rows for n in names)
        for row in search.completed:
            value = depth_values(row, search.fixed)[letter]
            if value is not None:
                groups.setdefault(value, []).append(float(row["score"]))
        keys = sorted(groups)
        for value in keys:
            scores = groups[value]
            ax.scatter(value + rng.uniform(-0.08, 0.08, len(scores)), scores, s=18, alpha=0.7,
                       color="tab:blue")
        if keys:
            pick = max if search.direction == "max" else min
            ax.plot(keys, [pick(groups[v]) for v in keys], "-", color="tab:red", alpha=0.8,
                    label="best")
            ax.set_xticks(keys, [f"{v:g}" for v in keys])
            ax.set_xlim(min(keys) - 0.5, max(keys) + 0.5)
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not searched", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
            ax.set_xticks([])
        ax.set_xlabel(f"{letter} = {label}")
        ax.set_title(f"score by {letter}" + (" (fixed)" if is_fixed and keys else ""),
                     fontsize=9)
        ax.grid(alpha=0.3)
        data[letter] = {k: groups[k] for k in keys}
    axes[0].set_ylabel(f"{search.objective} ({search.direction})")
    title = "Score by depth: N convs per block, M blocks, K dense layers"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, data, output)


def plot_best_learning_curves(search: Search, *, top: int = 5, output=None) -> Plot | None:
    """Per-epoch objective and loss of the best `top` trials.

    Returns:
        A `Plot` (or `None` when no trial file holds a history); `data`
        maps each trial id to its history.
    """
    histories = {}
    for row in search.best(top):
        history = trial_history(search, str(row["trial_id"]))
        if history:
            histories[str(row["trial_id"])] = history
    if not histories:
        return None
    objective = search.objective
    loss = "val_loss" if any("val_loss" in h for h in histories.values()) else "loss"
    panels = [objective] if objective != loss else []
    panels.append(loss)
    fig = figure(4.2 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, metric in zip(axes, panels):
        for trial_id, history in histories.items():
            points = history.get(metric, [])
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], "-o", markersize=3,
                        label=f"trial {trial_id}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = f"Learning curves of the best {len(histories)} trials"
    fig.suptitle(title, fontsize=10)
    return finish(fig, title, histories, output)


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


def leaderboard_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of the rows (nested hyperparameters flattened), the usual ones first."""
    seen: list[str] = []
    for row in rows:
        for key in row_values(row):
            if key not in seen:
                seen.append(key)
    return [c for c in LEADING_COLUMNS if c in seen] + [c for c in seen
                                                        if c not in LEADING_COLUMNS]


def format_value(value: Any) -> str:
    """A leaderboard value as the report shows it.

    As `kerascnn tune` prints it (`kerascnn.tuning.leaderboard.format_value`:
    4 decimals, large counts with commas), except that a value a row lacks
    (a hyperparameter the trial did not use) is blank, and lists are joined.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return leaderboard.format_value(value)


def _table(search: Search) -> tuple[list[str], list[list[tuple[str, Any, bool]]]]:
    """Header and cells `(column, value, from_file)`; a position rank if the file has none."""
    columns = leaderboard_columns(search.rows)
    own_rank = "rank" not in columns
    header = (["rank"] if own_rank else []) + columns
    body = []
    for position, row in enumerate(search.rows, start=1):
        values = row_values(row)
        cells = [("rank", position, False)] if own_rank else []
        cells += [(c, values.get(c), c in values) for c in columns]
        body.append(cells)
    return header, body


def leaderboard_html(search: Search) -> str:
    """The leaderboard as an HTML table, rows in the file's order.

    Every cell holding a value from `leaderboard.json` carries its exact
    JSON value in `data-value` (the text shows it rounded), so the table can
    be checked against the file; a key a row lacks is an empty cell without
    `data-value`.
    """
    header, body = _table(search)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    lines = []
    for row, cells in zip(search.rows, body):
        tds = []
        for column, value, from_file in cells:
            attrs = f' data-column="{html.escape(column)}"'
            if from_file:
                attrs += f' data-value="{html.escape(json.dumps(value), quote=True)}"'
            tds.append(f"<td{attrs}>{html.escape(format_value(value))}</td>")
        lines.append(f'<tr data-trial="{html.escape(str(row["trial_id"]))}">{"".join(tds)}</tr>')
    return (f'<table id="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(lines) + "\n</tbody>\n</table>")


def leaderboard_markdown(search: Search) -> str:
    """The leaderboard as a Markdown table (values rounded as in `format_value`)."""
    header, body = _table(search)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in body:
        lines.append("| " + " | ".join(format_value(v).replace("|", "\\|")
                                       for _, v, _ in cells) + " |")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; }
tbody tr:first-child td { font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 13px; }
"""


def write_report(search_dir: str | os.PathLike, output: str | os.PathLike, *, top: int = 5,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write the HTML and Markdown report of a search.

    Args:
        search_dir: str. The `tune` project folder (or the `--directory`
            above a single project).
        output: str. The report folder (created; must be empty unless
            `overwrite`).
        top: int. How many of the best trials get learning curves.
            Defaults to 5.
        overwrite: bool. Replace an existing report. Defaults to `False`.

    Returns:
        `{"html": path, "markdown": path, <picture name>: path, ...}`.

    Raises:
        InputError: not a search folder, a non-empty output without
            `overwrite`, `top` < 1.
    """
    top = check_int("top", top)
    search = load_search(search_dir)
    out = prepare_output_dir(output, overwrite=overwrite)
    if out.resolve() == search.path.resolve():
        raise InputError(f"Write the report to its own folder, not into the search. "
                         f"{received('output', str(out))}")
    out.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, Path] = {}
    captions: dict[str, str] = {}
    if search.completed:
        plot = plot_score_vs_cost(search, output=out / "score_vs_cost.png")
        pictures["score_vs_cost"], captions["score_vs_cost"] = plot.path, plot.title
        plot = plot_score_by_depth(search, output=out / "score_by_depth.png")
        pictures["score_by_depth"], captions["score_by_depth"] = plot.path, plot.title
        plot = plot_best_learning_curves(search, top=top, output=out / "learning_curves.png")
        if plot is not None:
            pictures["learning_curves"], captions["learning_curves"] = plot.path, plot.title
        else:
            logger.info("No learning curves: the best trials' folders hold no per-epoch "
                        "history (history.csv or history.json)")
    best = search.best(1)
    name = search.path.name
    summary = (f"{len(search.rows)} trials, {len(search.completed)} completed; "
               f"objective {search.objective} ({search.direction}).")
    if best:
        summary += (f" Best: trial {best[0]['trial_id']} with {format_value(best[0]['score'])}"
                    + (f", {format_value(best[0]['params'])} parameters"
                       if _finite(best[0].get("params")) else "") + ".")
    best_model = search.path / "best" / "model.keras"
    if best_model.is_file():
        summary += f" Best model: {best_model}."
    fixed = ", ".join(f"{k}={format_value(v)}" for k, v in search.fixed.items())
    fixed_line = f"Fixed in this search: {fixed}." if fixed else ""
    if search.completed and "learning_curves" not in pictures:
        fixed_line += (" No learning curves: the trial folders hold no per-epoch history "
                       "(history.csv or history.json).")
        fixed_line = fixed_line.strip()

    figures_html = "\n".join(
        f'<h2>{html.escape(captions[k])}</h2>\n'
        f'<img src="{p.name}" alt="{html.escape(captions[k])}">'
        for k, p in pictures.items())
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>Search report: {html.escape(name)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<h1>Search report: {html.escape(name)}</h1>\n"
            f"<p>{html.escape(summary)}</p>\n"
            + (f'<p class="note">{html.escape(fixed_line)}</p>\n' if fixed_line else "")
            + "<h2>Leaderboard</h2>\n"
            f'<p class="note">Rows as in {LEADERBOARD}; the hyperparameters a trial did not '
            f"use are blank.</p>\n{leaderboard_html(search)}\n{figures_html}\n</body>\n</html>\n")
    figures_md = "\n\n".join(f"## {captions[k]}\n\n![{captions[k]}]({p.name})"
                             for k, p in pictures.items())
    markdown = (f"# Search report: {name}\n\n{summary}\n\n"
                + (f"{fixed_line}\n\n" if fixed_line else "") + "## Leaderboard\n\n"
                f"{leaderboard_markdown(search)}\n\n{figures_md}\n")
    paths = {"html": atomic_write_text(out / "index.html", page),
             "markdown": atomic_write_text(out / "report.md", markdown), **pictures}
    logger.info("Wrote the report of %s to %s", search.path, out)
    return paths
