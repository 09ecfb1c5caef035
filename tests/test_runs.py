"""kerascnn.runs: the one writer and reader of run folders, finding runs and searches."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

from kerascnn import files, runs, runtime
from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec

ROWS = [
    {"epoch": 0, "phase": "head", "loss": 1.5, "accuracy": 0.25, "learning_rate": 0.001},
    {"epoch": 1, "phase": "fine_tune", "loss": 0.75, "accuracy": 0.5, "val_loss": 0.8,
     "learning_rate": 0.0001},
]


# ---------------------------------------------------------------------------- history.csv


def test_history_round_trip_keeps_text_columns_and_skips_empty_cells(tmp_path):
    path = runs.write_history(tmp_path / "history.csv", ROWS)
    header = path.read_text().splitlines()[0]
    assert header == "epoch,phase,loss,accuracy,learning_rate,val_loss"  # order of appearance
    back = runs.read_history(path)
    assert back == ROWS
    assert isinstance(back[0]["epoch"], int) and "val_loss" not in back[0]
    assert runs.read_history_csv is runs.read_history  # the old name


def test_history_to_csv_of_no_rows_is_empty():
    assert runs.history_to_csv([]) == "\n"


# ---------------------------------------------------------------------------- writing


def test_run_writer_writes_every_file_and_creates_the_folder_lazily(tmp_path, tiny_spec,
                                                                    tiny_model):
    runtime.start()
    out = tmp_path / "run"
    writer = runs.RunWriter(out)
    assert not out.exists()  # nothing until the first write
    writer.write_spec(tiny_spec)
    writer.write_config({"epochs": 2, "image_size": (28, 28)})
    writer.write_history(ROWS)
    writer.write_model(tiny_model, class_names=["a", "b", "c", "d"], spec=tiny_spec,
                       config={"epochs": 2})
    writer.write_metrics({"test_accuracy": np.float32(0.5)})
    writer.write_manifest(seed=3, kind="train", command_line=["kerascnn", "train"])
    assert set(writer.paths) == set(runs.RUN_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(runs.RUN_FILES)
    assert all(path.parent == out for path in writer.paths.values())

    run = runs.read_run(out)
    assert run.path == out and run.spec == tiny_spec and run.backbone is None
    assert run.config == {"epochs": 2, "image_size": [28, 28]}
    assert run.history == ROWS
    assert run.metrics == {"test_accuracy": 0.5}
    assert run.manifest["seed"] == 3 and run.manifest["kind"] == "train"
    assert run.manifest["command_line"] == ["kerascnn", "train"]
    assert run.manifest["runtime"] == runtime.settings()  # the thread settings, issue 15
    assert run.manifest["versions"]["kerascnn"]
    assert run.finished
    model = run.load_model(compile=False)
    assert model.kerascnn_metadata["class_names"] == ["a", "b", "c", "d"]
    assert CNNSpec.from_dict(model.kerascnn_metadata["spec"]) == tiny_spec
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1)).astype("uint8")
    np.testing.assert_allclose(model.predict(x, verbose=0), tiny_model.predict(x, verbose=0),
                               atol=1e-6)


def test_an_unfinished_run_reads_back_without_metrics(tmp_path, tiny_spec):
    writer = runs.RunWriter(tmp_path)
    writer.write_spec(tiny_spec)
    writer.write_config({"epochs": 5})
    writer.checkpoint_dir.mkdir()
    run = runs.read_run(tmp_path)
    assert run.metrics == {} and run.history == [] and run.manifest == {}
    assert not run.finished


def test_remove_run_files_leaves_other_files(tmp_path, tiny_spec):
    writer = runs.RunWriter(tmp_path)
    writer.write_spec(tiny_spec)
    writer.write_metrics({})
    writer.write_backbone({"backbone": "vgg16"})
    writer.checkpoint_dir.mkdir()
    (writer.checkpoint_dir / "best.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "logs").mkdir()
    writer.remove_run_files(extra=("logs",))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_manifest_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--flag"])
    record = runs.manifest(seed=1, dataset_fingerprint="abc", status="complete")
    assert record["command_line"] == ["prog", "--flag"]
    assert record["seed"] == 1 and record["dataset_fingerprint"] == "abc"
    assert record["status"] == "complete" and "created" in record and "runtime" in record


def test_the_old_file_helpers_are_kerascnn_files():
    for name in ("atomic_write_text", "write_json", "write_yaml", "read_json", "read_yaml"):
        assert getattr(runs, name) is getattr(files, name), name


# ---------------------------------------------------------------------------- output folders


def test_prepare_output_dir(tmp_path):
    assert runs.prepare_output_dir(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InputError, match="already holds results; pass --overwrite.*"
                                         "Received: output_dir="):
        runs.prepare_output_dir(tmp_path / "full")
    assert runs.prepare_output_dir(tmp_path / "full", overwrite=True) == tmp_path / "full"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="exists and is not a folder"):
        runs.prepare_output_dir(tmp_path / "file", overwrite=True)


# ---------------------------------------------------------------------------- models


def test_save_model_refuses_another_suffix_and_writes_nothing(tmp_path, tiny_model):
    with pytest.raises(InputError, match=r"Model files end in '.keras'. Received: path="):
        runs.save_model(tiny_model, tmp_path / "model.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, match", [
    ("missing.keras", "Model file not found. Received: model="),
    ("", "Folder holds no model.keras"),
    ("text.keras", r"Not a Keras model file \(expected a '.keras' archive\)"),
])
def test_check_model_path_refuses(tmp_path, name, match):
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(InputError, match=match):
        runs.check_model_path(tmp_path / name if name else tmp_path)
    with pytest.raises(InputError, match=match):
        runs.load_model(tmp_path / name if name else tmp_path)


def test_check_model_path_refuses_a_zip_without_config(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a model")
    with pytest.raises(InputError, match="no config.json in the archive"):
        runs.check_model_path(path)
    assert runs.read_model_metadata(path) == {}


def test_check_model_path_finds_the_model_of_a_run_or_a_tune_result(tmp_path, tiny_model):
    runs.save_model(tiny_model, tmp_path / "best" / "model.keras")
    assert runs.check_model_path(tmp_path) == tmp_path / "best" / "model.keras"
    runs.save_model(tiny_model, tmp_path / "model.keras", note="top")
    assert runs.check_model_path(tmp_path) == tmp_path / "model.keras"
    assert runs.read_model_metadata(tmp_path / "model.keras")["note"] == "top"


# ---------------------------------------------------------------------------- finding runs


@pytest.fixture
def tune_tree(tmp_path, tiny_spec):
    """A run folder, and a tune directory with one project whose best/ is a run."""
    run = tmp_path / "run"
    runs.RunWriter(run).write_spec(tiny_spec)
    best = tmp_path / "tuning" / "proj" / "best"
    runs.RunWriter(best).write_spec(tiny_spec)
    return tmp_path


def test_find_run_in_a_run_a_project_and_a_tune_directory(tune_tree):
    assert runs.find_run(tune_tree / "run") == tune_tree / "run"
    best = tune_tree / "tuning" / "proj" / "best"
    assert runs.find_run(tune_tree / "tuning" / "proj") == best
    assert runs.find_run(tune_tree / "tuning") == best
    assert runs.find_spec_file(tune_tree / "tuning") == best / "spec.yaml"


def test_find_run_refuses_ambiguity_and_absence(tune_tree, tiny_spec):
    runs.RunWriter(tune_tree / "tuning" / "other" / "best").write_spec(tiny_spec)
    with pytest.raises(InputError, match=r"holds several tune results.*name one.*"
                                         r"Received: --from="):
        runs.find_run(tune_tree / "tuning", name="--from")
    with pytest.raises(InputError, match=r"No spec.yaml in .*Received: directory="):
        runs.find_run(tune_tree)
    with pytest.raises(InputError, match="needs a run folder or a tune result folder"):
        runs.find_run(tune_tree / "missing")
    with pytest.raises(InputError):
        runs.read_run(tune_tree / "missing")


def test_a_finetune_run_has_no_spec_to_train_again(tmp_path):
    runs.RunWriter(tmp_path).write_backbone({"backbone": "vgg16", "num_classes": 3})
    assert runs.find_run(tmp_path) == tmp_path
    run = runs.read_run(tmp_path)
    assert run.spec is None and run.backbone == {"backbone": "vgg16", "num_classes": 3}
    with pytest.raises(InputError, match="is a fine-tuning run.*kerascnn finetune"):
        runs.find_spec_file(tmp_path)


def test_find_search(tmp_path):
    project = tmp_path / "dir" / "proj"
    project.mkdir(parents=True)
    files.write_json(project / runs.LEADERBOARD, [])
    assert runs.find_search(project) == project
    assert runs.find_search(tmp_path / "dir") == project
    other = tmp_path / "dir" / "other"
    other.mkdir()
    files.write_json(other / runs.LEADERBOARD, [])
    with pytest.raises(InputError, match="several searches; name one of them: other, proj"):
        runs.find_search(tmp_path / "dir")
    with pytest.raises(InputError, match=r"Not a search folder: no such folder.*"
                                         r"Received: search_dir="):
        runs.find_search(tmp_path / "nope")
    with pytest.raises(InputError, match="no leaderboard.json in it"):
        runs.find_search(tmp_path)
