"""`kerascnn train` and `kerascnn lr-find` through click's CliRunner."""

from __future__ import annotations

import csv

import pytest

from kerascnn.checks import InputError
from kerascnn.cli import main
from kerascnn.runs import read_json, read_yaml

SIZE = 12
TINY = ["--conv-blocks", "1", "--convs-per-block", "1", "--filters", "4", "--dense-units", "8"]


@pytest.fixture(scope="module")
def tiny_npz(quadrant_npz):
    """The shared 12x12 quadrant images: three classes told apart by the bright quadrant."""
    return str(quadrant_npz)


@pytest.fixture(scope="module")
def cli_run(tiny_npz, tmp_path_factory):
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", tiny_npz, "--epochs", "2",
                                       "--batch-size", "32", "--schedule", "cosine",
                                       "--output-dir", str(out), *TINY])
    return result, out


def one_line_error(result, *needles):
    """Exit code 2, nothing on stdout, and one `Error:` line on stderr naming the culprit."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_writes_the_run_folder(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("Trained 2 epochs in ")
    assert "test_accuracy" in result.stdout and f"Run folder: {out}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["spec.yaml", "config.yaml", "history.csv", "model.keras", "metrics.json",
         "manifest.json"])
    spec = read_yaml(out / "spec.yaml")
    assert spec["input_shape"] == [SIZE, SIZE, 1] and spec["num_classes"] == 3
    assert spec["conv_blocks"] == 1 and spec["filters"] == 4 and spec["dense_units"] == [8]
    config = read_yaml(out / "config.yaml")
    assert config["schedule"] == "cosine" and config["epochs"] == 2
    with open(out / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    metrics = read_json(out / "metrics.json")
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert read_json(out / "manifest.json")["command_line"][0] == "kerascnn"


def test_train_from_a_run_folder(cli_run, tiny_npz, tmp_path, runner):
    _, source = cli_run
    out = tmp_path / "again"
    result = runner.invoke(main, ["train", "--from", str(source), "--dataset", tiny_npz,
                                  "--epochs", "1", "--filters", "6", "-q",
                                  "--output-dir", str(out)])
    assert result.exit_code == 0 and result.stdout == "", result.output
    spec = read_yaml(out / "spec.yaml")
    assert spec["filters"] == 6 and spec["dense_units"] == [8]  # flag over the folder's spec


def test_spec_sources_preset_config_and_tune_result(cli_run, tmp_path):
    from kerascnn.cli.train import spec_factory
    from kerascnn.runs import find_spec_file
    from kerascnn.spec import CNNSpec

    _, source = cli_run
    saved = CNNSpec.load(source / "spec.yaml")
    base = {k: None for k in ("preset", "spec_file", "input_shape", "num_classes")}
    # a preset takes the data's shape and classes
    spec = spec_factory({**base, "preset": "simple", "dense_units": (8,)}, None)((20, 20, 3), 7)
    assert spec.input_shape == (20, 20, 3) and spec.num_classes == 7
    assert spec.dense_units == (8,)
    # unless the flags say otherwise
    make = spec_factory({**base, "preset": "simple", "num_classes": 4}, None)
    assert make((20, 20, 3), 7).num_classes == 4
    # a spec file keeps its own shape
    assert spec_factory({**base, "spec_file": str(source / "spec.yaml")}, None)(
        (99, 99, 1), 3) == saved
    # --from: a run folder, a tune result DIR/best or DIR/<project>/best
    best = tmp_path / "tuning" / "proj" / "best"
    best.mkdir(parents=True)
    (best / "spec.yaml").write_text((source / "spec.yaml").read_text())
    assert find_spec_file(str(source)) == source / "spec.yaml"
    assert find_spec_file(str(tmp_path / "tuning")) == best / "spec.yaml"
    assert find_spec_file(str(tmp_path / "tuning" / "proj")) == best / "spec.yaml"
    assert spec_factory(base, find_spec_file(str(tmp_path / "tuning")))((1, 1, 1), 2) == saved
    other = tmp_path / "tuning" / "other" / "best"
    other.mkdir(parents=True)
    (other / "spec.yaml").write_text((source / "spec.yaml").read_text())
    with pytest.raises(InputError, match="several tune results"):
        find_spec_file(str(tmp_path / "tuning"))
    with pytest.raises(InputError, match="No spec.yaml"):
        find_spec_file(str(tmp_path))


@pytest.mark.parametrize("args, needles", [
    (["--epochs", "0"], ["--epochs"]),
    (["--schedule", "step"], ["--schedule", "step"]),
    (["--optimizer", "adagrad"], ["--optimizer"]),
    (["--lr", "-1"], ["--learning-rate"]),
    (["--strategy", "tpu"], ["--strategy"]),
    (["--from", "/nonexistent/run"], ["--from", "/nonexistent/run"]),
    (["--config", "/nonexistent/spec.yaml"], ["Spec file not found"]),
    (["--preset", "lenet6"], ["lenet6"]),
    (["--conv-blocks", "9"], ["conv_blocks"]),
    (["--dataset", "no_such_dataset"], ["no_such_dataset"]),
    (["--filters", "(("], ["--filters"]),
])
def test_train_bad_input_is_one_line(args, needles, tiny_npz, tmp_path, runner):
    out = tmp_path / "run"
    argv = ["train", "--dataset", tiny_npz, "--epochs", "1", "--output-dir", str(out), *args]
    result = runner.invoke(main, argv)
    one_line_error(result, *needles)
    assert not out.exists()


def test_train_refuses_an_existing_run_and_keeps_it(cli_run, tiny_npz, runner):
    _, out = cli_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(main, ["train", "--dataset", tiny_npz, "--epochs", "1",
                                  "--output-dir", str(out), *TINY])
    one_line_error(result, "already holds results", "--overwrite")
    result = runner.invoke(main, ["train", "--dataset", tiny_npz, "--epochs", "2",
                                  "--batch-size", "32", "--schedule", "cosine", "--resume",
                                  "--output-dir", str(out), *TINY])
    one_line_error(result, "already finished")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_rate_that_makes_the_loss_nan_is_bad_input_and_the_run_folder_stays(
        tiny_npz, tmp_path, runner, monkeypatch):
    # found by the CLI fuzz: --learning-rate=4514809 made the sample's loss NaN in the
    # first epoch and train exited 1; the quadrants do not diverge reliably, so the
    # real training's result is marked as a diverged one
    import kerascnn.training

    real = kerascnn.training.train

    def diverging(*args, **kwargs):
        result = real(*args, **kwargs)
        result.metrics["diverged"] = True
        return result

    monkeypatch.setattr(kerascnn.training, "train", diverging)
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--dataset", tiny_npz, "--epochs", "1",
                                  "--learning-rate", "4514809", "--output-dir", str(out),
                                  "-q", *TINY])
    one_line_error(result, "The loss became NaN", "--learning-rate=4514809.0")
    assert (out / "history.csv").is_file() and (out / "spec.yaml").is_file()


def test_train_output_dir_is_required(runner):
    result = runner.invoke(main, ["train", "--epochs", "1"])
    one_line_error(result, "--output-dir")


def test_multiworker_without_tf_config_is_one_line(tiny_npz, tmp_path, runner, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = runner.invoke(main, ["train", "--dataset", tiny_npz, "--strategy", "multiworker",
                                  "--output-dir", str(tmp_path / "run")])
    one_line_error(result, "TF_CONFIG")


def test_lr_find_prints_a_rate_and_saves_the_plot(tiny_npz, tmp_path, runner):
    from PIL import Image

    plot = tmp_path / "lr.png"
    argv = ["lr-find", "--dataset", tiny_npz, "--batch-size", "32", "--steps", "40",
            "--output", str(plot), *TINY]
    result = runner.invoke(main, argv)
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert line.startswith("Suggested learning rate: ")
    rate = float(line.split(": ")[1].split()[0])
    assert 1e-7 < rate < 10
    assert f"Plot: {plot}" in result.stdout
    with Image.open(plot) as im:
        assert im.format == "PNG"

    result = runner.invoke(main, argv)
    one_line_error(result, "already exists", "--overwrite")
    result = runner.invoke(main, [*argv[:-len(TINY)], "--steps", "12", "--overwrite", "-q",
                                  "--method", "minimum/10", *TINY])
    assert result.exit_code == 0, result.output
    assert 1e-8 < float(result.stdout.strip()) < 10


@pytest.mark.parametrize("args, needles", [
    (["--steps", "3"], ["--steps"]),
    (["--start-lr", "1", "--end-lr", "0.1"], ["start_lr must be smaller than end_lr"]),
    (["--method", "valley"], ["--method"]),
    (["--output", "plot.jpg"], [".png"]),
])
def test_lr_find_bad_input_is_one_line(args, needles, tiny_npz, runner):
    result = runner.invoke(main, ["lr-find", "--dataset", tiny_npz, *args])
    one_line_error(result, *needles)
