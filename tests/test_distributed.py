"""Distributed search: options, the chief's lifecycle, workers, checkpoints on disk.

The slow tests start real processes (`python -m kerascnn tune ...`) on
loopback, on a free port, with a few hundred 28x28x1 images and one epoch per
trial; every process is bounded by a timeout and killed if the test fails.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kerascnn import distributed
from kerascnn.checks import InputError
from kerascnn.distributed import ChiefUnavailableError, DistributedConfig, parse_address, resolve

# ---------------------------------------------------------------------------
# Helpers shared with test_faults.py
# ---------------------------------------------------------------------------

SPACE = "{conv_blocks: [1, 2], filters: [4, 8], dense_layers: 0}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_npz(path: Path, n_train: int = 360, n_test: int = 100) -> Path:
    """A few hundred 28x28 Fashion-MNIST images (from the bundled sample)."""
    from kerascnn.data import builtin

    with np.load(builtin.SAMPLE_PATH) as f:
        np.savez(path, x_train=f["x_train"][:n_train], y_train=f["y_train"][:n_train],
                 x_test=f["x_test"][:n_test], y_test=f["y_test"][:n_test])
    return path


class Procs:
    """Child processes, each in its own session, all killed on exit."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        for key in (distributed.ENV_TUNER_ID, distributed.ENV_ORACLE_IP,
                    distributed.ENV_ORACLE_PORT):
            env.pop(key, None)
        log = self.root / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "kerascnn", "tune", *args],
                                    cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def wait_for(self, name: str, text: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log(name):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{name} never printed {text!r}:\n{self.log(name)[-3000:]}")

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout:.0f}s:\n"
                                 f"{self.log(name)[-3000:]}") from None

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name in list(self.procs):
            try:
                self.kill(name)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def all_json_parse(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.json"))
    for path in files:
        json.loads(path.read_text())
    return files


# ---------------------------------------------------------------------------
# Options (fast)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("localhost:1", ("localhost", 1)),
    ("node-1.cluster:65535", ("node-1.cluster", 65535)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text,match", [
    ("127.0.0.1", "HOST:PORT"), ("", "HOST:PORT"), (":8000", "HOST:PORT"),
    ("host:port", "HOST:PORT"), ("127.0.0.1:0", "out of range"),
    ("127.0.0.1:70000", "out of range"), ("::1:8000", "HOST:PORT"), (8000, "HOST:PORT"),
])
def test_parse_address_refuses(text, match):
    with pytest.raises(InputError, match=match):
        parse_address(text)


def test_resolve_local_and_orphan_options():
    assert resolve(environ={}) is None
    with pytest.raises(InputError, match="--distributed chief|worker"):
        resolve(oracle_address="127.0.0.1:8000", environ={})
    with pytest.raises(InputError, match="worker_id is for a distributed"):
        resolve(worker_id="w1", environ={})


def test_resolve_worker_and_chief():
    port = free_port()
    worker = resolve("worker", f"127.0.0.1:{port}", "gpu-0", "2m", environ={})
    assert worker == DistributedConfig("worker", "127.0.0.1", port, "gpu-0", 120.0)
    assert worker.environment() == {"KERASTUNER_TUNER_ID": "gpu-0",
                                    "KERASTUNER_ORACLE_IP": "127.0.0.1",
                                    "KERASTUNER_ORACLE_PORT": str(port)}
    chief = resolve("chief", f"127.0.0.1:{port}", environ={})
    assert (chief.role, chief.tuner_id, chief.port) == ("chief", "chief", port)


@pytest.mark.parametrize("kwargs,match", [
    (dict(distributed="boss"), "allowed: chief, worker"),
    (dict(distributed="worker"), "needs a worker_id"),
    (dict(distributed="worker", worker_id="my chief"), "letters, digits"),
    (dict(distributed="worker", worker_id="chief2"), "must not contain 'chief'"),
    (dict(distributed="worker", worker_id="w" * 65), "1-64"),
    (dict(distributed="chief", worker_id="w1"), "worker_id is for a worker"),
    (dict(distributed="worker", worker_id="w1", chief_timeout=0), "positive"),
    (dict(distributed="worker", worker_id="w1", chief_timeout="soon"), "duration"),
    (dict(distributed="chief", oracle_address="no-such-host.invalid:8000"), "does not resolve"),
    (dict(distributed="chief", oracle_address="192.0.2.1:8000"), "not an address of this"),
])
def test_resolve_refuses(kwargs, match):
    with pytest.raises(InputError, match=match):
        resolve(environ={}, **kwargs)


