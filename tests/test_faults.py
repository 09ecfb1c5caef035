"""Surviving faults: kill -9 and resume, diverging trials, too many failures.

`test_kill_and_resume` runs `kerascnn tune` as a real process, kills it with
SIGKILL after two completed trials, runs the same command again and checks
that the two trials are kept, the total is reached, no trial ran twice and
every JSON file parses.
"""

from __future__ import annotations

import json
import math
import time
import zipfile

import pytest

from test_distributed import SPACE, Procs, _args, all_json_parse, free_port, tiny_npz


def _tune_args(project: str, max_trials: int) -> list[str]:
    return ["--dataset", "tiny.npz", "--tuner", "random", "--max-trials", str(max_trials),
            "--time-budget", "none",
            "--epochs", "1", "--batch-size", "64", "--space", SPACE, "--directory", "runs",
            "--project-name", project, "--keep-checkpoints", "2"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_and_resume(tmp_path):
    tiny_npz(tmp_path / "tiny.npz")
    project = tmp_path / "runs" / "search"
    args = _tune_args("search", max_trials=4)
    start = time.time()
    with Procs(tmp_path) as procs:
        procs.start("first", *args)
        procs.wait_for("first", "trial 2/4:", timeout=400)
        procs.kill("first")  # kill -9 while the third trial starts
        killed_at = time.time() - start
        # a kill leaves no half-written file
        all_json_parse(project)
        before = [r for r in json.loads((project / "leaderboard.json").read_text())
                  if r["status"] == "COMPLETED"]
        assert len(before) >= 2
        # anytime: the leader so far is already a usable model
        assert zipfile.is_zipfile(project / "best" / "model.keras")
        anytime = json.loads((project / "best" / "metrics.json").read_text())
        assert anytime["model"] == "search checkpoint" and anytime["test_accuracy"] is None
        assert anytime["trial_id"] in {r["trial_id"] for r in before}
        procs.start("second", *args)
        assert procs.wait("second", 520 - (time.time() - start)) == 0, procs.log("second")
        log = procs.log("second")
    print(f"kill -9 after 2 trials at {killed_at:.1f}s; resumed to 4 trials in "
          f"{time.time() - start:.1f}s in all")
    assert "Resuming" in log and f"{len(before)} trial(s) done" in log
    rows = json.loads((project / "leaderboard.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows)
    assert len({r["trial_id"] for r in rows}) == 4
    by_id = {r["trial_id"]: r for r in rows}
    for old in before:  # kept as they were, not rerun
        new = by_id[old["trial_id"]]
        assert new["score"] == old["score"] and new["seconds"] == old["seconds"]
    oracle = json.loads((project / "oracle.json").read_text())
    assert len(oracle["end_order"]) == len(set(oracle["end_order"])) == 4
    assert len(list(project.glob("trial_*/checkpoint*"))) == 2
    files = all_json_parse(project)
    assert len(files) >= 4 + 5  # trial.json per trial, oracle, tuner, leaderboard, manifest...
    assert not list(project.rglob("*.tmp"))
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["trials"] == 4


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_chief_restarted_resumes_the_search(tmp_path):
    tiny_npz(tmp_path / "tiny.npz")
    port = free_port()
    project = tmp_path / "runs" / "search"
    start = time.time()
    with Procs(tmp_path) as procs:
        procs.start("chief", *_args("search", port), "--distributed", "chief")
        procs.start("w1", *_args("search", port), "--distributed", "worker", "--worker-id", "w1")
        procs.wait_for("chief", "trial 1/4:", timeout=400)
        procs.kill("chief")  # kill -9
        all_json_parse(project)
        procs.start("chief2", *_args("search", port), "--distributed", "chief")
        for name in ("chief2", "w1"):
            assert procs.wait(name, 540 - (time.time() - start)) == 0, procs.log(name)
        log = procs.log("chief2")
    print(f"kill -9 the chief after 1 trial, restart it, 4 trials: "
          f"{time.time() - start:.1f}s")
    assert "Resuming" in log and "Chief: the search is complete (4 trials)" in log
    rows = json.loads((project / "leaderboard.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows)
    oracle = json.loads((project / "oracle.json").read_text())
    assert len(oracle["end_order"]) == len(set(oracle["end_order"])) == 4
    assert (project / "best" / "model.keras").is_file()
    all_json_parse(project)


def _poison(monkeypatch, poisoned):
    """Trials whose ids are in `poisoned` diverge: their training loss is NaN."""
    import keras
    import keras_tuner

    original = keras_tuner.Tuner.run_trial

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id not in poisoned and "*" not in poisoned:
            return original(self, trial, *args, **kwargs)
        history = keras.callbacks.History()
        history.epoch = [0]
        history.history = {"loss": [float("nan")], "accuracy": [0.1],
                           "val_loss": [float("nan")], "val_accuracy": [0.1]}
        return [history]

    monkeypatch.setattr(keras_tuner.Tuner, "run_trial", run_trial)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_diverging_trial_is_failed_with_its_reason_and_the_search_goes_on(
        tmp_path, monkeypatch):
    from kerascnn.tuning import tune

    tiny_npz(tmp_path / "tiny.npz")
    _poison(monkeypatch, {"0"})
    result = tune(str(tmp_path / "tiny.npz"), tuner="random", max_trials=3, epochs=1,
                  batch_size=64, space={"conv_blocks": [1, 2], "filters": [4, 8]},
                  directory=str(tmp_path / "runs"), project_name="nan", max_failed_trials=2)
    rows = {r["trial_id"]: r for r in result.leaderboard}
    assert rows["0"]["status"] == "FAILED" and rows["0"]["rank"] is None
    assert "diverged: the training loss is nan at epoch 1" in rows["0"]["message"]
    assert [r["status"] for r in result.leaderboard].count("COMPLETED") == 2
    assert result.best_trial_id != "0" and math.isfinite(result.test_loss)
    saved = json.loads((tmp_path / "runs" / "nan" / "leaderboard.json").read_text())
    assert [r["trial_id"] for r in saved] == [r["trial_id"] for r in result.leaderboard]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_max_failed_trials_ends_the_search_with_its_reason(tmp_path, monkeypatch):
    from kerascnn.tuning import tune

    tiny_npz(tmp_path / "tiny.npz")
    _poison(monkeypatch, {"*"})
    with pytest.raises(RuntimeError, match="2 consecutive trials failed .*diverged"):
        tune(str(tmp_path / "tiny.npz"), tuner="random", max_trials=6, epochs=1,
             batch_size=64, space={"conv_blocks": [1, 2], "filters": [4, 8]},
             directory=str(tmp_path / "runs"), project_name="nan", max_failed_trials=2)
    rows = json.loads((tmp_path / "runs" / "nan" / "leaderboard.json").read_text())
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"]
    assert not (tmp_path / "runs" / "nan" / "best").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_during_the_final_training_then_resume(tmp_path):
    """kill -9 in the final training; the same command resumes it (no trial is rerun)
    and ends with a tested model and its metrics, within what is left of the budget."""
    tiny_npz(tmp_path / "tiny.npz")
    project = tmp_path / "runs" / "search"
    args = ["--dataset", "tiny.npz", "--time-budget", "80s", "--batch-size", "64",
            "--space", SPACE, "--directory", "runs", "--project-name", "search"]
    with Procs(tmp_path) as procs:
        procs.start("first", *args)
        procs.wait_for("first", "final training epoch 2/", timeout=400)
        procs.kill("first")
        all_json_parse(project)
        state = json.loads((project / "budget.json").read_text())
        assert state["phase"] == "final"
        before = json.loads((project / "leaderboard.json").read_text())
        # the search checkpoint of the winner is the result until the final training ends
        anytime = json.loads((project / "best" / "metrics.json").read_text())
        assert anytime["trial_id"] == state["winner"] and anytime["test_accuracy"] is None
        start = time.time()
        procs.start("second", *args)
        assert procs.wait("second", 400) == 0, procs.log("second")
        resumed_seconds = time.time() - start
        log = procs.log("second")
    assert "Resuming" in log
    rows = json.loads((project / "leaderboard.json").read_text())
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in before]  # no new trial
    metrics = json.loads((project / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] == state["winner"] and 0.0 <= metrics["test_accuracy"] <= 1.0
    # the final training went on from its last finished epoch
    assert metrics["final_training"]["epochs"] >= 2
    done = json.loads((project / "budget.json").read_text())
    assert done["phase"] == "done" and done["spent"] <= 80 * 1.05 + 10  # + one restart
    assert resumed_seconds < 80
    manifest = json.loads((project / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    all_json_parse(project)
