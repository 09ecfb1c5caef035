"""The final training of the search's winner: schedule on the clock, fallback, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from kerascnn.analysis import analyze
from kerascnn.builders import build_cnn
from kerascnn.checks import InputError
from kerascnn.data import load_dataset
from kerascnn.spec import CNNSpec
from kerascnn.training import compile_model
from kerascnn.tuning.cost import CostModel
from kerascnn.tuning.final import (RESULT_FILE, ClockSchedule, choose_winner, final_train,
                                   learning_rate_at, merged_training_data, split_validation)

SPEC = CNNSpec(input_shape=(12, 12, 1), num_classes=3, conv_blocks=1, convs_per_block=1,
               filters=4, dense_units=())


def _build():
    return build_cnn(SPEC, preprocessing=[keras.layers.Rescaling(1 / 255)])


@pytest.fixture
def bundle(quadrant_npz):
    # 240 training images: 180 train, 60 validation (30 trained on, 30 held out), 60 test
    return load_dataset(quadrant_npz, validation_split=0.25, batch_size=16, seed=0)


def _trained(bundle, epochs=15):
    model = compile_model(_build(), learning_rate=1e-2)
    model.fit(bundle.train, epochs=epochs, verbose=0)
    return model


def test_learning_rate_shapes():
    peak = 1e-2
    for schedule in ("one-cycle", "linear"):
        assert learning_rate_at(0.0, peak, schedule) == pytest.approx(peak / 25)
        values = [learning_rate_at(p, peak, schedule) for p in np.linspace(0, 1, 201)]
        top = int(np.argmax(values))
        assert values[top] == pytest.approx(peak, rel=1e-3)
        assert values[:top + 1] == sorted(values[:top + 1])  # warm-up rises
        assert values[top:] == sorted(values[top:], reverse=True)  # then only falls
        assert values[-1] < peak * 1e-4
    assert learning_rate_at(1.0, peak, "linear") == 0.0
    assert learning_rate_at(0.3, peak, "one-cycle") == pytest.approx(peak)


def test_clock_schedule_ends_at_the_deadline(bundle):
    model = compile_model(_build(), learning_rate=1e-2)
    model.fit(bundle.train, epochs=1, verbose=0)  # traced before the clock starts
    seconds = 3.0
    end = time.time() + seconds
    clock = ClockSchedule(1e-2, end, schedule="one-cycle", max_epochs=10_000,
                          steps_per_epoch=int(bundle.train.cardinality()))
    rates = []
    logger = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rates.append(float(model.optimizer.learning_rate)))
    model.fit(bundle.train, epochs=10_000, verbose=0, callbacks=[clock, logger])
    ended = time.time()
    assert clock.fired and clock.progress == 1.0
    assert end <= ended < end + 1.0  # stopped after the batch that reached the deadline
    assert len(rates) > 3
    top = int(np.argmax(rates))
    assert 0 < top < len(rates) - 1  # warmed up, then decayed
    # the last batch started within a batch of the end: the rate had decayed below
    # where it started (peak / 25), almost to zero
    assert rates[-1] < 1e-2 / 25


def test_clock_schedule_stops_at_max_epochs_with_the_rate_at_its_end(bundle):
    model = compile_model(_build(), learning_rate=1e-2)
    clock = ClockSchedule(1e-2, time.time() + 3600, schedule="linear", max_epochs=3,
                          steps_per_epoch=int(bundle.train.cardinality()))
    model.fit(bundle.train, epochs=3, verbose=0, callbacks=[clock])
    assert clock.progress == 1.0
    assert float(model.optimizer.learning_rate) == 0.0


def _row(trial_id, score, macs, rung=2, status="COMPLETED", rung_epochs=6):
    return {"trial_id": trial_id, "score": score, "macs": macs, "rung": rung,
            "status": status, "rung_epochs": rung_epochs}


def test_choose_winner_prefers_a_larger_network_the_validation_split_cannot_tell_apart():
    # 600 validation images at 0.87: one standard error is 1.4 points
    rows = [_row("small", 0.870, 577_024), _row("vgg", 0.8667, 18_320_512),
            _row("big_but_worse", 0.850, 90_000_000), _row("lower_rung", 0.869, 50_000_000, 1),
            _row("failed", 0.871, 60_000_000, status="FAILED")]
    many = lambda row: 40.0  # noqa: E731
    winner, why = choose_winner(rows, validation_images=600, final_epochs=many)
    assert winner["trial_id"] == "vgg"
    assert why.startswith("trial vgg (0.8667 validation accuracy, 18,320,512 MACs per image) "
                          "is trained rather than the leader, trial small (0.8700")
    assert "one standard error is 1.4 points" in why
    # 20,000 images tell them apart (0.24 points against 0.33): the leader stays
    assert choose_winner(rows, validation_images=20_000, final_epochs=many) == (rows[0], None)
    # a larger network the final phase could not train longer than its trial: the leader
    few = lambda row: 40.0 if row["trial_id"] == "small" else 6.0  # noqa: E731
    assert choose_winner(rows, validation_images=600, final_epochs=few) == (rows[0], None)
    # the leader is already the largest of its ties, or has no score
    assert choose_winner(rows[1:3], validation_images=600, final_epochs=many)[1] is None
    assert choose_winner([_row("x", None, 1)], validation_images=600,
                         final_epochs=many)[1] is None


def test_split_validation_and_merged_data(bundle):
    train_half, n_half, holdout, n_holdout = split_validation(
        bundle.validation, bundle.num_validation, 16)
    assert (n_half, n_holdout) == (30, 30)
    held = np.concatenate([x for x, _ in holdout.as_numpy_iterator()])
    trained = np.stack([x for x, _ in train_half.as_numpy_iterator()])
    assert len(held) == 30 and len(trained) == 30
    as_set = lambda a: {bytes(v) for v in a.reshape(len(a), -1)}  # noqa: E731
    assert not as_set(held) & as_set(trained)
    assert as_set(held) | as_set(trained) == as_set(bundle.arrays("validation")[0])
    data, n, steps = merged_training_data(bundle, train_half, n_half, batch_size=16, seed=0)
    assert (n, steps) == (210, 14) and int(data.cardinality()) == 14
    seen = np.concatenate([x for x, _ in data.as_numpy_iterator()])
    assert len(seen) == 210
    assert as_set(trained) <= as_set(seen) and not as_set(held) & as_set(seen)


def _final(bundle, tmp_path, search_model, **kw):
    # a deadline far off and an epoch cap: the cap ends the schedule, however loaded
    # the machine is (the deadline's part is tested with the clock schedule above)
    options = dict(directory=tmp_path / "final", deadline=time.time() + 120, max_epochs=6,
                   cost=CostModel(),
                   analysis=analyze(SPEC), learning_rate=1e-2, spec=SPEC,
                   class_names=list(bundle.class_names))
    options.update(kw)
    return final_train(_build, search_model, bundle, **options)


def test_a_better_final_model_replaces_the_search_checkpoint(bundle, tmp_path):
    # a "search checkpoint" that always answers class 0 (a third of the holdout)
    untrained = compile_model(_build())
    kernel, bias = untrained.layers[-1].get_weights()
    untrained.layers[-1].set_weights([kernel * 0, np.array([10.0, 0.0, 0.0], "float32")])
    losses = []

    def smoothed(y_true, y_pred):  # compiled as the trials were: label smoothing
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), 3)
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=0.1)

    def compile_fn(model):
        losses.append(smoothed)
        model.compile(optimizer=keras.optimizers.Adam(0.5), loss=smoothed, metrics=["accuracy"])

    result = _final(bundle, tmp_path, untrained, compile_fn=compile_fn, max_epochs=8)
    assert result.chosen == "final" and result.model is not None
    assert losses == [smoothed] and result.model.loss is smoothed
    # the schedule drove the rate, not the 0.5 the optimizer was made with
    assert float(result.model.optimizer.learning_rate) < 1e-2 / 25
    assert result.holdout_accuracy_final >= result.holdout_accuracy_search
    assert result.holdout_size == 30 and result.train_images == 210 and result.epochs == 8
    assert "neither model trained on" in result.reason
    metrics = result.metrics()
    assert metrics["final_model"].startswith("final training")
    assert metrics["final_training"]["chosen"] == "final"
    assert (tmp_path / "final" / "model.keras").is_file()
    # the same call again: the recorded decision, no second training
    start = time.time()
    again = _final(bundle, tmp_path, untrained, compile_fn=compile_fn)
    assert time.time() - start < 5
    assert again.chosen == "final" and again.model is not None
    assert again.holdout_accuracy_final == result.holdout_accuracy_final


def test_falls_back_to_the_search_checkpoint_when_worse(bundle, tmp_path):
    search = _trained(bundle)
    # a final training that cannot learn (rate 1e-9): worse on the holdout
    result = _final(bundle, tmp_path, search, learning_rate=1e-9, max_epochs=3)
    assert result.chosen == "search" and result.model is None
    assert result.holdout_accuracy_final < result.holdout_accuracy_search
    assert "search checkpoint" in result.reason
    assert result.metrics()["final_model"] == "best checkpoint of the best trial"
    recorded = json.loads((tmp_path / "final" / RESULT_FILE).read_text())
    assert recorded["chosen"] == "search"


def test_no_final_training_without_time(bundle, tmp_path):
    result = _final(bundle, tmp_path, compile_model(_build()), deadline=time.time() + 1)
    assert result.chosen == "search" and result.epochs == 0
    assert result.reason.startswith("no final training")
    assert not (tmp_path / "final" / "history.csv").exists()


def test_refuses_a_bundle_without_validation(quadrant_npz, tmp_path):
    no_val = load_dataset(quadrant_npz, validation_split=0.0, batch_size=16)
    with pytest.raises(InputError, match="has none.*Received: validation_split=0.0"):
        _final(no_val, tmp_path, compile_model(_build()))
    with pytest.raises(InputError, match="schedule"):
        _final(load_dataset(quadrant_npz, validation_split=0.25), tmp_path,
               compile_model(_build()), schedule="cosine")


RESUME_SCRIPT = textwrap.dedent("""
    import sys, time
    import keras
    from kerascnn import runtime
    runtime.start()
    from kerascnn.analysis import analyze
    from kerascnn.builders import build_cnn
    from kerascnn.data import load_dataset
    from kerascnn.spec import CNNSpec
    from kerascnn.training import compile_model
    from kerascnn.tuning.cost import CostModel
    from kerascnn.tuning.final import final_train

    data, directory, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    spec = CNNSpec(input_shape=(12, 12, 1), num_classes=3, conv_blocks=1,
                   convs_per_block=1, filters=4, dense_units=())
    build = lambda: build_cnn(spec, preprocessing=[keras.layers.Rescaling(1 / 255)])
    bundle = load_dataset(data, validation_split=0.25, batch_size=16, seed=0)
    result = final_train(build, compile_model(build()), bundle, directory=directory,
                         deadline=time.time() + seconds, cost=CostModel(),
                         analysis=analyze(spec), learning_rate=1e-2, max_epochs=8)
    print("RESULT", result.chosen, result.epochs)