def test_chief_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InputError, match="port is in use"):
            resolve("chief", f"127.0.0.1:{port}", environ={})


def test_chief_warns_when_not_on_loopback(caplog):
    with caplog.at_level(logging.WARNING, logger="kerascnn.distributed"):
        resolve("chief", f"127.0.0.1:{free_port()}", environ={})
    assert "no authentication" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="kerascnn.distributed"):
        resolve("chief", f"0.0.0.0:{free_port()}", environ={})
    assert "no authentication" in caplog.text


def test_keras_tuner_variables_are_read():
    env = {"KERASTUNER_TUNER_ID": "tuner7", "KERASTUNER_ORACLE_IP": "10.1.2.3",
           "KERASTUNER_ORACLE_PORT": "8123"}
    config = resolve(environ=env)
    assert (config.role, config.tuner_id, config.address) == ("worker", "tuner7", "10.1.2.3:8123")
    with pytest.raises(InputError, match="KERASTUNER_TUNER_ID"):
        resolve(environ={"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1"})
    with pytest.raises(InputError, match="KERASTUNER_ORACLE_PORT"):
        resolve(environ={"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_TUNER_ID": "w"})


def test_environment_is_restored(monkeypatch):
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "keep-me")
    config = DistributedConfig("worker", "127.0.0.1", 8000, "w1")
    with distributed.environment(config):
        assert os.environ["KERASTUNER_TUNER_ID"] == "w1"
        assert os.environ["KERASTUNER_ORACLE_IP"] == "127.0.0.1"
    assert "KERASTUNER_TUNER_ID" not in os.environ
    assert os.environ["KERASTUNER_ORACLE_IP"] == "keep-me"


def test_worker_waits_for_its_chief_then_gives_up(caplog):
    from kerascnn.tuning.worker import wait_for_chief

    config = DistributedConfig("worker", "127.0.0.1", free_port(), "w1", chief_timeout=1.5)
    start = time.time()
    with caplog.at_level(logging.INFO, logger="kerascnn.tuning.worker"):
        with pytest.raises(ChiefUnavailableError, match="No chief answered .* within 2s"):
            wait_for_chief(config, every=0.5)
    assert 1.4 <= time.time() - start < 10
    assert "waiting for the chief" in caplog.text


def test_patient_stub_bounds_every_wait_for_a_lost_chief():
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.engine import hyperparameters as hp_module
    from keras_tuner.src.engine import trial as trial_module

    from kerascnn.tuning.worker import _PatientStub

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    calls = []

    class ChiefGone:
        def CreateTrial(self, request, wait_for_ready, timeout):
            calls.append(wait_for_ready)
            raise Unavailable()

        EndTrial = CreateTrial

    config = DistributedConfig("worker", "127.0.0.1", 1, "w1", chief_timeout=1.0)
    stub = _PatientStub(ChiefGone(), config, gone_after=1.0)
    start = time.time()
    response = stub.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id="w1"),
                                wait_for_ready=True, timeout=3600)
    assert trial_module.Trial.from_proto(response.trial).status == "STOPPED"
    assert stub.chief_gone and len(calls) >= 2 and not any(calls)  # retried, never blocked
    with pytest.raises(ChiefUnavailableError, match="Lost the chief .* during EndTrial"):
        stub.EndTrial(protos.get_service().EndTrialRequest(), wait_for_ready=True, timeout=3600)
    assert time.time() - start < 10

    idle = trial_module.Trial(hp_module.HyperParameters(), trial_id="",
                              status=trial_module.TrialStatus.IDLE)

    class Busy:
        def CreateTrial(self, request, wait_for_ready, timeout):
            return protos.get_service().CreateTrialResponse(trial=idle.to_proto())

    start = time.time()
    _PatientStub(Busy(), config).CreateTrial(None)
    assert time.time() - start >= 0.9  # an IDLE answer is not asked again at once


def _trial(trial_id, score, status="COMPLETED"):
    return SimpleNamespace(trial_id=trial_id, score=score, status=status)


