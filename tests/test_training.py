"""kerascnn.training: train(), its run folder, options, resume, determinism, lr_find,
fit_model and the callbacks."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.python.framework import config as tf_config

from kerascnn.checks import InputError
from kerascnn.data import load_dataset
from kerascnn.runs import load_model, read_history, read_json, read_yaml
from kerascnn.spec import CNNSpec
from kerascnn.training import (BestCheckpoint, History, compile_model, fit_model, is_chief,
                               lr_find, resolve_precision, suggest_learning_rate, train)

SIZE = 12
TINY_SPEC = dict(conv_blocks=1, convs_per_block=1, filters=4, dense_units=(8,))


@pytest.fixture(scope="module")
def tiny_npz(quadrant_npz):
    """The shared 12x12 quadrant images (3 classes), as a path string."""
    return str(quadrant_npz)


@pytest.fixture(scope="module")
def finished_run(tiny_npz, tmp_path_factory):
    """One complete run folder, shared by the checks of its files."""
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("runs") / "run"
    result = train("simple", dataset=tiny_npz, epochs=3, batch_size=32, output_dir=out,
                   schedule="one-cycle", learning_rate=3e-3, seed=1,
                   command_line=["kerascnn", "train", "test"], **TINY_SPEC)
    return result, out


# ---------------------------------------------------------------------------- the run folder


def test_run_folder_holds_every_file(finished_run):
    result, out = finished_run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["spec.yaml", "config.yaml", "history.csv", "model.keras", "metrics.json",
         "manifest.json"])  # no checkpoints left behind
    assert CNNSpec.load(out / "spec.yaml") == result.spec
    assert result.spec.input_shape == (SIZE, SIZE, 1) and result.spec.num_classes == 3

    config = read_yaml(out / "config.yaml")
    assert config["epochs"] == 3 and config["batch_size"] == 32
    assert config["schedule"] == "one-cycle" and config["learning_rate"] == 3e-3
    assert config["seed"] == 1 and config["mixed_precision"] == "float32"
    assert config["dataset"].endswith("quadrants.npz")

    manifest = read_json(out / "manifest.json")
    assert manifest["seed"] == 1 and manifest["status"] == "complete"
    assert manifest["dataset_fingerprint"] == config["dataset_fingerprint"]
    assert manifest["command_line"] == ["kerascnn", "train", "test"]
    assert manifest["versions"]["tensorflow"]


def test_history_csv_has_one_row_per_epoch(finished_run):
    result, out = finished_run
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert [float(r["loss"]) for r in rows] == pytest.approx([h["loss"] for h in result.history])
    # one-cycle: the rate at the end of the first epoch is on the way up, the last is tiny
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[-1] < lrs[0] < 3e-3


def test_metrics_match_the_saved_model(finished_run, tiny_npz):
    result, out = finished_run
    metrics = read_json(out / "metrics.json")
    assert set(metrics) >= {"test_accuracy", "test_loss", "best_epoch", "epochs_run"}
    assert metrics["epochs_run"] == 3 and not metrics["diverged"]
    model = load_model(out / "model.keras")
    assert model.kerascnn_metadata["class_names"] == ["top_left", "top_right", "bottom_left"]
    assert model.kerascnn_metadata["spec"]["num_classes"] == 3
    bundle = load_dataset(tiny_npz, batch_size=32, seed=1)
    again = model.evaluate(bundle.test, verbose=0, return_dict=True)
    assert again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert again["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    # the model holds the best epoch's weights (by validation loss)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert metrics["best_epoch"] == best["epoch"]


def test_existing_run_is_refused_and_left_untouched(finished_run, tiny_npz):
    _, out = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(InputError, match="already holds results.*--overwrite"):
        train("simple", dataset=tiny_npz, epochs=1, output_dir=out, **TINY_SPEC)
    with pytest.raises(InputError, match="already finished; nothing to resume"):
        train("simple", dataset=tiny_npz, epochs=3, batch_size=32, output_dir=out,
              schedule="one-cycle", learning_rate=3e-3, seed=1, resume=True, **TINY_SPEC)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_bad_data_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="does not exist.*Received: source="):
        train("simple", dataset=str(tmp_path / "missing.npz"), epochs=1, output_dir=out)
    assert not out.exists()


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs must be an integer >= 1. Received: epochs=0"),
    (dict(epochs=1.5), "epochs must be an integer"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(optimizer="adagrad"), "Unknown optimizer.*Received: optimizer='adagrad'"),
    (dict(learning_rate=-1.0), r"learning_rate must be a number > 0.0. Received: learning_rate=-1.0"),
    (dict(learning_rate=True), "learning_rate must be a number > 0"),
    (dict(weight_decay=-0.1), "weight_decay must be a number >= 0"),
    (dict(schedule="linear"), "Unknown learning-rate schedule"),
    (dict(early_stopping=-2), "early_stopping is a patience"),
    (dict(strategy="tpu"), "Unknown strategy.*Received: strategy='tpu'"),
    (dict(steps_per_execution=0), "steps_per_execution must be an integer from 1 to 2147483647"),
    # Keras counts them in int32: more made the test metrics vanish (KeyError, exit 1)
    (dict(steps_per_execution=10**12), "steps_per_execution must be an integer from 1 to"),
    (dict(seed=2**32, output_dir="x"), "seed must be an integer from 0 to 4294967295"),
    (dict(seed=-1), "seed must be an integer from 0"),
    (dict(tensorboard=True), "tensorboard=True needs an output_dir"),
    (dict(resume=True), "resume=True needs an output_dir"),
    (dict(mixed_precision="float8"), "mixed_precision must be a bool or one of"),
    (dict(strategy="multiworker", resume=True, output_dir="x"),
     "resume is not supported with strategy='multiworker'"),
])
def test_train_rejects_bad_options(kwargs, match, tmp_path):
    kwargs = {**kwargs}
    if "output_dir" in kwargs:
        kwargs["output_dir"] = tmp_path / "x"
    with pytest.raises(InputError, match=match):
        train("simple", dataset="no-such-dataset", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("tf_config, match", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "needs 'cluster' and 'task'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "does not name a member of the cluster"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "must be HOST:PORT"),
])
def test_multiworker_checks_tf_config(tf_config, match, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(InputError, match=match):
        train("simple", dataset="no-such-dataset", strategy="multiworker")


def test_is_chief_picks_worker_zero_or_the_chief():
    workers = {"worker": ["a:1", "b:2"]}
    assert is_chief(None)
    assert is_chief({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not is_chief({"cluster": workers, "task": {"type": "worker", "index": 1}})
    with_chief = {"chief": ["c:3"], **workers}
    assert is_chief({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not is_chief({"cluster": with_chief, "task": {"type": "worker", "index": 0}})


def test_spec_must_fit_the_data(tiny_npz):
    wrong_classes = CNNSpec(input_shape=(SIZE, SIZE, 1), num_classes=5, **TINY_SPEC)
    with pytest.raises(InputError, match="num_classes=5 but the dataset has 3 classes"):
        train(wrong_classes, dataset=tiny_npz, epochs=1)
    wrong_channels = CNNSpec(input_shape=(SIZE, SIZE, 3), num_classes=3, **TINY_SPEC)
    with pytest.raises(InputError, match=r"does not fit the data.*Received: input_shape"):
        train(wrong_channels, dataset=tiny_npz, epochs=1)
    with pytest.raises(InputError, match="spec must be a CNNSpec"):
        train(42, dataset=tiny_npz, epochs=1)


# ---------------------------------------------------------------------------- behaviour


class Probe(keras.callbacks.Callback):
    """Records the initial weights, the first batch's loss and whether op determinism is on."""

    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]
        self.deterministic = tf_config.is_op_determinism_enabled()
        self.first_loss = None

    def on_train_batch_end(self, batch, logs=None):
        if self.first_loss is None:
            self.first_loss = float(logs["loss"])


