"""The bad-input matrix: every command, refusing bad values, files, folders,
configs, models, images and addresses the same way.

Each case must end with exit code 2 and ONE line on stderr that names the
culprit, with no traceback, and must leave the existing output folder exactly
as it was (the same files with the same modification times). The commands
run in-process through click's CliRunner; bad input is refused before any
training, so the whole matrix stays in the fast suite.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kerascnn.cli import main

MATRIX_ROOT = "matrix"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Bad and good files side by side, and an output folder that must not change."""
    root = tmp_path_factory.mktemp(MATRIX_ROOT)
    from kerascnn.data import builtin

    with np.load(builtin.SAMPLE_PATH) as f:
        np.savez(root / "tiny.npz", x_train=f["x_train"][:200], y_train=f["y_train"][:200],
                 x_test=f["x_test"][:50], y_test=f["y_test"][:50])
    np.savez(root / "wrong_keys.npz", images=np.zeros((4, 8, 8)), labels=np.zeros(4))
    np.savez(root / "mismatch.npz", x_train=np.zeros((10, 8, 8), "uint8"),
             y_train=np.zeros(7, "int64"), x_test=np.zeros((2, 8, 8), "uint8"),
             y_test=np.zeros(2, "int64"))
    (root / "not_a.npz").write_text("just text")
    (root / "flat").mkdir()  # images but no class subfolders
    (root / "flat" / "a.png").write_bytes(b"\x89PNG")
    (root / "empty").mkdir()
    (root / "broken.png").write_text("not an image")
    (root / "note.txt").write_text("hello")
    (root / "bad.yaml").write_text("epochs: [1, 2\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "unknown_key.yaml").write_text("epochs: 1\nwarp_speed: 9\n")
    (root / "bad_spec.yaml").write_text("input_shape: [28, 28, 1]\nnum_classes: 10\n"
                                        "conv_blocks: 2\nwings: 2\n")
    (root / "tiny_input_spec.yaml").write_text("input_shape: [8, 8, 1]\nnum_classes: 10\n"
                                               "conv_blocks: 5\n")
    (root / "space_list.yaml").write_text("- conv_blocks\n")
    (root / "not_zip.keras").write_text("not a model")
    with zipfile.ZipFile(root / "no_config.keras", "w") as zf:
        zf.writestr("metadata.json", "{}")
    (root / "search").mkdir()  # an (empty) search: only the report's output is wrong
    (root / "search" / "leaderboard.json").write_text("[]")
    (root / "torn_search").mkdir()  # a leaderboard cut short
    (root / "torn_search" / "leaderboard.json").write_text('[{"trial_id": "0", "sco')
    (root / "no_search").mkdir()
    (root / "no_search" / "notes.txt").write_text("x")
    # the existing results that no refused command may touch
    out = root / "existing"
    (out / "best").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (out / "spec.yaml").write_text("input_shape: [28, 28, 1]\nnum_classes: 10\n")
    (out / "best" / "model.keras").write_bytes(b"old")
    (out / "plot.png").write_bytes(b"old picture")
    (out / "lr.png").write_bytes(b"old plot")
    (out / "model.tflite").write_bytes(b"old export")
    old = time.time() - 3600
    for path in out.rglob("*"):
        os.utime(path, (old, old))
    return root


@pytest.fixture(scope="module")
def model(world) -> Path:
    """A small valid .keras model, for the cases whose culprit is not the model."""
    import keras

    from kerascnn.builders import build_cnn
    from kerascnn.runs import save_model

    path = world / "good.keras"
    if not path.exists():
        net = build_cnn(input_shape=(28, 28, 1), num_classes=10, conv_blocks=1, filters=4,
                        dense_units=())
        net.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
        save_model(net, path, class_names=[str(i) for i in range(10)])
        keras.backend.clear_session()
    return path


# (id, command line, text that names the culprit); {w} is the world folder,
# {m} a valid model. Values, files, folders, configs, models, images, addresses.
CASES = [
    # summary
    ("summary-preset", "summary --preset lenet6", "lenet6"),
    ("summary-shape", "summary --input-shape 28,0,1", "input"),
    ("summary-too-deep", "summary --spec {w}/tiny_input_spec.yaml", "conv_blocks"),
    ("summary-unknown-field", "summary --spec {w}/bad_spec.yaml", "wings"),
    ("summary-padding", "summary --input-shape 28,28,1 --num-classes 10 --padding diagonal",
     "diagonal"),
    ("summary-format", "summary --preset lenet5 --format xml", "xml"),
    ("summary-spec-missing", "summary --spec {w}/nowhere.yaml", "nowhere.yaml"),
    # datasets
    ("datasets-unknown", "datasets no_such_dataset", "no_such_dataset"),
    ("datasets-not-npz", "datasets {w}/not_a.npz", "not_a.npz"),
    ("datasets-wrong-keys", "datasets {w}/wrong_keys.npz", "keys"),
    ("datasets-flat-folder", "datasets {w}/flat", "subfolder"),
    ("datasets-split", "datasets {w}/tiny.npz --validation-split 1.5", "validation-split"),
    ("datasets-color", "datasets {w}/tiny.npz --color-mode purple", "purple"),
    # tune
    ("tune-trials", "tune --dataset {w}/tiny.npz --max-trials 0 --directory {w}/existing",
     "max-trials"),
    ("tune-tuner", "tune --dataset {w}/tiny.npz --tuner annealing --directory {w}/existing",
     "annealing"),
    ("tune-budget", "tune --dataset {w}/tiny.npz --time-budget soon --directory {w}/existing",
     "soon"),
    ("tune-space-range", "tune --dataset {w}/tiny.npz --space '{{conv_blocks: {{min: 3, max: 1}}}}'"
     " --directory {w}/existing", "conv_blocks"),
    ("tune-space-list", "tune --dataset {w}/tiny.npz --space {w}/space_list.yaml "
     "--directory {w}/existing", "space"),
    ("tune-space-unknown", "tune --dataset {w}/tiny.npz --space '{{wingspan: 3}}' "
     "--directory {w}/existing", "wingspan"),
    ("tune-config-missing", "tune --config {w}/nowhere.yaml --directory {w}/existing",
     "nowhere.yaml"),
    ("tune-config-bad-yaml", "tune --config {w}/bad.yaml --directory {w}/existing", "bad.yaml"),
    ("tune-config-list", "tune --config {w}/list.yaml --directory {w}/existing", "list.yaml"),
    ("tune-config-unknown", "tune --config {w}/unknown_key.yaml --directory {w}/existing",
     "warp_speed"),
    ("tune-dataset-missing", "tune --dataset {w}/nowhere.npz --directory {w}/existing",
     "nowhere.npz"),
    ("tune-address-no-port", "tune --dataset {w}/tiny.npz --distributed worker --worker-id w1 "
     "--oracle-address 127.0.0.1 --directory {w}/existing", "127.0.0.1"),
    ("tune-address-port", "tune --dataset {w}/tiny.npz --distributed chief "
     "--oracle-address 127.0.0.1:70000 --directory {w}/existing", "70000"),
    ("tune-address-host", "tune --dataset {w}/tiny.npz --distributed chief "
     "--oracle-address 192.0.2.1:8000 --directory {w}/existing", "192.0.2.1"),
    ("tune-worker-no-id", "tune --dataset {w}/tiny.npz --distributed worker "
     "--directory {w}/existing", "worker_id"),
    ("tune-worker-chief-id", "tune --dataset {w}/tiny.npz --distributed worker "
     "--worker-id chief1 --directory {w}/existing", "chief1"),
    ("tune-address-alone", "tune --dataset {w}/tiny.npz --oracle-address 127.0.0.1:8000 "
     "--directory {w}/existing", "oracle_address"),
    ("tune-seed", "tune --dataset {w}/tiny.npz --seed 99999999999 --directory {w}/new_search",
     "seed"),
    ("tune-keep", "tune --dataset {w}/tiny.npz --keep-checkpoints 0 --directory {w}/existing",
     "keep-checkpoints"),
    # train
    ("train-epochs", "train --dataset {w}/tiny.npz --epochs 0 --output-dir {w}/existing",
     "epochs"),
    ("train-lr", "train --dataset {w}/tiny.npz --learning-rate -1 --output-dir {w}/existing",
     "learning-rate"),
    ("train-existing-output", "train --dataset {w}/tiny.npz --conv-blocks 1 --filters 8 --epochs 1 "
     "--output-dir {w}/existing", "existing"),
    ("train-dataset-mismatch", "train --dataset {w}/mismatch.npz --output-dir {w}/new_run",
     "mismatch.npz"),
    # seeds past numpy's 2**32-1 and int32 step counts (found by the slow CLI fuzz: exit 1)
    ("train-seed", "train --dataset {w}/tiny.npz --seed 4294967296 --output-dir {w}/new_run",
     "seed"),
    ("train-steps-per-execution", "train --dataset {w}/tiny.npz --steps-per-execution "
     "999999999999 --output-dir {w}/new_run", "steps-per-execution"),
    ("train-from-not-run", "train --from {w}/no_search --dataset {w}/tiny.npz "
     "--output-dir {w}/new_run", "no_search"),
    ("train-spec-unknown", "train --spec {w}/bad_spec.yaml --dataset {w}/tiny.npz "
     "--output-dir {w}/new_run", "wings"),
    # lr-find
    ("lr-find-range", "lr-find --dataset {w}/tiny.npz --start-lr 1 --end-lr 0.1 "
     "--output {w}/new_lr.png", "lr"),
    ("lr-find-existing", "lr-find --dataset {w}/tiny.npz --output {w}/existing/lr.png",
     "lr.png"),
    ("lr-find-seed", "lr-find --dataset {w}/tiny.npz --seed -1 --output {w}/new_lr.png", "seed"),
    ("lr-find-steps", "lr-find --dataset {w}/tiny.npz --steps 0", "steps"),
    # evaluate
    ("evaluate-missing-model", "evaluate {w}/nowhere.keras --dataset {w}/tiny.npz",
     "nowhere.keras"),
    ("evaluate-not-zip", "evaluate {w}/not_zip.keras --dataset {w}/tiny.npz", "not_zip.keras"),
    ("evaluate-no-config", "evaluate {w}/no_config.keras --dataset {w}/tiny.npz",
     "no_config.keras"),
    ("evaluate-folder", "evaluate {w}/empty --dataset {w}/tiny.npz", "empty"),
    ("evaluate-split", "evaluate {m} --dataset {w}/tiny.npz --split holdout", "holdout"),
    ("evaluate-seed", "evaluate {m} --dataset {w}/tiny.npz --seed 4294967296", "seed"),
    ("evaluate-plots-existing", "evaluate {m} --dataset {w}/tiny.npz --plots {w}/existing",
     "existing"),
    # predict
    ("predict-missing-image", "predict {m} {w}/nowhere.png", "nowhere.png"),
    ("predict-broken-image", "predict {m} {w}/broken.png", "broken.png"),
    ("predict-not-image", "predict {m} {w}/note.txt", "note.txt"),
    ("predict-empty-folder", "predict {m} {w}/empty", "empty"),
    ("predict-top-k", "predict {m} {w}/broken.png --top-k 0", "top-k"),
    ("predict-bad-model", "predict {w}/not_zip.keras {w}/broken.png", "not_zip.keras"),
    # export
    ("export-format", "export {m} --format pickle -o {w}/new.bin", "pickle"),
    ("export-existing", "export {m} --format tflite -o {w}/existing/model.tflite",
     "model.tflite"),
    ("export-tolerance", "export {m} --format tflite -o {w}/x.tflite --tolerance -1",
     "tolerance"),
    ("export-bad-model", "export {w}/no_config.keras --format keras -o {w}/x.keras",
     "no_config.keras"),
    # finetune
    ("finetune-backbone", "finetune --backbone alexnet50 --dataset {w}/tiny.npz "
     "--output-dir {w}/new_ft", "alexnet50"),
    ("finetune-existing", "finetune --backbone mobilenet_v2 --weights none "
     "--dataset {w}/tiny.npz --output-dir {w}/existing", "existing"),
    ("finetune-seed", "finetune --backbone mobilenet_v2 --weights none --seed 4294967296 "
     "--dataset {w}/tiny.npz --output-dir {w}/new_ft", "seed"),
    ("finetune-weights", "finetune --backbone mobilenet_v2 --weights {w}/nowhere.h5 "
     "--dataset {w}/tiny.npz --output-dir {w}/new_ft", "nowhere.h5"),
    ("finetune-unfreeze", "finetune --backbone mobilenet_v2 --weights none --unfreeze sideways "
     "--dataset {w}/tiny.npz --output-dir {w}/new_ft", "sideways"),
    # visualize
    ("visualize-kind", "visualize {m} --kind xray -o {w}/new.png", "xray"),
    ("visualize-existing", "visualize {m} --kind filters -o {w}/existing/plot.png", "plot.png"),
    ("visualize-broken-image", "visualize {m} --kind gradcam --image {w}/broken.png "
     "-o {w}/new.png", "broken.png"),
    ("visualize-no-image", "visualize {m} --kind gradcam -o {w}/new.png", "image"),
    ("visualize-suffix", "visualize {m} --kind filters -o {w}/new.docx", "new.docx"),
    # report
    ("report-not-search", "report {w}/no_search -o {w}/new_report", "no_search"),
    ("report-missing", "report {w}/nowhere -o {w}/new_report", "nowhere"),
    ("report-existing", "report {w}/search -o {w}/existing", "existing"),
    ("report-torn-leaderboard", "report {w}/torn_search -o {w}/new_report", "leaderboard.json"),
]


def _argv(line: str, world: Path, model_path: str) -> list[str]:
    import shlex

    return shlex.split(line.replace("{w}", str(world)).replace("{m}", model_path)
                       .replace("{{", "{").replace("}}", "}"))


def test_the_matrix_is_wide_enough():
    commands = {line.split()[0] for _, line, _ in CASES}
    assert commands == {"summary", "datasets", "tune", "train", "lr-find", "evaluate",
                        "predict", "export", "finetune", "visualize", "report"}
    assert len(CASES) >= 40
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id,line,culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case_id, line, culprit, world,
                                                          request):
    from click.testing import CliRunner

    model_path = str(request.getfixturevalue("model")) if "{m}" in line else "unused"
    before = _snapshot(world / "existing")
    others = {p.name for p in world.iterdir()}
    result = CliRunner().invoke(main, _argv(line, world, model_path))
    err = result.stderr
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and culprit in lines[0], lines[0]
    assert _snapshot(world / "existing") == before
    assert {p.name for p in world.iterdir()} == others  # nothing new was created