def test_prune_keeps_the_best_k_running_and_hyperband_continuations(tmp_path):
    from kerascnn.tuning.storage import prune_checkpoints

    trials = {"0": _trial("0", 0.5), "1": _trial("1", 0.9), "2": _trial("2", 0.7),
              "3": _trial("3", None, "FAILED"), "4": _trial("4", None, "RUNNING"),
              "5": _trial("5", 0.1), "6": _trial("6", float("nan"))}
    for trial_id in trials:
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        (folder / "checkpoint.weights.h5").write_bytes(b"w")
        (folder / "trial.json").write_text("{}")
    oracle = SimpleNamespace(
        trials=trials, objective=SimpleNamespace(direction="max"),
        ongoing_trials={"w1": trials["4"]}, _retry_queue=[],
        _brackets=[{"bracket_num": 1, "rounds": [[{"past_id": None, "id": "5"}], []]}])
    deleted = prune_checkpoints(oracle, tmp_path, keep=2)
    assert sorted(deleted) == ["0", "3", "6"]
    kept = sorted(p.parent.name for p in tmp_path.glob("trial_*/checkpoint*"))
    assert kept == ["trial_1", "trial_2", "trial_4", "trial_5"]  # best 2, running, bracket
    assert len(list(tmp_path.glob("trial_*/trial.json"))) == 7  # the leaderboard's source
    assert prune_checkpoints(oracle, tmp_path, keep=2) == []
    oracle.ongoing_trials = {}
    trials["4"].status, trials["4"].score = "COMPLETED", 0.3
    assert prune_checkpoints(oracle, tmp_path, keep=2, final=True) == ["4", "5"]
    assert sorted(p.parent.name for p in tmp_path.glob("trial_*/checkpoint*")) == [
        "trial_1", "trial_2"]