def _runs_with_probe(tiny_npz, seeds, deterministic):
    out = []
    for seed in seeds:
        probe = Probe()
        result = train("simple", dataset=tiny_npz, epochs=2, batch_size=32, seed=seed,
                       early_stopping=0, deterministic=deterministic, callbacks=[probe],
                       **TINY_SPEC)
        out.append((probe, [row["loss"] for row in result.history]))
    return out


def test_same_seed_same_history_with_op_determinism(tiny_npz):
    """`deterministic=True`: the documented guarantee, bit-identical histories."""
    (a, loss_a), (b, loss_b), (c, loss_c) = _runs_with_probe(tiny_npz, (3, 3, 4), True)
    assert a.deterministic and b.deterministic  # on while training
    assert loss_a == loss_b  # bit-identical
    assert loss_a != loss_c
    assert not tf_config.is_op_determinism_enabled()  # restored afterwards


def test_same_seed_without_op_determinism_fixes_the_start_not_the_bits(tiny_npz):
    """`deterministic=False` (the default): the seed fixes the initial weights, the split
    and the batches, so the first batch's loss is the same; later sums may run in another
    order (oneDNN, thread pools), so the histories are only promised to be close."""
    (a, loss_a), (b, loss_b), (c, _) = _runs_with_probe(tiny_npz, (3, 3, 4), False)
    assert not a.deterministic and not b.deterministic  # train did not turn it on
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not all(np.array_equal(x, y) for x, y in zip(a.weights, c.weights))
    assert a.first_loss == pytest.approx(b.first_loss, rel=1e-5)
    assert loss_a == pytest.approx(loss_b, rel=1e-3)


