"""kerascnn tune: the CLI end to end, resume, budget, bad input (tiny data, 1 epoch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kerascnn.cli import main
from kerascnn.checks import InputError, parse_duration

# a tiny space: trials of well under a second of training each
TINY_SPACE = ("{conv_blocks: {min: 1, max: 2}, convs_per_block: 1, filters: [4, 8], "
              "kernel_size: 3, batch_norm: false, head: flatten, dense_layers: {min: 0, max: 1},"
              " dense_units: 16, dropout: 0.0, learning_rate: [0.001, 0.003]}")
FILES = ("leaderboard.csv", "leaderboard.json", "best/model.keras", "best/spec.yaml",
         "best/metrics.json", "search.yaml", "manifest.json", "oracle.json")


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory) -> str:
    """28x28 gray images whose class is the bright quadrant (4 classes), as an .npz."""
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.integers(0, 60, (n, 28, 28, 1)).astype("uint8")
        y = rng.integers(0, 4, n)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, r * 14:(r + 1) * 14, col * 14:(col + 1) * 14, 0] += 150
        return x, y

    x_train, y_train = make(160)
    x_test, y_test = make(40)
    path = tmp_path_factory.mktemp("data") / "quadrants.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def _tune(runner, data, tmp_path, *extra):
    # a trial count and no time budget: no final training, the trials are the test
    budget = [] if "--time-budget" in extra else ["--time-budget", "none"]
    args = ["tune", "--dataset", data, "--directory", str(tmp_path / "runs"),
            "--project-name", "p", "--batch-size", "32", "--epochs", "1", "--space", TINY_SPACE,
            *budget, *extra]
    return runner.invoke(main, args, catch_exceptions=False)


def _rows(project: Path) -> list[dict]:
    return json.loads((project / "leaderboard.json").read_text())


def test_parse_duration():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400 and parse_duration(2.5) == 2.5
    assert parse_duration(None) is None
    with pytest.raises(InputError, match=r"duration such as 90s.*Received: time_budget='15x'"):
        parse_duration("15x")
    with pytest.raises(InputError, match=r"must be positive"):
        parse_duration(0)


def _hparams(event_file: Path) -> dict:
    """The HParams plugin's session-start values written to one TensorBoard event file."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    found: dict = {}
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != metadata.PLUGIN_NAME:
                continue
            data = plugin_data_pb2.HParamsPluginData.FromString(
                value.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                for name, hparam in data.session_start_info.hparams.items():
                    kind = hparam.WhichOneof("kind")
                    found[name] = getattr(hparam, kind)
    return found


def test_cli_end_to_end_writes_every_file_then_resumes(runner, quadrants, tmp_path):
    import shutil

    from kerascnn.runs import load_model, read_model_metadata
    from kerascnn.spec import CNNSpec

    data = str(shutil.copy(quadrants, tmp_path / "quadrants.npz"))  # changed below
    result = _tune(runner, data, tmp_path, "--tuner", "random", "--max-trials", "2",
                   "--tensorboard")
    assert result.exit_code == 0, result.output
    project = tmp_path / "runs" / "p"
    for name in FILES:
        assert (project / name).is_file(), name
    assert sorted(p.name for p in project.glob("trial_*")) == ["trial_0", "trial_1"]
    # per-epoch curves for the report, and one TensorBoard run (with HParams) per trial
    history = json.loads((project / "trial_0" / "history.json").read_text())
    assert len(history["val_accuracy"]) == 1 and len(history["loss"]) == 1
    logs = project / "tensorboard"
    assert sorted(p.name for p in logs.iterdir()) == ["0", "1"]
    trial_values = json.loads((project / "trial_0" / "trial.json").read_text())[
        "hyperparameters"]["values"]
    hparams = {}
    for event_file in (logs / "0").rglob("events.out.tfevents.*"):
        hparams.update(_hparams(event_file))
    # the HParams view shows trial 0's searched values
    assert hparams["conv_blocks"] == trial_values["conv_blocks"]
    assert hparams["learning_rate"] == pytest.approx(trial_values["learning_rate"])
    assert "Top 2 of the leaderboard" in result.stdout
    assert f"Best model: {project / 'best' / 'model.keras'}" in result.stdout

    rows = _rows(project)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["score"] >= rows[-1]["score"]
    for row in rows:
        assert {"trial_id", "score", "epochs", "seconds", "params", "macs",
                "receptive_field", "conv_blocks", "filters", "learning_rate"} <= set(row)
        assert "padding" not in row  # fixed values are not hyperparameters
        assert row["epochs"] == 1 and row["params"] > 0
        if row["dense_layers"] == 0:
            assert "dense_units_1" not in row  # inactive: not shown
    csv_lines = (project / "leaderboard.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,trial_id,status,score") and len(csv_lines) == 3

    metrics = json.loads((project / "best" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["trial_id"] == rows[0]["trial_id"]
    spec = CNNSpec.load(project / "best" / "spec.yaml")
    assert spec.conv_blocks == rows[0]["conv_blocks"]
    model = load_model(project / "best" / "model.keras")
    assert model.count_params() == rows[0]["params"]  # the rescaling layer has no weights
    assert read_model_metadata(project / "best" / "model.keras")["class_names"] == \
        ["0", "1", "2", "3"]
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["dataset_fingerprint"] and manifest["status"] == "finished"
    assert isinstance(manifest["command_line"], list) and manifest["versions"]["keras-tuner"]
    import yaml

    search = yaml.safe_load((project / "search.yaml").read_text())
    assert search["tuner"] == "random" and search["space"]["conv_blocks"] == {"min": 1, "max": 2}

    # search.yaml is a valid --config: the same search again resumes with nothing to do
    result = runner.invoke(main, ["tune", "--config", str(project / "search.yaml"),
                                  "--directory", str(tmp_path / "runs"), "--project-name", "p"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(_rows(project)) == 2
    _assert_changed_space_is_refused(runner, data, tmp_path, project)

    # the same file name with other images: the data's fingerprint changed, refused
    with np.load(data) as f:
        arrays = dict(f)
    arrays["y_train"] = (arrays["y_train"] + 1) % 4
    np.savez(data, **arrays)
    before = {p: p.stat().st_mtime_ns for p in project.rglob("*") if p.is_file()}
    result = _tune(runner, data, tmp_path, "--tuner", "random", "--max-trials", "3")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert "cannot be resumed" in result.stderr and "dataset_fingerprint" in result.stderr
    assert before == {p: p.stat().st_mtime_ns for p in project.rglob("*") if p.is_file()}


def _assert_changed_space_is_refused(runner, quadrants, tmp_path, project):
    before = {p: p.stat().st_mtime_ns for p in project.rglob("*") if p.is_file()}
    result = runner.invoke(main, ["tune", "--dataset", quadrants, "--directory",
                                  str(tmp_path / "runs"), "--project-name", "p", "--tuner",
                                  "random", "--epochs", "1", "--batch-size", "32",
                                  "--max-trials", "6",
                                  "--space", TINY_SPACE.replace("max: 2}", "max: 3}")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "cannot be resumed" in result.stderr and "conv_blocks" in result.stderr
    assert before == {p: p.stat().st_mtime_ns for p in project.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resume_three_then_five(runner, quadrants, tmp_path):
    result = _tune(runner, quadrants, tmp_path, "--tuner", "random", "--max-trials", "3")
    assert result.exit_code == 0, result.output
    project = tmp_path / "runs" / "p"
    first = {r["trial_id"]: r for r in _rows(project)}
    assert len(first) == 3
    # the same command with more trials adds two; the first three are unchanged
    result = _tune(runner, quadrants, tmp_path, "--tuner", "random", "--max-trials", "5")
    assert result.exit_code == 0, result.output
    rows = _rows(project)
    assert len(rows) == 5 and all(r["status"] == "COMPLETED" for r in rows)
    for trial_id, old in first.items():
        new = next(r for r in rows if r["trial_id"] == trial_id)
        assert {k: v for k, v in new.items() if k != "rank"} == \
            {k: v for k, v in old.items() if k != "rank"}
    _assert_changed_space_is_refused(runner, quadrants, tmp_path, project)


def test_python_api_hyperband_respects_max_trials(quadrants, tmp_path):
    import kerascnn

    result = kerascnn.tune(quadrants, tuner="hyperband", max_trials=2, epochs=3, batch_size=32,
                           time_budget=None,
                           space={"conv_blocks": (1, 2), "convs_per_block": 1, "filters": 4,
                                  "batch_norm": False, "dense_layers": 0, "head": "gap",
                                  "kernel_size": 3, "dropout": 0.0},
                           directory=str(tmp_path), project_name="hb")
    assert len(result.leaderboard) == 2  # Hyperband would run more without the cap
    assert result.best_model_path == tmp_path / "hb" / "best" / "model.keras"
    assert result.best_spec.conv_blocks in (1, 2) and result.best_spec.filters[0] == 4
    assert result.leaderboard[0]["trial_id"] == result.best_trial_id
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.mark.slow
def test_valid_padding_space_random_search_never_fails(quadrants, tmp_path):
    """Most depths are impossible at 28x28 with 'valid' padding: no trial may fail."""
    import kerascnn

    result = kerascnn.tune(quadrants, tuner="random", max_trials=12, epochs=1, batch_size=32,
                           time_budget=None,
                           space={"conv_blocks": (1, 6), "convs_per_block": (1, 3),
                                  "padding": "valid", "filters": 4, "dense_layers": 0,
                                  "batch_norm": False},
                           directory=str(tmp_path), project_name="valid")
    rows = result.leaderboard
    assert len(rows) == 12
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert any(r["conv_blocks"] > 1 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["bayesian", "grid"])
def test_other_tuners(runner, quadrants, tmp_path, tuner):
    result = _tune(runner, quadrants, tmp_path, "--tuner", tuner, "--max-trials", "4")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "runs" / "p")
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows)
    keys = [json.dumps({k: r.get(k) for k in ("conv_blocks", "filters", "dense_layers",
                                             "learning_rate", "dense_units_1")}) for r in rows]
    assert len(set(keys)) == 4  # never the same candidate twice


@pytest.mark.slow
def test_time_budget_is_a_contract(runner, tmp_path):
    """`--time-budget 60s` on the bundled sample: search, final training, test and
    writing end within the budget + 5%; every phase had its share."""
    budget = 60.0
    start = time.time()
    result = runner.invoke(main, ["tune", "--directory", str(tmp_path), "--project-name", "b",
                                  "--time-budget", "60s"], catch_exceptions=False)
    elapsed = time.time() - start
    assert result.exit_code == 0, result.output
    assert elapsed <= budget * 1.05, elapsed
    project = tmp_path / "b"
    rows = _rows(project)
    # successive halving: the seeds first, each row with its rung and both timings
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert {"rung", "fraction", "predicted_seconds", "seconds"} <= set(rows[0])
    first = json.loads((project / "trial_0000" / "trial.json").read_text())
    assert first["hyperparameters"]["values"]["conv_blocks"] == 2  # the keras.io convnet
    state = json.loads((project / "budget.json").read_text())
    assert state["phase"] == "done" and state["spent"] <= budget * 1.05
    # the search stopped at about half the budget: its last trial ended by then
    # (plus at most one trial's epoch), the rest went to the final training
    metrics = json.loads((project / "best" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5
    # the leader, or a larger network the validation split could not tell from it
    assert metrics["winner_reason"] is None or metrics["winner_reason"].startswith("trial ")
    final = metrics["final_training"]
    if final["epochs"]:  # the winner trained again for the rest of the budget
        assert final["epochs"] >= 2 and final["seconds"] >= 0.15 * budget, final
        assert final["holdout_accuracy_final"] is not None
        # the default space has no augmentation: the long final training adds a mild shift
        assert final["augmentation"] == [{"name": "translation", "factor": 0.05}], final
    else:  # a loaded machine: the search's share left too little for two epochs
        assert metrics["final_model_reason"].startswith("no final training"), metrics
        assert metrics["final_model"] == "best checkpoint of the best trial"
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["budget_seconds"] == budget
    search = [line for line in result.output.splitlines() if line.startswith("trial ")]
    assert search and all(" of 0:30" in line for line in search)  # "search 0:12 of 0:30"


@pytest.mark.slow
def test_no_time_left_for_the_final_training_keeps_the_search_checkpoint(quadrants, tmp_path):
    import kerascnn

    result = kerascnn.tune(quadrants, time_budget=6, batch_size=32, space={
        "conv_blocks": 1, "convs_per_block": 1, "filters": 4, "dense_layers": 0},
        directory=str(tmp_path), project_name="short")
    metrics = json.loads((result.directory / "best" / "metrics.json").read_text())
    assert metrics["final_model"] == "best checkpoint of the best trial"
    assert metrics["final_model_reason"].startswith("no final training")
    assert result.final_model == metrics["final_model"]
    assert result.best_trial_id == result.leaderboard[0]["trial_id"]
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.mark.parametrize("args, match", [
    (["--tuner", "annealing"], r"Invalid value for '--tuner'"),
    (["--max-trials", "0"], r"--max-trials"),
    (["--epochs", "0"], r"--epochs"),
    (["--time-budget", "15x"], r"duration such as 90s, 15m or 1h30m"),
    (["--space", "{conv_blocks: {min: 4, max: 2}}"], r"min > max"),
    (["--space", "{depth: [1, 2]}"], r"Unrecognized search-space arguments"),
    (["--space", "[1, 2"], r"not a file and not a YAML mapping"),
    (["--space", "{conv_blocks: 1}", "--max-params", "10"],
     r"No architecture in the search space meets max_params=10"),
    (["--space", "{conv_blocks: {min: 6, max: 7}, padding: valid}"],
     r"No architecture in the search space fits"),
    (["--tuner", "grid"], r"Grid search needs a finite set of values"),
    (["--validation-split", "0"], r"validation_split must be in \(0, 1\)"),
    (["--time-budget", "none"], r"A search needs an end: give time_budget"),
    (["--time-budget", "0s"], r"time_budget must be positive"),
    (["--dataset", "no_such_dataset"], r"no_such_dataset"),
])
def test_bad_input_is_one_line_and_writes_nothing(runner, tmp_path, args, match):
    out = tmp_path / "runs"
    result = runner.invoke(main, ["tune", "--directory", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    import re

    assert re.search(match, result.stderr), result.stderr
    assert not out.exists()


def test_unreadable_config_is_refused(runner, tmp_path):
    bad = tmp_path / "search.yaml"
    bad.write_text("tuner: [unclosed\n")
    result = runner.invoke(main, ["tune", "--config", str(bad), "--directory",
                                  str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Could not parse" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_space_from_a_yaml_file_or_inline(tmp_path):
    import click

    from kerascnn.cli.tune import SpaceParam

    path = tmp_path / "space.yaml"
    path.write_text("conv_blocks: {min: 1, max: 6}\nconvs_per_block: {min: 1, max: 3}\n"
                    "padding: valid\nkernel_size: [3, 5]\n")
    space = SpaceParam().convert(str(path), None, None)
    assert space == {"conv_blocks": {"min": 1, "max": 6}, "convs_per_block": {"min": 1, "max": 3},
                     "padding": "valid", "kernel_size": [3, 5]}
    from kerascnn.search_space import SearchSpace

    config = SearchSpace((28, 28, 1), 10, **space).to_config()
    assert config["conv_blocks"] == {"min": 1, "max": 6} and config["kernel_size"] == [3, 5]
    # a search.yaml works too: its `space:` is taken
    (tmp_path / "search.yaml").write_text("tuner: random\nspace:\n  filters: [8, 16]\n")
    assert SpaceParam().convert(str(tmp_path / "search.yaml"), None, None) == \
        {"filters": [8, 16]}
    assert SpaceParam().convert("{head: gap}", None, None) == {"head": "gap"}
    with pytest.raises(click.BadParameter, match=r"expected a YAML mapping"):
        SpaceParam().convert("[1, 2]", None, None)