def test_state_files_are_written_atomically(tmp_path):
    from kerascnn.tuning.storage import save_state

    path = tmp_path / "oracle.json"
    save_state(str(path), {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]


def test_cli_refuses_bad_distributed_options_before_tensorflow(runner, tmp_path):
    from kerascnn.cli import main

    result = runner.invoke(main, ["tune", "--distributed", "worker", "--oracle-address",
                                  "127.0.0.1:99999", "--worker-id", "w1",
                                  "--directory", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "out of range" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_bad_addresses_are_refused_without_importing_tensorflow(tmp_path):
    code = ("import sys\nfrom kerascnn.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'tensorflow' in sys.modules, file=sys.stderr)\n")
    for address in ("127.0.0.1", "[::1:80"):
        done = subprocess.run(
            [sys.executable, "-c", code, "tune", "--distributed", "chief", "--oracle-address",
             address, "--directory", str(tmp_path)],
            capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert lines[-1] == "exit 2 False", done.stderr  # refused, TensorFlow never loaded
        assert address in lines[-2] and len(lines) == 2


# ---------------------------------------------------------------------------
# Real processes (slow)
# ---------------------------------------------------------------------------


def _args(project: str, port: int, max_trials: int = 4, keep: int = 2) -> list[str]:
    return ["--dataset", "tiny.npz", "--tuner", "random", "--max-trials", str(max_trials),
            "--time-budget", "none",
            "--epochs", "1", "--batch-size", "64", "--space", SPACE, "--directory", "runs",
            "--project-name", project, "--keep-checkpoints", str(keep),
            "--oracle-address", f"127.0.0.1:{port}", "--chief-timeout", "5m"]


def _check_complete_search(project_dir: Path, trials: int, keep: int) -> list[dict]:
    rows = json.loads((project_dir / "leaderboard.json").read_text())
    assert len(rows) == trials
    assert sorted(r["trial_id"] for r in rows) == sorted({r["trial_id"] for r in rows})
    assert all(r["status"] == "COMPLETED" for r in rows), rows
    assert [r["rank"] for r in rows] == list(range(1, trials + 1))
    oracle = json.loads((project_dir / "oracle.json").read_text())
    assert len(oracle["end_order"]) == len(set(oracle["end_order"])) == trials
    assert oracle["ongoing_trials"] == {}
    weights = sorted(project_dir.glob("trial_*/checkpoint*"))
    assert len(weights) == keep, weights
    best = rows[0]["trial_id"]
    assert (project_dir / f"trial_{best}" / "checkpoint.weights.h5").is_file()
    assert (project_dir / "best" / "model.keras").is_file()
    metrics = json.loads((project_dir / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] == best
    all_json_parse(project_dir)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chief_and_two_workers_complete_a_search(tmp_path):
    tiny_npz(tmp_path / "tiny.npz")
    port = free_port()
    start = time.time()
    with Procs(tmp_path) as procs:
        # a worker started before its chief waits for it
        procs.start("w1", *_args("search", port), "--distributed", "worker", "--worker-id", "w1")
        procs.wait_for("w1", "waiting for the chief", timeout=240)
        procs.start("chief", *_args("search", port), "--distributed", "chief")
        procs.start("w2", *_args("search", port), "--distributed", "worker", "--worker-id", "w2")
        for name in ("chief", "w1", "w2"):
            assert procs.wait(name, 480 - (time.time() - start)) == 0, procs.log(name)
        logs = {name: procs.log(name) for name in ("chief", "w1", "w2")}
    print(f"chief + 2 workers, 4 trials: {time.time() - start:.1f}s")
    rows = _check_complete_search(tmp_path / "runs" / "search", trials=4, keep=2)
    ran = [line.split("trial ")[1].rstrip(".") for name in ("w1", "w2")
           for line in logs[name].splitlines() if line.startswith(f"Worker {name}: trial ")]
    assert sorted(ran) == sorted(r["trial_id"] for r in rows)  # each trial ran once
    assert "no trial left" in logs["w1"] and "no trial left" in logs["w2"]
    assert "the chief answered after" in logs["w1"]
    assert "Chief: the search is complete (4 trials)" in logs["chief"]
    assert "Traceback" not in "".join(logs.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_restarted_with_its_id_picks_up_its_trial(tmp_path):
    tiny_npz(tmp_path / "tiny.npz")
    port = free_port()
    start = time.time()
    with Procs(tmp_path) as procs:
        procs.start("chief", *_args("search", port), "--distributed", "chief")
        procs.start("w1", *_args("search", port), "--distributed", "worker", "--worker-id", "w1")
        procs.wait_for("w1", "Worker w1: trial ", timeout=300)
        procs.kill("w1")  # mid-trial: it just began
        first = procs.log("w1").split("Worker w1: trial ")[1].split(".")[0]
        procs.start("w2", *_args("search", port), "--distributed", "worker", "--worker-id", "w2")
        time.sleep(2)
        procs.start("w1b", *_args("search", port), "--distributed", "worker", "--worker-id", "w1")
        for name in ("chief", "w1b", "w2"):
            assert procs.wait(name, 540 - (time.time() - start)) == 0, procs.log(name)
        restarted = procs.log("w1b")
        logs = procs.log("chief") + procs.log("w2") + restarted
    print(f"kill and restart a worker, 4 trials: {time.time() - start:.1f}s")
    # the restarted worker's first trial is the one it was killed in
    assert restarted.split("Worker w1: trial ")[1].split(".")[0] == first
    _check_complete_search(tmp_path / "runs" / "search", trials=4, keep=2)
    assert "Traceback" not in logs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chief_and_workers_run_the_rungs_the_chief_hands_out(tmp_path):
    """Successive halving, distributed: workers train whatever rung the chief gives;
    promoted candidates train on more images; the chief writes the final model."""
    tiny_npz(tmp_path / "tiny.npz", n_train=600)
    port = free_port()
    args = ["--dataset", "tiny.npz", "--time-budget", "100s", "--batch-size", "32",
            "--space", SPACE, "--directory", "runs", "--project-name", "rungs",
            "--oracle-address", f"127.0.0.1:{port}", "--chief-timeout", "5m"]
    with Procs(tmp_path) as procs:
        procs.start("chief", *args, "--distributed", "chief")
        procs.start("w1", *args, "--distributed", "worker", "--worker-id", "w1")
        procs.start("w2", *args, "--distributed", "worker", "--worker-id", "w2")
        for name in ("chief", "w1", "w2"):
            assert procs.wait(name, 500) == 0, procs.log(name)
        logs = {name: procs.log(name) for name in ("chief", "w1", "w2")}
    project = tmp_path / "runs" / "rungs"
    rows = json.loads((project / "leaderboard.json").read_text())
    assert all(r["status"] == "COMPLETED" for r in rows)
    by_id = {r["trial_id"]: r for r in rows}
    first = [r for r in rows if r["rung"] == 0]
    promoted = [r for r in rows if r.get("continues")]
    assert len(first) >= 3 and promoted, rows
    # above the first rung, only a seed (it skips the screening) has no parent
    assert len([r for r in rows if r["rung"] > 0 and not r.get("continues")]) <= 3, rows
    for row in promoted:  # the same network as its parent, on more of the images
        parent = by_id[row["continues"]]
        assert parent["rung"] == row["rung"] - 1 and row["fraction"] >= parent["fraction"]
        assert (row["params"], row["conv_blocks"], row["filters"]) == \
            (parent["params"], parent["conv_blocks"], parent["filters"])
    ran = [line.split("trial ")[1].rstrip(".") for name in ("w1", "w2")
           for line in logs[name].splitlines() if line.startswith(f"Worker {name}: trial ")]
    assert sorted(ran) == sorted(by_id)  # every trial ran once, on a worker
    metrics = json.loads((project / "best" / "metrics.json").read_text())
    assert metrics["trial_id"] == rows[0]["trial_id"] and "final_model" in metrics
    assert "Traceback" not in "".join(logs.values())
