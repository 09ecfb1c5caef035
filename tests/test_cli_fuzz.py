"""Fuzzing the command line (issue 14 item 5).

Hypothesis drives every command with random values for its numeric, path and
choice options: numbers of every kind and many that are not numbers, paths
that do not exist, are files or are folders, choices right and wrong. Each
case either works (exit 0) or is refused as bad input: exit 2, ONE line on
stderr starting with `Error: `, no traceback, and nothing written or changed
in the sandbox. Never exit 1 (that would be an internal error).

The default run keeps every output target refused (an existing run folder, a
file) so nothing trains and each case takes milliseconds once TensorFlow is
loaded; `--runslow` draws more cases and lets valid ones run on tiny data.
Run with `-s` to see how many cases were tried, and with KERASCNN_FUZZ_RANDOM=1 to
draw new slow cases instead of the fixed ones.
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kerascnn.checks import (BACKBONES, CAM_METHODS, COLOR_MODES, OPTIMIZERS,
                             SCHEDULES, SPLITS, STRATEGIES, TUNERS, VISUALIZE_KINDS)
from kerascnn.cli import main

TRIED: collections.Counter = collections.Counter()
WORKED: collections.Counter = collections.Counter()
FAST = dict(deadline=None, database=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])
# The slow cases are drawn the same way on every run, so that CI judges the code and
# not the draw; KERASCNN_FUZZ_RANDOM=1 draws new ones (to look for new bugs).
SLOW = {**FAST, "derandomize": not os.environ.get("KERASCNN_FUZZ_RANDOM")}


@pytest.fixture(scope="module", autouse=True)
def _count_cases():
    yield
    print(f"\nCLI fuzz: {sum(TRIED.values())} cases tried, {sum(WORKED.values())} worked "
          f"(exit 0), the rest refused (exit 2). Tried: {dict(sorted(TRIED.items()))}; "
          f"worked: {dict(sorted(WORKED.items()))}")


# ---------------------------------------------------------------------------
# The sandbox: good and bad files side by side
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, make_npz, make_image_folder) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    make_npz(root / "tiny.npz", n_train=40, n_test=12, size=12, classes=3)
    make_image_folder(root / "pets", per_class=3, size=(12, 12), mode="L")
    (root / "empty").mkdir()
    (root / "note.txt").write_text("hello")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "spec.yaml").write_text("input_shape: [12, 12, 1]\nnum_classes: 3\nconv_blocks: 1\n"
                                    "filters: 4\ndense_units: []\n")
    (root / "bad.yaml").write_text("epochs: [1, 2\n")
    (root / "space.yaml").write_text("conv_blocks: {min: 1, max: 1}\nfilters: [4]\n")
    existing = root / "existing"  # results no refused command may touch
    existing.mkdir()
    (existing / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (existing / "spec.yaml").write_text((root / "spec.yaml").read_text())
    (existing / "picture.png").write_bytes(b"old picture")
    (existing / "leaderboard.json").write_text("[]")
    _save_tiny_model(root / "model.keras", root / "tiny.npz")
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return root


def _save_tiny_model(path: Path, dataset: Path) -> None:
    import keras

    from kerascnn.builders import build_cnn
    from kerascnn.runs import save_model
    from kerascnn.spec import CNNSpec

    spec = CNNSpec(input_shape=(12, 12, 1), num_classes=3, conv_blocks=1, filters=2,
                   dense_units=())
    net = build_cnn(spec, preprocessing=[keras.layers.Rescaling(1 / 255)])
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # as `kerascnn train` saves it: evaluate takes the dataset from here unless told
    save_model(net, path, class_names=["a", "b", "c"], spec=spec,
               config={"dataset": str(dataset), "validation_split": 0.1, "seed": 0})
    keras.backend.clear_session()


def _snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.is_dir(), None if p.is_dir() else p.stat().st_mtime_ns,
                                       None if p.is_dir() else p.stat().st_size)
            for p in root.rglob("*")}


QUIET = ("train", "lr-find", "tune", "evaluate", "predict", "export", "finetune", "visualize",
         "report")  # the commands with -q: no progress lines, so a refusal is the only line


def check(command: str, argv: list[str], root: Path) -> int:
    """Run one case: works, or one line / exit 2 / nothing written. Returns the exit code."""
    TRIED[command] += 1
    before = _snapshot(root)
    if command in QUIET and "-q" not in argv:
        argv = [*argv, "-q"]
    result = CliRunner().invoke(main, [command, *argv])
    if "keras" in sys.modules:  # models of earlier cases must not pile up
        sys.modules["keras"].backend.clear_session(free_memory=False)
    shown = f"kerascnn {command} {argv!r}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 2), shown
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), shown
        after = _snapshot(root)
        if "The loss became NaN" in lines[0]:
            # refused after training began: its own new run folder stays, nothing else moves
            before = {**before, **{k: v for k, v in after.items()
                                   if k.startswith("fresh") and k not in before}}
        assert after == before, shown
    else:
        WORKED[command] += 1
    return result.exit_code


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

ODD_TEXT = ["", " ", "abc", "1e3", "1,2", "0x10", "+5", "-0", "nan", "inf", "-inf", "1_000",
            "\u0663", "\u00bd", "3.", ".5", "1e-400", "1e400", "None", "true", "[1]", "{a: 1}",
            "5 blocks", "1.0.0", "\u00e9t\u00e9", "0.1%"]


def numbers() -> st.SearchStrategy[str]:
    """Anything a user could type where a number is expected."""
    return st.one_of(
        st.integers(1, 4).map(str),  # often valid, so that cases also work
        st.integers(-3, 5).map(str),
        st.integers(-10**12, 10**12).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(-2, 2).map(lambda f: f"{f:.3g}"),
        st.sampled_from(ODD_TEXT),
        st.text(max_size=5),
    )


def small_numbers() -> st.SearchStrategy[str]:
    """Numbers whose valid values stay cheap (epochs, trials, steps)."""
    return st.one_of(st.integers(-2, 2).map(str), st.sampled_from(ODD_TEXT[:12]),
                     st.text(max_size=3))


def choices(allowed) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([str(a) for a in allowed]),
                     st.sampled_from(["", "NONE", "xml", "adam ", "Hyperband", "-1"]),
                     st.text(max_size=8))


PATH_KINDS = ["missing", "missing.npz", "missing/deeper.keras", "note.txt", "broken.png",
              "empty", "pets", "tiny.npz", "spec.yaml", "bad.yaml", "model.keras", "existing",
              "note.txt/inside", "existing/picture.png", "w\u00e9ird name !$"]


def paths(root: Path, kinds=PATH_KINDS) -> st.SearchStrategy[str]:
    return st.sampled_from(kinds).map(lambda k: str(root / k))


def options(draw, spec: dict[str, st.SearchStrategy[str]], at_least: int = 0) -> list[str]:
    """`--name=value` for a random subset of `spec` (at least `at_least` of them)."""
    names = draw(st.lists(st.sampled_from(sorted(spec)), min_size=at_least,
                          max_size=min(len(spec), 4), unique=True))
    argv = []
    for name in names:
        value = draw(spec[name])
        argv.append(name if value is None else f"{name}={value}")
    return argv


def flags() -> st.SearchStrategy[None]:
    return st.just(None)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def summary_cases(root: Path):
    spec = {
        "--conv-blocks": numbers(), "--convs-per-block": numbers(), "--filters": numbers(),
        "--kernel-size": numbers(), "--strides": numbers(), "--dilation-rate": numbers(),
        "--pool-size": numbers(), "--dense-units": numbers(), "--dropout": numbers(),
        "--spatial-dropout": numbers(), "--num-classes": numbers(),
        "--input-shape": st.one_of(numbers(), st.lists(st.integers(-1, 300), min_size=1,
                                                       max_size=5).map(
            lambda xs: ",".join(map(str, xs)))),
        "--padding": choices(["same", "valid"]), "--pooling": choices(["max", "avg", "none"]),
        "--head": choices(["flatten", "gap", "conv"]), "--preset": choices(
            ["lenet5", "vgg16", "simple", "allconv", "fcn"]),
        "--format": choices(["table", "json", "markdown"]),
        "--config": paths(root),
    }
    return st.composite(lambda draw: options(draw, spec))()


@settings(max_examples=120, **FAST)
@given(data=st.data())
def test_summary_options(sandbox, data):
    check("summary", data.draw(summary_cases(sandbox)), sandbox)


def _data_options(root: Path) -> dict:
    return {"--dataset": st.one_of(paths(root), choices(["fashion_mnist_sample", "mnist"])),
            "--data-dir": paths(root), "--image-size": numbers(),
            "--color-mode": choices(COLOR_MODES), "--validation-split": numbers(),
            "--batch-size": numbers()}


@settings(max_examples=40, **FAST)
@given(data=st.data())
def test_datasets_options(sandbox, data):
    source = data.draw(st.one_of(st.none(), paths(sandbox)))
    spec = {k: v for k, v in _data_options(sandbox).items()
            if k not in ("--dataset", "--batch-size")}
    spec["--format"] = choices(["table", "json"])
    spec["--seed"] = numbers()
    argv = data.draw(st.composite(lambda draw: options(draw, spec))())
    check("datasets", ([source] if source else []) + argv, sandbox)


def _output(root: Path, fresh: bool, draw, kinds=("existing", "note.txt", "note.txt/inside")):
    """Where a command writes: refused places, or (slow) a fresh folder of its own."""
    if fresh and draw(st.booleans()):
        return str(root / "fresh" / f"{sum(TRIED.values())}")
    return str(root / draw(st.sampled_from(kinds)))


def _numbers_in(value: str) -> list[float]:
    """The numbers a value may stand for, read as the options read them (`1_000`, `40x40`)."""
    found = []
    for part in re.split(r"[,x\s()\[\]]+", value):
        for parse in (int, float):
            try:
                found.append(float(parse(part)))
                break
            except (ValueError, OverflowError):
                pass
    return found


def _cheap(argv: list[str], limits: dict[str, float]) -> bool:
    """No option in `limits` may stand for a number above its limit (slow runs stay short
    and small: epochs, trials, image sizes)."""
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in limits and any(n > limits[name] for n in _numbers_in(value)):
            return False
    return True


def train_cases(root: Path, fresh: bool):
    @st.composite
    def draw_case(draw):
        spec = {**_data_options(root), "--epochs": small_numbers() if fresh else numbers(),
                "--learning-rate": numbers(), "--weight-decay": numbers(),
                "--early-stopping": numbers(), "--steps-per-execution": numbers(),
                "--seed": numbers(), "--optimizer": choices(OPTIMIZERS),
                "--schedule": choices(SCHEDULES), "--strategy": choices(STRATEGIES),
                "--conv-blocks": numbers(), "--filters": numbers(), "--preset": choices(
                    ["simple", "lenet5"]), "--config": paths(root), "--from": paths(root),
                "--normalize": flags(), "--overwrite": flags(), "--jit": flags()}
        argv = options(draw, spec)
        if fresh:
            argv += ["--conv-blocks=1", "--filters=2", "--dense-units=none", "--epochs=1"]
        return argv + [f"--output-dir={_output(root, fresh, draw)}"]
    return draw_case()


@settings(max_examples=60, **FAST)
@given(data=st.data())
def test_train_options(sandbox, data):
    argv = data.draw(train_cases(sandbox, fresh=False))
    assume("--overwrite" not in argv)  # would replace the existing run: not a refusal test
    check("train", argv, sandbox)


def lr_find_cases(root: Path):
    spec = {**_data_options(root), "--start-lr": numbers(), "--end-lr": numbers(),
            "--steps": numbers(), "--method": choices(["steepest", "minimum/10"]),
            "--optimizer": choices(OPTIMIZERS), "--filters": numbers()}
    return st.composite(lambda draw: options(draw, spec) + [
        f"--output={root / draw(st.sampled_from(['existing/picture.png', 'note.txt', 'empty']))}"
    ])()


@settings(max_examples=30, **FAST)
@given(data=st.data())
def test_lr_find_options(sandbox, data):
    check("lr-find", data.draw(lr_find_cases(sandbox)), sandbox)


def tune_cases(root: Path, fresh: bool):
    @st.composite
    def draw_case(draw):
        counts = small_numbers() if fresh else numbers()
        spec = {**_data_options(root), "--tuner": choices(TUNERS), "--max-trials": counts,
                "--epochs": counts, "--time-budget": st.one_of(
                    numbers(), st.sampled_from(["90s", "15m", "1h30m", "0s", "10x", "2d"])),
                "--max-params": numbers(), "--max-macs": numbers(), "--patience": numbers(),
                "--keep-checkpoints": numbers(), "--max-failed-trials": numbers(),
                "--space": st.one_of(paths(root), st.sampled_from(
                    ["{conv_blocks: 1}", "{filters: [4, 8]}", "{conv_blocks: {min: 3, max: 1}}",
                     "{wings: 2}", "[1, 2]", "{", "conv_blocks: x"])),
                "--augmentation": choices(["flip", "translation", "flip,zoom"]),
                "--config": paths(root),
                "--distributed": choices(["chief", "worker"]),
                "--oracle-address": st.sampled_from(["127.0.0.1", "127.0.0.1:70000",
                                                     "nohost:1", "[::1]:8000", ""]),
                "--chief-timeout": numbers(), "--worker-id": choices(["w1", "chief", ""])}
        argv = options(draw, spec)
        if fresh and draw(st.booleans()):
            directory = root / "fresh" / f"tune{sum(TRIED.values())}"
            argv += ["--space={conv_blocks: 1, filters: [2], dense_layers: 0}",
                     "--time-budget=20s"]
        else:
            # an existing folder that is not a search, or a file: refused, untouched
            directory = root if draw(st.booleans()) else root / "note.txt"
            argv += ["--project-name=existing"]
        return argv + [f"--directory={directory}"]
    return draw_case()


@settings(max_examples=50, **FAST)
@given(data=st.data())
def test_tune_options(sandbox, data):
    argv = data.draw(tune_cases(sandbox, fresh=False))
    assume("--overwrite" not in argv)
    code = check("tune", argv, sandbox)
    assert code == 2  # nothing here may start a search in the sandbox's result folder


def _model_or_paths(root: Path):
    return st.one_of(st.just(str(root / "model.keras")), paths(root))


def evaluate_cases(root: Path):
    spec = {**_data_options(root), "--split": choices(SPLITS),
            "--format": choices(["table", "json", "csv"]), "--seed": numbers(),
            "--plots": paths(root, ["existing", "note.txt", "note.txt/inside"])}
    return st.composite(lambda draw: [draw(_model_or_paths(root))] + options(draw, spec))()


@settings(max_examples=15, **FAST)
@given(data=st.data())
def test_evaluate_options(sandbox, data):
    check("evaluate", data.draw(evaluate_cases(sandbox)), sandbox)


def predict_cases(root: Path):
    spec = {"--top-k": numbers(), "--format": choices(["table", "json", "csv"]),
            "--batch-size": numbers()}
    return st.composite(lambda draw: [draw(_model_or_paths(root))]
                        + draw(st.lists(paths(root), min_size=1, max_size=3))
                        + options(draw, spec))()


@settings(max_examples=30, **FAST)
@given(data=st.data())
def test_predict_options(sandbox, data):
    check("predict", data.draw(predict_cases(sandbox)), sandbox)


def export_cases(root: Path, fresh: bool):
    @st.composite
    def draw_case(draw):
        formats = ["keras"] if not fresh else ["keras", "tflite"]
        argv = [draw(_model_or_paths(root))]
        argv += options(draw, {"--format": choices(formats + ["pickle", "onnx2"]),
                               "--tolerance": numbers()})
        target = (str(root / "fresh" / f"m{sum(TRIED.values())}.keras") if fresh
                  and draw(st.booleans()) else
                  str(root / draw(st.sampled_from(["model.keras", "existing", "note.txt/x"]))))
        return argv + [f"--output={target}"]
    return draw_case()


@settings(max_examples=25, **FAST)
@given(data=st.data())
def test_export_options(sandbox, data):
    check("export", data.draw(export_cases(sandbox, fresh=False)), sandbox)


def visualize_cases(root: Path):
    spec = {"--kind": choices(VISUALIZE_KINDS), "--cam-method": choices(CAM_METHODS),
            "--class": numbers(), "--layer": choices(["block1_conv1", "predictions"]),
            "--image": paths(root, ["pets/a/000.png", "broken.png", "note.txt", "missing.png",
                                    "empty"])}
    return st.composite(lambda draw: [draw(_model_or_paths(root))] + options(draw, spec) + [
        f"--output={root / draw(st.sampled_from(['existing/picture.png', 'note.txt', 'x.docx']))}"
    ])()


@settings(max_examples=20, **FAST)
@given(data=st.data())
def test_visualize_options(sandbox, data):
    check("visualize", data.draw(visualize_cases(sandbox)), sandbox)


@settings(max_examples=20, **FAST)
@given(data=st.data())
def test_report_options(sandbox, data):
    argv = [data.draw(paths(sandbox))] + data.draw(st.composite(lambda draw: options(
        draw, {"--top": numbers()}))()) + [
        f"--output={sandbox / data.draw(st.sampled_from(['existing', 'note.txt', 'note.txt/x']))}"]
    check("report", argv, sandbox)


def finetune_cases(root: Path):
    spec = {**_data_options(root), "--backbone": choices(BACKBONES), "--weights": st.one_of(
        st.sampled_from(["imagenet", "none"]), paths(root)), "--epochs": numbers(),
        "--fine-tune-epochs": numbers(), "--unfreeze": st.one_of(numbers(), st.sampled_from(
            ["all", "none", "2 blocks", "3 layers", "sideways"])),
        "--learning-rate": numbers(), "--fine-tune-lr": numbers(), "--dropout": numbers(),
        "--optimizer": choices(OPTIMIZERS)}
    return st.composite(lambda draw: options(draw, spec) + [
        f"--output-dir={root / draw(st.sampled_from(['existing', 'note.txt']))}"])()


@settings(max_examples=25, **FAST)
@given(data=st.data())
def test_finetune_options(sandbox, data):
    argv = data.draw(finetune_cases(sandbox))
    assume(not any(a.startswith("--weights=") and a.endswith("imagenet") for a in argv))
    check("finetune", argv, sandbox)


# ---------------------------------------------------------------------------
# Slow: more cases, and valid ones really run (on tiny data, cheap settings)
# ---------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=600, **SLOW)
@given(data=st.data())
def test_summary_options_many(sandbox, data):
    check("summary", data.draw(summary_cases(sandbox)), sandbox)


@pytest.mark.slow
@settings(max_examples=80, **SLOW)
@given(data=st.data())
def test_train_options_that_may_run(sandbox, data):
    argv = data.draw(train_cases(sandbox, fresh=True))
    assume(_cheap(argv, {"--epochs": 2, "--image-size": 32}))
    check("train", argv, sandbox)


@pytest.mark.slow
@settings(max_examples=10, **SLOW)
@given(data=st.data())
def test_tune_options_that_may_run(sandbox, data):
    argv = data.draw(tune_cases(sandbox, fresh=True))
    assume(_cheap(argv, {"--epochs": 2, "--max-trials": 2, "--image-size": 32}))
    assume(not any(a.startswith(("--distributed=", "--config=")) for a in argv))
    check("tune", argv, sandbox)


@pytest.mark.slow
@settings(max_examples=150, **SLOW)
@given(data=st.data())
def test_model_commands_many(sandbox, data):
    command = data.draw(st.sampled_from(["evaluate", "predict", "export", "visualize"]))
    cases = {"evaluate": evaluate_cases(sandbox), "predict": predict_cases(sandbox),
             "export": export_cases(sandbox, fresh=True),
             "visualize": visualize_cases(sandbox)}[command]
    check(command, data.draw(cases), sandbox)


@pytest.mark.slow
@settings(max_examples=150, **SLOW)
@given(data=st.data())
def test_data_commands_many(sandbox, data):
    source = data.draw(st.one_of(st.none(), paths(sandbox)))
    spec = {k: v for k, v in _data_options(sandbox).items()
            if k not in ("--dataset", "--batch-size")}
    check("datasets", ([source] if source else [])
          + data.draw(st.composite(lambda draw: options(draw, spec))()), sandbox)


# ---------------------------------------------------------------------------
# Huge numbers, every time: random draws reach them rarely (a --seed of 10**12
# and --steps-per-execution of 10**12 were internal errors; --convs-per-block
# of 10**10 ran the machine out of memory)
# ---------------------------------------------------------------------------

HUGE = ["2147483648", "4294967296", "1000000000000"]
TRAIN_NUMBERS = ["--seed", "--steps-per-execution", "--batch-size", "--early-stopping",
                 "--image-size", "--learning-rate", "--weight-decay"]
SUMMARY_NUMBERS = ["--conv-blocks", "--convs-per-block", "--filters", "--kernel-size",
                   "--strides", "--dilation-rate", "--pool-size", "--dense-units",
                   "--num-classes"]


@pytest.mark.slow
@pytest.mark.parametrize("option", TRAIN_NUMBERS)
def test_train_takes_or_refuses_huge_numbers(sandbox, option):
    for value in HUGE:
        check("train", [f"--dataset={sandbox / 'tiny.npz'}", f"{option}={value}",
                        "--conv-blocks=1", "--filters=2", "--dense-units=none", "--epochs=1",
                        f"--output-dir={sandbox / 'fresh' / f'huge{sum(TRIED.values())}'}"],
              sandbox)


@pytest.mark.parametrize("option", SUMMARY_NUMBERS)
def test_summary_takes_or_refuses_huge_numbers(sandbox, option):
    for value in HUGE:
        check("summary", ["--input-shape=12,12,1", "--num-classes=3", "--padding=same",
                          "--pooling=none", f"{option}={value}"], sandbox)