def test_resume_continues_from_the_last_finished_epoch(tiny_npz, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt("simulated kill")

    class Count(keras.callbacks.Callback):
        epochs: list = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    out = tmp_path / "run"
    options = dict(dataset=tiny_npz, epochs=4, batch_size=32, output_dir=out,
                   schedule="cosine", early_stopping=0, **TINY_SPEC)
    with pytest.raises(KeyboardInterrupt):
        train("simple", callbacks=[Interrupt()], **options)
    assert (out / "checkpoints" / "backup").is_dir() and not (out / "metrics.json").exists()
    with open(out / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 2

    changed = {**options, "learning_rate": 0.1}
    with pytest.raises(InputError, match="these options differ.*learning_rate"):
        train("simple", resume=True, **changed)

    # a kill while the last backup was being written: the one before is used
    (out / "checkpoints" / "backup" / "latest.weights.h5").write_bytes(b"half a file")
    count = Count()
    result = train("simple", resume=True, callbacks=[count], **options)
    assert count.epochs == [1, 2, 3]
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    # the cosine schedule continued where it stopped rather than starting again
    assert result.history[2]["learning_rate"] < result.history[1]["learning_rate"]
    assert result.history[3]["learning_rate"] == pytest.approx(0.0, abs=1e-9)
    assert read_json(out / "manifest.json")["resumed"] is True
    assert not (out / "checkpoints").exists()


def test_mixed_precision_and_jit(tiny_npz):
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    assert resolve_precision(True) == expected
    assert resolve_precision(False) == "float32"
    before = keras.config.dtype_policy().name
    result = train("simple", dataset=tiny_npz, epochs=1, batch_size=32,
                   mixed_precision=True, jit=True, **TINY_SPEC)
    model = result.model
    assert model.jit_compile is True and result.config["jit"] is True
    assert model.get_layer("block1_conv1").dtype_policy.name == expected
    assert model.get_layer("block1_conv1").compute_dtype == expected.split("_")[1]
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
    assert math.isfinite(result.metrics["test_loss"])
    assert keras.config.dtype_policy().name == before
    assert result.config["mixed_precision"] == expected


def test_overwrite_replaces_only_run_files_and_tensorboard_logs(tiny_npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "metrics.json").write_text("{}")
    result = train("simple", dataset=tiny_npz, epochs=1, batch_size=32, output_dir=out,
                   overwrite=True, tensorboard=True, **TINY_SPEC)
    assert (out / "notes.txt").read_text() == "mine"
    assert "test_accuracy" in read_json(out / "metrics.json")
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert result.paths["logs"] == out / "logs"


# ---------------------------------------------------------------------------- lr_find


def test_suggest_learning_rate_finds_the_steepest_descent():
    lrs = np.logspace(-6, 0, 61)
    # flat, then falls fastest at 1e-3, bottoms out at 1e-1, then blows up
    x = np.log10(lrs)
    loss = 2 - np.tanh((x + 3) * 2) + np.where(x > -1, (x + 1) ** 2 * 20, 0)
    steepest, minimum = suggest_learning_rate(lrs, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert 1e-2 <= minimum <= 2e-1
    with pytest.raises(InputError, match="at least 3 finite losses"):
        suggest_learning_rate([1e-3, 1e-2], [1.0, float("nan")])


def test_lr_find_on_a_keras_model_leaves_it_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 3))).argmax(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    optimizer = model.optimizer
    before = [w.copy() for w in model.get_weights()]
    result = lr_find(model, dataset=(x, y), steps=60, batch_size=32,
                     output=tmp_path / "lr.png")
    # the model is left as it was
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer is optimizer
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    lrs = result.learning_rates
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert len(result.losses) == len(lrs) == len(result.smoothed_losses) <= 60
    assert lrs[0] < result.suggestion < lrs[-1]
    assert result.suggestion == result.steepest
    with Image.open(result.plot_path) as im:
        assert im.format == "PNG" and im.size[0] > 300
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        lr_find(model, dataset=(x, y), steps=20, output=tmp_path / "lr.png")


@pytest.mark.parametrize("kwargs, match", [
    (dict(start_lr=0), "start_lr must be a number > 0.0. Received: start_lr=0"),
    (dict(start_lr=1.0, end_lr=0.1), "start_lr must be smaller than end_lr"),
    (dict(steps=5), "steps must be an integer >= 10"),
    (dict(smoothing=1.0), r"smoothing must be in \[0, 1\)"),
    (dict(divergence=1.0), "divergence must be a number > 1"),
    (dict(method="valley"), "Unknown method 'valley'; allowed: steepest, minimum/10"),
    (dict(optimizer="adadelta"), "Unknown optimizer"),
    (dict(output="plot.jpg"), "must be a picture file ending in .png. Received: output=.plot.jpg."),
])
def test_lr_find_rejects_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        lr_find("simple", dataset="no-such-dataset", **kwargs)


@pytest.mark.slow
def test_kill_9_then_resume_from_the_command_line(tiny_npz, tmp_path):
    """SIGKILL `kerascnn train` after two epochs; `--resume` finishes the remaining two."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "kerascnn", "train", "--dataset", tiny_npz, "--epochs", "4",
            "--batch-size", "16", "--early-stopping", "0", "--schedule", "cosine",
            "--conv-blocks", "1", "--filters", "4", "--dense-units", "8",
            "--output-dir", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            history = out / "history.csv"
            if history.is_file() and len(history.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not (out / "metrics.json").exists()
    for name in ("config.yaml", "spec.yaml"):
        assert read_yaml(out / name)
    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3]
    assert "epoch 1/4" not in done.stderr and "epoch 4/4" in done.stderr
    assert read_json(out / "manifest.json")["resumed"] is True
    assert read_json(out / "metrics.json")["epochs_run"] == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["spec.yaml", "config.yaml", "history.csv", "model.keras", "metrics.json",
         "manifest.json"])


# ---------------------------------------------------------------------------- fit_model, callbacks


def _dense_data(n=96, batch=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _dense_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2)])


def test_fit_model_writes_only_what_it_is_asked_to(tmp_path):
    data = _dense_data()
    result = fit_model(_dense_model(), data, validation_data=data, epochs=3,
                       learning_rate=0.05, history_path=tmp_path / "history.csv",
                       checkpoint_dir=tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "history.csv"]
    on_disk = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in on_disk] == [r["epoch"] for r in result.history]
    assert [r["val_loss"] for r in on_disk] == pytest.approx(
        [r["val_loss"] for r in result.history], rel=1e-6)
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert result.monitor == "val_loss" and result.epochs_trained == 3
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"] and result.best == pytest.approx(best["val_loss"])
    assert not (result.stopped_early or result.stopped_by_deadline or result.diverged)
    # the model holds the best epoch's weights
    again = result.model.evaluate(data, verbose=0, return_dict=True)
    assert again["loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_fit_model_stops_at_the_deadline():
    result = fit_model(_dense_model(), _dense_data(), epochs=50, deadline=time.time() - 1)
    assert len(result.history) == 1 and result.stopped_by_deadline
    assert result.monitor == "loss"  # no validation data
    batches = fit_model(_dense_model(), _dense_data(), epochs=50, deadline=time.time() - 1,
                        deadline_per_batch=True)
    assert batches.stopped_by_deadline and len(batches.history) == 1


def test_fit_model_reports_divergence_and_stops(capsys):
    model = _dense_model()
    result = fit_model(model, _dense_data(), epochs=20, optimizer="sgd", learning_rate=1e30,
                       restore_best=False)
    assert result.diverged and len(result.history) < 20
    assert "Invalid loss" not in capsys.readouterr().out  # Keras's TerminateOnNaN prints


def test_fit_model_continues_one_history_across_two_fits():
    """As fine-tuning's two phases do: one History, the second fit starts where the first
    ended, with its own columns."""
    model = _dense_model()
    history = History(fields={"phase": "one"})
    fit_model(model, _dense_data(), epochs=2, history=history, learning_rate=0.01)
    history.fields = {"phase": "two"}
    compile_model(model, optimizer="sgd", learning_rate=0.001)
    second = fit_model(model, _dense_data(), epochs=3, initial_epoch=2, history=history,
                       compile=False)
    assert [(r["epoch"], r["phase"]) for r in second.history] == [
        (0, "one"), (1, "one"), (2, "two")]
    assert second.epochs_trained == 1
    assert second.history[-1]["learning_rate"] == pytest.approx(0.001)
    assert isinstance(model.optimizer, keras.optimizers.SGD)  # compile=False kept it


def test_best_checkpoint_on_disk_survives_a_new_callback(tmp_path):
    model = _dense_model()
    first = BestCheckpoint(tmp_path, monitor="loss")
    first.set_model(model)
    first.on_epoch_end(0, {"loss": 0.5})
    saved = [w.copy() for w in model.get_weights()]
    first.on_epoch_end(1, {"loss": 0.7})  # worse: not kept
    first.on_epoch_end(2, {"loss": float("nan")})  # never kept
    model.set_weights([w + 1 for w in saved])
    second = BestCheckpoint(tmp_path, monitor="loss")  # a resumed run
    second.set_model(model)
    assert (second.best, second.best_epoch) == (0.5, 0)
    assert second.restore_best()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved))
    assert not BestCheckpoint(None).restore_best()


def test_history_drops_the_epochs_training_will_redo(tmp_path):
    rows = [{"epoch": e, "loss": 1.0} for e in range(3)]
    model = _dense_model()
    history = History(tmp_path / "h.csv", previous_rows=rows)
    history.set_model(model)
    model._initial_epoch = 2  # what BackupAndRestore sets when it restores
    history.on_train_begin()
    assert [r["epoch"] for r in history.rows] == [0, 1]
    model._initial_epoch = None  # nothing restored: fit starts at its initial_epoch
    history.rows, history.initial_epoch = list(rows), 3
    history.on_train_begin()
    assert len(history.rows) == 3
    history.initial_epoch = 0
    history.on_train_begin()
    assert history.rows == []
