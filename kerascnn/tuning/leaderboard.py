"""The leaderboard of a search: one row per trial, its files, its text table, and the
progress line logged after every trial.

`leaderboard_rows(oracle, space)` reads keras-tuner's trials;
`write_leaderboard(project_dir, rows)` writes `leaderboard.json` and
`leaderboard.csv` atomically; `format_leaderboard(rows)` is the aligned text
table that `kerascnn tune` prints; `format_value` is how every cell is shown
(the search report uses it too).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from kerascnn.analysis import analyze
from kerascnn.checks import format_duration
from kerascnn.files import atomic_write_text, write_json
from kerascnn.search_space import SearchSpace

logger = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"
# sizes and notes go after the hyperparameters in the CSV
TAIL_COLUMNS = ("params", "macs", "receptive_field", "stopped_by", "message")
# columns the text table leaves out (they stay in the files)
QUIET_COLUMNS = ("status", "val_loss", "message", "stopped_by", "receptive_field", "continues",
                 "rung_epochs")


def trial_metric(trial, name: str) -> Optional[float]:
    """The last value of metric `name` of a keras-tuner trial, or None."""
    try:
        if trial.metrics.exists(name):
            value = trial.metrics.get_last_value(name)
            return None if value is None else float(value)
    except (KeyError, ValueError, TypeError):
        pass
    return None


def leaderboard_rows(oracle, space: SearchSpace) -> list[dict[str, Any]]:
    """One row per trial, best first: id, status, score, active hyperparameters, sizes.

    Successive-halving trials also carry their `rung` (0 = the cheapest),
    `fraction` of the training images, `rung_epochs`, and the cost model's
    `predicted_seconds` beside the measured `seconds`; they rank by rung, then
    by score.
    """
    order = {tid: i for i, tid in enumerate(oracle.start_order)}
    rows = []
    for trial in oracle.trials.values():
        hp_values = dict(trial.hyperparameters.values)
        values = space.values_from(hp_values)
        row: dict[str, Any] = {
            "rank": None,
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": None if trial.score is None else float(trial.score),
            "val_loss": trial_metric(trial, "val_loss"),
            "epochs": None,
            "seconds": trial_metric(trial, "seconds"),
        }
        if "tuner/rung" in hp_values:  # successive halving: the fidelity and the prediction
            row["rung"] = int(hp_values["tuner/rung"])
            row["fraction"] = float(hp_values["tuner/fraction"])
            row["rung_epochs"] = int(hp_values["tuner/epochs"])
            row["predicted_seconds"] = hp_values.get("tuner/predicted_seconds")
            row["seconds"] = row.pop("seconds")  # measured, right after predicted
        epochs = trial_metric(trial, "epochs_run")
        row["epochs"] = None if epochs is None else int(epochs)
        stopped = "budget" if trial_metric(trial, "stopped_by_budget") else (
            "early_stopping" if trial_metric(trial, "stopped_early") else "")
        for name in space.hp_names(values):
            row[name] = values[name]
        if "tuner/trial_id" in hp_values:
            row["continues"] = hp_values["tuner/trial_id"]
        try:
            analysis = analyze(space.spec(values))
            row.update(params=analysis.total_params, macs=analysis.total_macs,
                       receptive_field=analysis.receptive_field)
        except (ValueError, TypeError):
            row.update(params=None, macs=None, receptive_field=None)
        row["stopped_by"] = stopped
        if trial.status not in ("COMPLETED", "RUNNING") and trial.message:
            row["message"] = str(trial.message).strip().splitlines()[-1][:300].removeprefix(
                "keras_tuner.src.errors.FailedTrialError: ")
        row["_order"] = order.get(trial.trial_id, len(order))
        rows.append(row)
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    rest = [r for r in rows if r not in done]
    # a higher rung saw more data for longer: its scores rank first (ASHA)
    done.sort(key=lambda r: (-(r.get("rung") or 0), -r["score"], r["_order"]))
    rest.sort(key=lambda r: r["_order"])
    for rank, row in enumerate(done, start=1):
        row["rank"] = rank
    out = done + rest
    for row in out:
        row.pop("_order")
    return out


def csv_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in first-seen order, sizes and notes last."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    tail = [c for c in TAIL_COLUMNS if c in columns]
    return [c for c in columns if c not in tail] + tail


def write_leaderboard(project_dir: Path, rows: list[dict[str, Any]]) -> None:
    """`leaderboard.json` and `leaderboard.csv`, each written atomically."""
    write_json(Path(project_dir) / "leaderboard.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(Path(project_dir) / "leaderboard.csv", buffer.getvalue())


def format_value(value: Any) -> str:
    """One leaderboard cell: `-` for none, 4 decimals, counts with commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)


