"""`kerascnn report`: the page shows exactly the search's leaderboard, and plots its numbers.

The fast tests use a search folder written here in the layout `kerascnn tune`
leaves (`leaderboard.json` rows best first, `search.yaml`, keras-tuner's
`trial_<id>/trial.json`); one slow test runs a real tiny search.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

HPS = ("conv_blocks", "convs_per_block", "filters", "kernel_size", "dense_layers",
       "dense_units_1", "dense_units_2", "learning_rate")

# trial id, score, N, M, K, params (a few deliberately dominated)
TRIALS = [
    ("0003", 0.9125, 2, 3, 1, 120_394),
    ("0001", 0.9050, 1, 2, 1, 52_010),
    ("0006", 0.8975, 2, 2, 2, 98_776),
    ("0000", 0.8800, 1, 1, 0, 7_850),
    ("0005", 0.8800, 3, 3, 2, 310_442),
    ("0002", 0.8510, 1, 1, 1, 25_530),
    ("0004", 0.7333333333333333, 3, 2, 0, 60_114),
]


def make_rows() -> list[dict]:
    rows = []
    for rank, (trial_id, score, n, m, k, params) in enumerate(TRIALS, start=1):
        row = {"rank": rank, "trial_id": trial_id, "status": "COMPLETED", "score": score,
               "val_loss": round(1.2 - score, 4), "epochs": 3 + rank % 2,
               "seconds": 10.5 * rank, "conv_blocks": m, "convs_per_block": n, "filters": 16,
               "kernel_size": 3, "dense_layers": k}
        for d in range(1, k + 1):  # only the active dense widths, as the tuner writes them
            row[f"dense_units_{d}"] = 64 * d
        row["learning_rate"] = 0.001 * rank
        if trial_id == "0006":
            row["continues"] = "0001"
        row.update(params=params, macs=params * 31, receptive_field=5 + 4 * n * m,
                   stopped_by="early_stopping" if rank == 2 else "")
        rows.append(row)
    rows.append({"rank": None, "trial_id": "0007", "status": "FAILED", "score": None,
                 "val_loss": None, "epochs": None, "seconds": 1.25, "conv_blocks": 2,
                 "convs_per_block": 2, "filters": 32, "kernel_size": 5, "dense_layers": 1,
                 "dense_units_1": 128, "learning_rate": 0.5, "params": 215_000,
                 "macs": 6_665_000, "receptive_field": 21, "stopped_by": "",
                 "message": "Trial diverged: loss is NaN"})
    return rows


def trial_json(trial_id: str, score: float) -> dict:
    """keras-tuner 1.4's trial.json: only the best epoch's value per metric."""
    return {"trial_id": trial_id, "hyperparameters": {"space": [], "values": {}},
            "metrics": {"metrics": {
                "val_accuracy": {"direction": "max",
                                 "observations": [{"value": [score], "step": 2}]},
                "val_loss": {"direction": "min",
                             "observations": [{"value": [1.2 - score], "step": 2}]}}},
            "score": score, "best_step": 2, "status": "COMPLETED", "message": None}


@pytest.fixture
def search_dir(tmp_path):
    project = tmp_path / "tuning" / "kerascnn"
    project.mkdir(parents=True)
    rows = make_rows()
    (project / "leaderboard.json").write_text(json.dumps(rows, indent=2))
    # as tune writes it: no objective named; the report finds it in the trial files
    (project / "search.yaml").write_text("tuner: hyperband\nmax_trials: 8\nepochs: 4\n")
    (project / "oracle.json").write_text("{}")
    for trial_id, score, *_ in TRIALS:
        folder = project / f"trial_{trial_id}"
        folder.mkdir()
        (folder / "trial.json").write_text(json.dumps(trial_json(trial_id, score)))
    # per-epoch histories for the two best trials (CSVLogger and History layouts)
    (project / "trial_0003" / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        "0,0.70,0.90,0.80,0.60\n1,0.85,0.50,0.88,0.40\n2,0.90,0.30,0.9125,0.2875\n")
    (project / "trial_0001" / "history.json").write_text(json.dumps(
        {"val_accuracy": [0.75, 0.905], "val_loss": [0.7, 0.295]}))
    return project


class _TableParser(HTMLParser):
    """Collects the leaderboard table: header texts and per-row cell attributes."""

    def __init__(self):
        super().__init__()
        self.header, self.rows, self.images = [], [], []
        self._in_table = self._in_th = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "leaderboard":
            self._in_table = True
        elif self._in_table and tag == "tr" and "data-trial" in attrs:
            self.rows.append({"trial": attrs["data-trial"], "cells": []})
        elif self._in_table and tag == "td":
            self.rows[-1]["cells"].append(attrs)
        elif self._in_table and tag == "th":
            self._in_th = True
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th:
            self.header.append(data)


def test_html_leaderboard_equals_leaderboard_json(search_dir, tmp_path):
    from kerascnn.report import write_report

    paths = write_report(search_dir, tmp_path / "report")
    rows = json.loads((search_dir / "leaderboard.json").read_text())
    parser = _TableParser()
    parser.feed(paths["html"].read_text())
    assert [r["trial"] for r in parser.rows] == [r["trial_id"] for r in rows]
    keys = {k for row in rows for k in row}
    assert set(parser.header) == keys
    assert parser.header[:6] == ["rank", "trial_id", "status", "score", "val_loss", "params"]
    for row, drawn in zip(rows, parser.rows):
        shown = {c["data-column"]: json.loads(c["data-value"])
                 for c in drawn["cells"] if "data-value" in c}
        assert shown == row  # every value, exactly; nothing added
        blank = [c["data-column"] for c in drawn["cells"] if "data-value" not in c]
        assert set(blank) == keys - set(row)  # inactive hyperparameters stay empty
    assert parser.images == ["score_vs_cost.png", "score_by_depth.png", "learning_curves.png"]
    for name in parser.images:
        assert (tmp_path / "report" / name).stat().st_size > 5000


def test_markdown_leaderboard_rows_and_rounding(search_dir, tmp_path):
    from kerascnn.report import format_value, write_report

    paths = write_report(search_dir, tmp_path / "report")
    text = paths["markdown"].read_text()
    rows = json.loads((search_dir / "leaderboard.json").read_text())
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:]]
    assert len(body) == len(rows)
    for row, cells in zip(rows, body):
        for column, cell in zip(header, cells):
            assert cell == format_value(row.get(column)), (column, cell)
    assert format_value(0.7333333333333333) == "0.7333"
    assert format_value(120394) == "120,394"
    assert "Best: trial 0003 with 0.9125, 120,394 parameters." in text
    assert "![Score against size: 7 completed trials](score_vs_cost.png)" in text


def test_pareto_front():
    from kerascnn.report import pareto_front

    points = [(10, 0.80), (5, 0.70), (20, 0.90), (15, 0.85), (12, 0.60), (25, 0.90)]
    assert pareto_front(points) == [1, 0, 3, 2]
    assert pareto_front([(p, -s) for p, s in points], direction="min") == [1, 0, 3, 2]
    assert pareto_front([]) == []
    assert pareto_front([(1, 0.5), (1, 0.6)]) == [1]


def test_score_vs_cost_marks_the_pareto_front(search_dir):
    from kerascnn.report import load_search, plot_score_vs_cost

    search = load_search(search_dir)
    assert (search.objective, search.direction) == ("val_accuracy", "max")
    plot = plot_score_vs_cost(search)
    # 7850 -> 0.88, 52010 -> 0.905, 120394 -> 0.9125 dominate everything else
    assert plot.data["params"]["front"] == ["0000", "0001", "0003"]
    assert sorted(plot.data["params"]["trial_ids"]) == sorted(t[0] for t in TRIALS)
    assert plot.data["macs"]["front"] == ["0000", "0001", "0003"]
    params_ax = plot.figure.axes[0]
    assert params_ax.get_xlabel() == "parameters"
    assert params_ax.get_ylabel() == "val_accuracy (max)"
    front_line = [l for l in params_ax.get_lines() if l.get_label() == "Pareto front"][0]
    assert list(front_line.get_xdata()) == [7850, 52010, 120394]


def test_score_by_depth_groups_by_n_m_k(search_dir):
    from kerascnn.report import depth_values, load_search, plot_score_by_depth

    search = load_search(search_dir)
    plot = plot_score_by_depth(search)
    for letter, position in (("N", 2), ("M", 3), ("K", 4)):
        expected: dict[float, list[float]] = {}
        for trial in TRIALS:
            expected.setdefault(float(trial[position]), []).append(trial[1])
        assert plot.data[letter] == expected
    assert [ax.get_xlabel() for ax in plot.figure.axes] == [
        "N = convs per block", "M = conv blocks", "K = dense layers"]
    assert depth_values({"hyperparameters": {"convs_per_block_1": 1, "convs_per_block_2": 3,
                                             "dense_units": [64, 32]}}) == \
        {"N": 2.0, "M": None, "K": 2.0}


def test_score_by_depth_shows_values_the_search_fixed(tmp_path):
    """Only searched hyperparameters are in the rows; fixed ones come from search.yaml."""
    from kerascnn.report import load_search, plot_score_by_depth

    rows = [{k: v for k, v in row.items() if k != "convs_per_block"} for row in make_rows()]
    (tmp_path / "leaderboard.json").write_text(json.dumps(rows))
    (tmp_path / "search.yaml").write_text(
        "tuner: random\nspace:\n  conv_blocks: [1, 2, 3]\n  convs_per_block: 2\n"
        "  dense_layers: [0, 1, 2]\n")
    search = load_search(tmp_path)
    assert search.fixed == {"convs_per_block": 2}
    plot = plot_score_by_depth(search)
    assert plot.data["N"] == {2.0: [t[1] for t in TRIALS]}
    assert [ax.get_title() for ax in plot.figure.axes] == [
        "score by N (fixed)", "score by M", "score by K"]


def test_learning_curves_of_the_best_trials(search_dir):
    from kerascnn.report import load_search, plot_best_learning_curves, trial_history

    search = load_search(search_dir)
    assert trial_history(search, "0003")["val_accuracy"] == [(1, 0.80), (2, 0.88), (3, 0.9125)]
    assert trial_history(search, "0001")["val_loss"] == [(1, 0.7), (2, 0.295)]
    assert trial_history(search, "0006") == {}  # one best-epoch value is no curve
    plot = plot_best_learning_curves(search, top=3)
    assert list(plot.data) == ["0003", "0001"]
    objective_ax, loss_ax = plot.figure.axes
    assert objective_ax.get_ylabel() == "val_accuracy" and loss_ax.get_ylabel() == "val_loss"
    assert [l.get_label() for l in objective_ax.get_lines()] == ["trial 0003", "trial 0001"]


def test_cli_report(runner, search_dir, tmp_path):
    from kerascnn.cli import main

    out = tmp_path / "report"
    result = runner.invoke(main, ["report", str(search_dir.parent), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    assert str(out / "index.html") in result.output


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_report_bad_inputs(runner, search_dir, tmp_path):
    from kerascnn.cli import main

    out = tmp_path / "report"
    not_search = tmp_path / "photos"
    not_search.mkdir()
    (not_search / "cat.png").write_bytes(b"x")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "leaderboard.json").write_text("{not json")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "leaderboard.json").write_text(json.dumps({"hello": 1}))
    cases = [
        ([str(not_search)], ["Not a search folder", "photos"]),
        ([str(tmp_path / "missing")], ["no such folder"]),
        ([str(broken)], ["not valid JSON"]),
        ([str(wrong)], ["not a list of trials"]),
        ([str(search_dir), "--top", "0"], ["--top"]),
    ]
    for args, needles in cases:
        _one_line_error(runner.invoke(main, ["report", *args, "--output", str(out)]), *needles)
    assert not out.exists()
    out.mkdir()
    (out / "index.html").write_text("mine")
    _one_line_error(runner.invoke(main, ["report", str(search_dir), "--output", str(out)]),
                    "--overwrite")
    assert (out / "index.html").read_text() == "mine"
    result = runner.invoke(main, ["report", str(search_dir), "-o", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    two = tmp_path / "two"
    for name in ("a", "b"):
        (two / name).mkdir(parents=True)
        (two / name / "leaderboard.json").write_text("[]")
    _one_line_error(runner.invoke(main, ["report", str(two), "-o", str(tmp_path / "r2")]),
                    "several searches", "a, b")


@pytest.mark.slow
def test_report_of_a_real_search(runner, tmp_path):
    """A real two-trial search on a small slice of the bundled sample, then its report."""
    import kerascnn
    from kerascnn.report import load_search, write_report

    result = kerascnn.tune(
        "fashion_mnist_sample", tuner="random", max_trials=2, epochs=1,
        directory=str(tmp_path / "tuning"), project_name="tiny", seed=0,
        space={"conv_blocks": [1, 2], "convs_per_block": 1, "filters": 8,
               "dense_layers": [0, 1], "dense_units": 16})
    project = tmp_path / "tuning" / "tiny"
    rows = json.loads((project / "leaderboard.json").read_text())
    assert len(rows) == 2
    paths = write_report(project, tmp_path / "report")
    parser = _TableParser()
    parser.feed(paths["html"].read_text())
    assert [r["trial"] for r in parser.rows] == [r["trial_id"] for r in rows]
    for row, drawn in zip(rows, parser.rows):
        shown = {c["data-column"]: json.loads(c["data-value"])
                 for c in drawn["cells"] if "data-value" in c}
        assert shown == row
    search = load_search(project)
    assert search.best(1)[0]["trial_id"] == rows[0]["trial_id"]
    # search.yaml names no objective: it is found in keras-tuner's trial files
    assert (search.objective, search.direction) == ("val_accuracy", "max")
    assert "score_vs_cost.png" in parser.images
    del result