# ---------------------------------------------------------------------------
# A bug is not bad input: an internal error is exit 1, with its traceback kept
# ---------------------------------------------------------------------------

INTERNAL = "Error: internal error in kerascnn (a bug, not a problem with your input)"


def _break_keras_conv(monkeypatch):
    """Make Keras itself raise a ValueError when a convolution is built."""
    import keras

    def build(self, input_shape):
        raise ValueError("deliberately broken inside Keras (Conv2D.build)")

    monkeypatch.setattr(keras.layers.Conv2D, "build", build)


def _crash_file(line: str) -> Path:
    assert "the traceback is in " in line, line
    return Path(line.split("the traceback is in ")[1].split("; please report")[0])


def test_an_internal_value_error_is_exit_1_with_a_crash_file_in_the_run_folder(
        world, tmp_path, monkeypatch):
    from click.testing import CliRunner

    _break_keras_conv(monkeypatch)
    out = tmp_path / "run"
    out.mkdir()  # the run folder exists (empty): the crash file goes there
    result = CliRunner().invoke(main, ["train", "--dataset", str(world / "tiny.npz"),
                                       "--conv-blocks", "1", "--filters", "4", "--epochs", "1",
                                       "--output-dir", str(out), "-q"])
    assert result.exit_code == 1, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(INTERNAL), lines[0]
    assert "ValueError: deliberately broken inside Keras" in lines[0]
    assert "Traceback" not in result.output
    crash = _crash_file(lines[0])
    assert crash.parent == out and crash.name.startswith("kerascnn-crash-")
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text
    assert "def build" not in text and "in build" in text  # the frame inside the patched Keras
    assert "ValueError: deliberately broken inside Keras (Conv2D.build)" in text
    assert "command: kerascnn train --dataset" in text


