"""bench/search.py's pieces: the digits file, the recipe, the architecture count, the clock."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import search  # noqa: E402

from kerascnn.data import load_dataset  # noqa: E402


def test_digits_npz_is_uint8_with_a_fixed_stratified_test_split(tmp_path):
    path = search.write_digits_npz(tmp_path / "digits.npz")
    with np.load(path) as f:
        x_train, y_train, x_test, y_test = (f[k] for k in ("x_train", "y_train", "x_test",
                                                           "y_test"))
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (8, 8)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 360
    assert x_train.max() == 255 and x_train.min() == 0
    # every class keeps its share of the test split
    shares = np.bincount(y_test, minlength=10) / np.bincount(
        np.concatenate([y_train, y_test]), minlength=10)
    assert np.allclose(shares, 0.2, atol=0.01)
    again = search.write_digits_npz(tmp_path / "again.npz")
    with np.load(again) as f:
        assert np.array_equal(f["x_test"], x_test) and np.array_equal(f["y_test"], y_test)
    bundle = load_dataset(path, validation_split=0.1, seed=0)
    assert bundle.input_shape == (8, 8, 1) and bundle.num_test == 360


def test_patches_npz_is_colour_with_test_crops_from_bands_never_trained_on(tmp_path):
    path = search.write_patches_npz(tmp_path / "patches.npz", train_per_class=5,
                                    test_per_class=3)
    with np.load(path) as f:
        x_train, y_train, x_test, y_test = (f[k] for k in ("x_train", "y_train", "x_test",
                                                           "y_test"))
        names = list(f["class_names"])
    assert x_train.shape == (80, 32, 32, 3) and x_test.shape == (48, 32, 32, 3)
    assert x_train.dtype == np.uint8 and len(names) == 16 and names[0] == "temple_00"
    assert np.array_equal(np.bincount(y_test), [3] * 16)
    # no test crop equals a training crop of its class (they come from other rows)
    for label in range(16):
        train = x_train[y_train == label].reshape(5, -1)
        assert not any((train == crop.reshape(1, -1)).all(axis=1).any()
                       for crop in x_test[y_test == label])
    again = search.write_patches_npz(tmp_path / "again.npz", train_per_class=5,
                                     test_per_class=3)
    with np.load(again) as f:
        assert np.array_equal(f["x_test"], x_test)
    assert load_dataset(path, validation_split=0.1, seed=0).input_shape == (32, 32, 3)
    assert search.bench_name("patches") == "search_patches"


@pytest.mark.parametrize("shape,padding,flat", [((28, 28, 1), "valid", 1600),
                                                ((8, 8, 1), "same", 256)])
def test_recipe_is_the_keras_io_convnet(shape, padding, flat):
    model, used = search.recipe_model(shape, 10)
    assert used == padding
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                     "Dropout", "Dense"]
    assert model.layers[5].output.shape[-1] == flat
    assert model.layers[6].rate == 0.5 and model.layers[1].filters == 32
    assert model.count_params() == (320 + 18496 + flat * 10 + 10)


def test_architectures_count_networks_not_trainings():
    rows = [
        {"status": "COMPLETED", "conv_blocks": 2, "filters": 32, "learning_rate": 1e-3,
         "params": 100, "macs": 1000},
        # the same network, another learning rate, a later rung: the same architecture
        {"status": "COMPLETED", "conv_blocks": 2, "filters": 32, "learning_rate": 3e-3,
         "params": 100, "macs": 1000, "rung": 2},
        {"status": "COMPLETED", "conv_blocks": 2, "filters": 32, "filters_2": 64,
         "params": 150, "macs": 1500},
        {"status": "COMPLETED", "conv_blocks": 3, "filters": 32, "params": 120, "macs": 1200},
        {"status": "FAILED", "conv_blocks": 1, "filters": 8, "params": 10, "macs": 10},
    ]
    assert search.count_architectures(rows) == (3, 4)


def test_cost_model_error_is_the_median_relative_error():
    rows = [{"predicted_seconds": 12.0, "seconds": 10.0}, {"predicted_seconds": 5.0,
                                                         "seconds": 10.0},
            {"predicted_seconds": 9.0, "seconds": 10.0}, {"seconds": 3.0}]
    assert search.cost_model_error(rows) == pytest.approx(0.2)
    assert search.cost_model_error([{"seconds": 1.0}]) is None


def test_targets_follow_the_issue():
    full = search.targets_for("fashion_mnist", 900)
    assert {k: (v["op"], v["bound"]) for k, v in full.items()} == {
        "difference_points": (">=", 1.0), "kerascnn_test_accuracy": (">=", 0.93),
        "architectures": (">=", 16), "wall_seconds": ("<=", 945.0)}
    assert search.targets_for("digits", None)["difference_points"]["bound"] == 0.0
    assert "wall_seconds" not in search.targets_for("sample", None)
    assert search.bench_name("digits") == "search_digits"


class _FakeModel:
    def __init__(self):
        self.stop_training = False
        self.weights = 0

    def get_weights(self):
        return self.weights


def test_recipe_clock_stops_before_an_epoch_that_would_not_fit(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(search.time, "perf_counter", lambda: now[0])
    keeper = search._BestWithin(start=100.0, seconds=10.0)
    keeper.set_model(_FakeModel())
    accuracies = [0.5, 0.7, 0.6, 0.65, 0.9]
    for epoch, accuracy in enumerate(accuracies):
        keeper.on_epoch_begin(epoch)
        now[0] += 2.0 if epoch else 3.0  # the first epoch traces the model
        keeper.model.weights = epoch
        keeper.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": 1 - accuracy})
        if keeper.model.stop_training:
            break
    # 3, 5, 7 s: the next epoch, as slow as the slowest (3 s), still ends by 10 s;
    # after the fourth (9 s) it would not: training stops
    assert keeper.epochs == 4 and keeper.model.stop_training
    assert keeper.best == 0.7 and keeper.best_epoch == 2 and keeper.best_weights == 1