def format_leaderboard(rows: Sequence[dict[str, Any]], top: int = 5) -> str:
    """The first `top` completed rows as an aligned text table."""
    rows = [r for r in rows if r.get("rank") is not None][:top]
    if not rows:
        return "No completed trial."
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in QUIET_COLUMNS:
                columns.append(key)

    def cell(column: str, value: Any) -> str:
        if column in ("seconds", "predicted_seconds") and value is not None:
            return f"{value:.0f}s"
        if column == "fraction" and value is not None:
            return "all" if value >= 1 else f"1/{round(1 / value)}"
        return format_value(value)

    table = [[c.replace("_", " ") for c in columns]]
    table += [[cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table]
    return f"Top {len(rows)} of the leaderboard:\n" + "\n".join(lines)


class Reporter:
    """After every trial: rewrite the leaderboard and log one progress line.

    Args:
        project_dir: Path. The search folder.
        space: `SearchSpace`.
        max_trials: int. The cap on trials (for the count and the ETA).
        deadline: float. `time.time()` at which the search phase ends, or None.
        started: float. `time.time()` at which the search phase began.
            Defaults to now.
        on_leader: callable(trial, row) called when the first row is another
            trial than before (`best/` is rewritten: anytime). Defaults to
            `None`.
        after: callable() called after every report (the budget state).
            Defaults to `None`.
        leader_every: float. Seconds between two calls of `on_leader` (the
            first is at once; the search writes its leader at its end
            anyway). Defaults to 0.
    """

    def __init__(self, project_dir: Path, space: SearchSpace, max_trials: Optional[int],
                 deadline: Optional[float], started: Optional[float] = None,
                 on_leader: Optional[Callable] = None, after: Optional[Callable] = None,
                 leader_every: float = 0.0):
        self.project_dir = Path(project_dir)
        self.space = space
        self.max_trials = max_trials
        self.deadline = deadline
        self.start = time.time() if started is None else started
        self.on_leader = on_leader
        self.after = after
        self.ended_here = 0
        self.leader: Optional[str] = None
        self.leader_every = leader_every
        self._leader_written = 0.0

    def __call__(self, oracle, trial) -> None:
        rows = leaderboard_rows(oracle, self.space)
        write_leaderboard(self.project_dir, rows)
        self.ended_here += 1
        logger.info("%s", self.line(oracle, trial, rows))
        first = rows[0] if rows and rows[0]["rank"] == 1 else None
        due = self.leader is None or time.time() - self._leader_written >= self.leader_every
        if first is not None and first["trial_id"] != self.leader and due \
                and self.on_leader is not None:
            self.on_leader(oracle.trials[first["trial_id"]], first)
            self.leader = first["trial_id"]
            self._leader_written = time.time()
        if self.after is not None:
            self.after()

    def line(self, oracle, trial, rows: Sequence[dict[str, Any]]) -> str:
        """The progress line after `trial` ended."""
        done = len(oracle.end_order)
        elapsed = time.time() - self.start
        best = next((r["score"] for r in rows if r["rank"] == 1), None)
        row = next((r for r in rows if r["trial_id"] == trial.trial_id), {})
        score = f"failed: {row.get('message') or trial.status}" \
            if trial.status != "COMPLETED" else f"{OBJECTIVE}={trial.score:.4f}"
        details = []
        if row.get("params") is not None:
            details.append(f"{row['params']:,} params")
        if row.get("fraction") is not None:
            share = "all" if row["fraction"] >= 1 else f"1/{round(1 / row['fraction'])}"
            details.append(f"rung {row['rung']}: {share} of the images")
        if row.get("epochs") is not None:
            details.append(f"{row['epochs']} epochs")
        if row.get("seconds") is not None:
            predicted = row.get("predicted_seconds")
            details.append(f"{row['seconds']:.0f}s" + (
                f" (predicted {predicted:.0f}s)" if predicted is not None else ""))
        if row.get("stopped_by"):
            details.append(f"stopped by {row['stopped_by'].replace('_', ' ')}")
        best_text = "-" if best is None else f"{best:.4f}"
        if self.deadline is not None:
            total = self.deadline - self.start
            return (f"trial {done}: {score} ({', '.join(details)})  best {best_text}  "
                    f"search {format_duration(elapsed)} of {format_duration(total)}")
        if not self.max_trials:
            return (f"trial {done}: {score} ({', '.join(details)})  best {best_text}  "
                    f"elapsed {format_duration(elapsed)}")
        left = max(0, self.max_trials - len(oracle.trials))
        eta = elapsed / max(1, self.ended_here) * left
        return (f"trial {done}/{self.max_trials}: {score} ({', '.join(details)})  best "
                f"{best_text}  elapsed {format_duration(elapsed)}  left ~{format_duration(eta)}")
