"""Multi-worker training: two real `kerascnn train --strategy multiworker` processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from kerascnn.runs import load_model, read_json, read_yaml


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_workers_train_one_epoch_on_loopback(tmp_path, make_npz):
    data = make_npz(tmp_path / "tiny.npz", n_train=200, n_test=56, size=12, classes=3)
    with np.load(data) as arrays:
        x_test, y_test = arrays["x_test"], arrays["y_test"]

    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        argv = [sys.executable, "-m", "kerascnn", "train", "--strategy", "multiworker",
                "--dataset", str(data), "--epochs", "1", "--batch-size", "32",
                "--conv-blocks", "1", "--filters", "4", "--dense-units", "8",
                # BatchNorm's moving statistics are kept per worker (Keras's default
                # synchronized=False); without it every weight is synchronised
                "--no-batch-norm",
                "--output-dir", str(tmp_path / f"worker{index}")]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env, cwd=tmp_path))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
        assert "Trained 1 epochs" in output

    # both workers hold the same weights and score the same; only worker 0 writes the folder
    chief = tmp_path / "worker0"
    assert not (tmp_path / "worker1").exists()
    assert sorted(p.name for p in chief.iterdir()) == sorted(
        ["spec.yaml", "config.yaml", "history.csv", "model.keras", "metrics.json",
         "manifest.json"])
    assert read_yaml(chief / "config.yaml")["strategy"] == "multiworker"
    line = [next(l for l in out.splitlines() if l.startswith("test_accuracy")) for out in outputs]
    assert line[0] == line[1]
    metrics = read_json(chief / "metrics.json")
    model = load_model(chief / "model.keras")
    again = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
