"""`kerascnn evaluate`, `predict` and `export` through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from kerascnn.cli import main

CLASSES = [f"class{i}" for i in range(4)]


@pytest.fixture
def model_path(tmp_path, tiny_model):
    """conftest's tiny CNN (28x28x1 -> 4 classes), saved with class names in a run folder."""
    from kerascnn.runs import save_model

    return str(save_model(tiny_model, tmp_path / "run" / "model.keras", class_names=CLASSES))


@pytest.fixture
def npz_dataset(tmp_path, make_npz):
    """A 4-class dataset file with 28x28 gray images (40 train, 30 test), `--dataset FILE.npz`."""
    return str(make_npz(tmp_path / "tiny.npz", n_train=40, n_test=30, size=28, classes=4,
                        class_names=CLASSES, squeeze=True))


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


def test_evaluate_formats(runner, model_path, npz_dataset):
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
    assert "macro avg" in res.stdout and "class3" in res.stdout


def test_evaluate_plots(runner, model_path, npz_dataset, tmp_path):
    plots = tmp_path / "plots"
    res = runner.invoke(main, ["evaluate", model_path, "--dataset", npz_dataset, "-q",
                               "--plots", str(plots)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in plots.iterdir()) == ["confusion_matrix.png", "top_losses.png"]
    res = runner.invoke(main, ["evaluate", model_path, "--dataset", npz_dataset, "-q",
                               "--plots", str(plots)])
    assert "--overwrite" in one_error_line(res)


def test_evaluate_defaults_to_training_dataset(runner, npz_dataset, tmp_path, tiny_model,
                                               make_npz):
    from kerascnn.runs import save_model

    path = save_model(tiny_model, tmp_path / "trained.keras", class_names=CLASSES,
                      config={"dataset": npz_dataset, "image_size": None, "seed": 3})
    res = runner.invoke(main, ["evaluate", str(path), "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_samples"] == 30  # tiny.npz, not the bundled sample
    other = make_npz(tmp_path / "other.npz", n_train=20, n_test=12, size=28, classes=4)
    res = runner.invoke(main, ["evaluate", str(path), "--format", "json", "-q",
                               "--dataset", str(other)])
    assert json.loads(res.stdout)["num_samples"] == 12  # a flag overrides the stored one


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
    # default top-k: 5, or the number of classes if fewer
    assert "probability_4" in row and "probability_5" not in row

    res = runner.invoke(main, ["predict", model_path, str(folder), "--top-k", "2"])
    assert res.exit_code == 0 and "top-2" in res.stdout and "000.png" in res.stdout


def test_predict_bad_inputs(runner, model_path, tmp_path):
    folder = write_images(tmp_path / "imgs", 2)
    assert "top_k cannot be larger than the number of classes (4)" in one_error_line(
        runner.invoke(main, ["predict", model_path, str(folder), "--top-k", "5"]))
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