""")


@pytest.mark.slow
def test_resume_after_kill_during_final_training(quadrant_npz, tmp_path):
    script = tmp_path / "final_run.py"
    script.write_text(RESUME_SCRIPT)
    directory = tmp_path / "final"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, str(script), str(quadrant_npz), str(directory)]
    proc = subprocess.Popen([*command, "600"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    progress = directory / "progress.json"
    limit = time.time() + 120
    while time.time() < limit and proc.poll() is None:
        if progress.is_file() and len(json.loads(progress.read_text())["epochs"]) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(progress.read_text())["epochs"]
    assert not (directory / RESULT_FILE).exists()
    assert (directory / "backup").is_dir()

    done = subprocess.run([*command, "600"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    chosen, epochs = done.stdout.split("RESULT")[-1].split()
    after = json.loads(progress.read_text())["epochs"]
    # the second run continued from a finished epoch of the first, with its progress
    resumed = sorted(int(k) for k in after)
    assert resumed == list(range(8)) and int(epochs) == 8
    kept = [k for k in before if k in after and int(k) < resumed[-1]]
    assert kept and all(after[k] == before[k] for k in kept[:-1])
    assert after[str(resumed[-1])] == 1.0
    assert chosen == "final" and (directory / RESULT_FILE).is_file()
    history = (directory / "history.csv").read_text().splitlines()
    assert len(history) == int(epochs) + 1
