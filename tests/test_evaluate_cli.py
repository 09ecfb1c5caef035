"""`kerascnn evaluate`, `predict` and `export` through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from kerascnn.cli import main

CLASSES = [f"class{i}" for i in range(10)]


def tiny_model(input_shape=(28, 28, 1), num_classes=10):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


@pytest.fixture
def model_path(tmp_path):
    from kerascnn.runs import save_model

    return str(save_model(tiny_model(), tmp_path / "run" / "model.keras", class_names=CLASSES))


@pytest.fixture
def npz_dataset(tmp_path):
    """A 10-class dataset file with 28x28 gray images, as `--dataset FILE.npz`."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
             y_train=np.arange(40) % 10,
             x_test=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_test=np.arange(30) % 10, class_names=np.array(CLASSES))
    return str(path)


def write_images(folder, n, size=(32, 30), mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        shape = (*size, 3) if mode == "RGB" else size
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"{i:03d}.png")
    return folder


def one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# -- evaluate ------------------------------------------------------------------------------


@pytest.fixture
def needs_data():
    data = pytest.importorskip("kerascnn.data")
    if not hasattr(data, "load_dataset"):
        pytest.skip("kerascnn.data.load_dataset is not there yet")


def test_evaluate_formats(runner, model_path, npz_dataset, needs_data):
    from kerascnn.evaluation import evaluate

    args = ["evaluate", model_path, "--dataset", npz_dataset, "--batch-size", "8"]
    res = runner.invoke(main, args + ["--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["num_samples"] == 30 and d["split"] == "test"
    assert np.array(d["confusion_matrix"]).sum() == 30
    assert [c["class"] for c in d["per_class"]] == CLASSES
    ref = evaluate(model_path, (np.load(npz_dataset)["x_test"][..., None],
                                np.load(npz_dataset)["y_test"]))
    assert d["accuracy"] == pytest.approx(ref.accuracy)
    assert d["loss"] == pytest.approx(ref.loss, rel=1e-5)

    res = runner.invoke(main, args + ["--format", "csv", "-q"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["class"] for r in rows] == CLASSES + ["all"]
    assert float(rows[-1]["accuracy"]) == pytest.approx(ref.accuracy)

    res = runner.invoke(main, args + ["-q"])
    assert res.exit_code == 0 and "accuracy" in res.stdout and "confusion matrix" in res.stdout
    assert "macro avg" in res.stdout and "class9" in res.stdout


def test_evaluate_plots(runner, model_path, npz_dataset, tmp_path, needs_data):
    pytest.importorskip("kerascnn.visualize")
    plots = tmp_path / "plots"
    res = runner.invoke(main, ["evaluate", model_path, "--dataset", npz_dataset, "-q",
                               "--plots", str(plots)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in plots.iterdir()) == ["confusion_matrix.png", "top_losses.png"]
    res = runner.invoke(main, ["evaluate", model_path, "--dataset", npz_dataset, "-q",
                               "--plots", str(plots)])
    assert "--overwrite" in one_error_line(res)


def test_evaluate_defaults_to_training_dataset(runner, npz_dataset, tmp_path, needs_data):
    from kerascnn.runs import save_model

    path = save_model(tiny_model(), tmp_path / "trained.keras", class_names=CLASSES,
                      config={"dataset": npz_dataset, "image_size": None, "seed": 3})
    res = runner.invoke(main, ["evaluate", str(path), "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_samples"] == 30  # tiny.npz, not the bundled sample
    res = runner.invoke(main, ["evaluate", str(path), "--format", "json", "-q",
                               "--dataset", "fashion_mnist_sample"])
    assert json.loads(res.stdout)["num_samples"] == 1000  # a flag overrides the stored one


def test_evaluate_bad_model(runner, tmp_path):
    assert "Model file not found" in one_error_line(
        runner.invoke(main, ["evaluate", str(tmp_path / "missing.keras")]))
    bad = tmp_path / "bad.keras"
    bad.write_text("hello")
    assert "Not a Keras model file" in one_error_line(runner.invoke(main, ["evaluate", str(bad)]))


# -- predict -------------------------------------------------------------------------------


def test_predict_formats(runner, model_path, tmp_path):
    folder = write_images(tmp_path / "imgs", 5)
    res = runner.invoke(main, ["predict", model_path, str(folder), "--top-k", "3",
                               "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["file"] for r in rows] == [str(folder / f"{i:03d}.png") for i in range(5)]
    probs = [p["probability"] for p in rows[0]["predictions"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert all(p["class"] in CLASSES for p in rows[0]["predictions"])

    res = runner.invoke(main, ["predict", model_path, str(folder / "001.png"), "--format", "csv"])
    (row,) = list(csv.DictReader(io.StringIO(res.stdout)))
    assert row["file"].endswith("001.png") and row["class_1"] == rows[1]["predictions"][0]["class"]
    assert "probability_5" in row  # default top-k is 5

    res = runner.invoke(main, ["predict", model_path, str(folder), "--top-k", "2"])
    assert res.exit_code == 0 and "top-2" in res.stdout and "000.png" in res.stdout


def test_predict_bad_inputs(runner, model_path, tmp_path):
    folder = write_images(tmp_path / "imgs", 2)
    assert "top_k cannot be larger than the number of classes (10)" in one_error_line(
        runner.invoke(main, ["predict", model_path, str(folder), "--top-k", "11"]))
    (tmp_path / "empty").mkdir()
    assert "holds no images" in one_error_line(
        runner.invoke(main, ["predict", model_path, str(tmp_path / "empty")]))
    (folder / "002.png").write_bytes(b"not a png")
    assert "Could not read image" in one_error_line(
        runner.invoke(main, ["predict", model_path, str(folder)]))
    assert "Model file not found" in one_error_line(
        runner.invoke(main, ["predict", str(tmp_path / "x.keras"), str(folder)]))
    assert "Missing argument" in one_error_line(runner.invoke(main, ["predict", model_path]))


# -- export --------------------------------------------------------------------------------


def test_export_cli_tflite(runner, model_path, tmp_path):
    out = tmp_path / "m.tflite"
    res = runner.invoke(main, ["export", model_path, "--format", "tflite", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "max |tflite - keras| =" in res.stdout and out.is_file()
    diff = float(res.stdout.split("= ")[1].split(" ")[0])
    assert diff < 1e-5
    assert "already exists" in one_error_line(
        runner.invoke(main, ["export", model_path, "--format", "tflite", "--output", str(out)]))


def test_export_cli_bad_inputs(runner, model_path, tmp_path, monkeypatch):
    assert "Invalid value for '--format'" in one_error_line(
        runner.invoke(main, ["export", model_path, "--format", "pt", "-o", str(tmp_path / "x")]))
    import kerascnn.exporting as ex

    monkeypatch.setattr(ex, "missing_onnx_dependencies", lambda: ["onnxruntime"])
    line = one_error_line(runner.invoke(
        main, ["export", model_path, "--format", "onnx", "-o", str(tmp_path / "m.onnx")]))
    assert "pip install 'kerascnn[onnx]'" in line
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: not a Keras model
    assert "Not a Keras model file" in one_error_line(
        runner.invoke(main, ["export", str(bad), "-o", str(tmp_path / "o.keras")]))


def test_export_cli_run_folder_to_keras(runner, model_path, tmp_path):
    from kerascnn.runs import read_model_metadata

    out = tmp_path / "shipped.keras"
    out.write_text("an old file")
    res = runner.invoke(main, ["export", str(tmp_path / "run"), "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "max |keras - keras| = 0 on 8 samples" in res.stdout
    assert read_model_metadata(out)["class_names"] == CLASSES