def test_an_internal_error_without_output_folder_goes_to_the_temp_dir(monkeypatch, tmp_path):
    from click.testing import CliRunner

    _break_keras_conv(monkeypatch)
    monkeypatch.setattr(tempfile_module(), "tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["summary", "--preset", "lenet5", "--check-keras"])
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(INTERNAL) and "--debug prints it here" in last
    crash = _crash_file(last)
    assert crash.parent == tmp_path
    assert "ValueError: deliberately broken inside Keras" in crash.read_text()


def tempfile_module():
    import tempfile

    return tempfile


@pytest.mark.parametrize("argv", [
    ["--debug", "summary", "--preset", "lenet5", "--check-keras"],
    ["train", "--conv-blocks", "1", "--filters", "4", "--epochs", "1", "-vv",
     "--output-dir", "{tmp}/run"],
])
def test_debug_and_vv_print_the_traceback(argv, world, tmp_path, monkeypatch):
    from click.testing import CliRunner

    _break_keras_conv(monkeypatch)
    monkeypatch.setattr(tempfile_module(), "tempdir", str(tmp_path))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train":
        argv += ["--dataset", str(world / "tiny.npz")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: deliberately broken inside Keras" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(INTERNAL) and "--debug prints" not in last
    assert _crash_file(last).is_file()  # kept on file too


def test_an_internal_error_in_a_real_process(world, tmp_path):
    """The same, as a user sees it: `python -m kerascnn` in its own process."""
    import subprocess
    import sys

    code = ("import sys, keras\n"
            "def build(self, input_shape):\n"
            "    raise ValueError('deliberately broken inside Keras (Conv2D.build)')\n"
            "keras.layers.Conv2D.build = build\n"
            "from kerascnn.cli import main\n"
            "main(sys.argv[1:])\n")
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", "--dataset", str(world / "tiny.npz"),
         "--conv-blocks", "1", "--filters", "4", "--epochs", "1", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(INTERNAL), proc.stderr
    crash = _crash_file(last)
    assert crash.parent == out
    assert "ValueError: deliberately broken inside Keras (Conv2D.build)" in crash.read_text()


def test_a_library_input_error_is_exit_2_one_line(monkeypatch):
    """The other side: the library's InputError, wherever raised, is bad input."""
    from click.testing import CliRunner

    import kerascnn
    from kerascnn import analysis

    def refuse(spec):
        raise kerascnn.InputError("conv_blocks must fit the input. Received: conv_blocks=9")

    monkeypatch.setattr(analysis, "analyze", refuse)
    monkeypatch.setattr("kerascnn.cli.summary.analyze", refuse)
    result = CliRunner().invoke(main, ["summary", "--preset", "lenet5"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: conv_blocks must fit the input. Received: conv_blocks=9"


@pytest.mark.parametrize("error", ["tensorflow", "python"])
def test_out_of_memory_is_bad_input_in_one_line(error, monkeypatch):
    """A network, batch or image size the machine cannot hold: exit 2, one line."""
    from click.testing import CliRunner

    from kerascnn import analysis

    def exhaust(spec):
        if error == "python":
            raise MemoryError()
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[3,3,1,4294967296] and type "
                        "float on /job:localhost/replica:0/task:0/device:CPU:0\nby allocator")

    monkeypatch.setattr(analysis, "analyze", exhaust)
    monkeypatch.setattr("kerascnn.cli.summary.analyze", exhaust)
    result = CliRunner().invoke(main, ["summary", "--preset", "lenet5"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Out of memory: this machine"), lines
    if error == "tensorflow":
        assert "cannot hold a tensor of shape [3,3,1,4294967296]" in lines[0]
        assert "Received: ResourceExhaustedError: OOM when allocating" in lines[0]
    else:
        assert "Received: MemoryError" in lines[0]
