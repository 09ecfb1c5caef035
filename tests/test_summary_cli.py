import json
import subprocess
import sys
import time

import pytest

from kerascnn.cli import main


def test_vgg16_summary(runner):
    result = runner.invoke(main, ["summary", "--preset", "vgg16", "--input-shape", "224,224,3",
                                  "--num-classes", "1000"])
    assert result.exit_code == 0, result.output
    assert "Total params: 138,357,544" in result.output
    assert "block5_pool" in result.output


def test_json_and_markdown(runner):
    result = runner.invoke(main, ["summary", "--preset", "lenet5", "--format", "json"])
    data = json.loads(result.output)
    assert data["total_params"] == 61_706
    assert data["layers"][0]["name"] == "block1_conv1"
    assert data["layers"][0]["output_shape"] == [28, 28, 6]
    result = runner.invoke(main, ["summary", "--preset", "lenet5", "--format", "markdown"])
    assert result.output.startswith("| layer | kind |")


def test_field_flags_and_per_conv_syntax(runner):
    result = runner.invoke(main, ["summary", "--input-shape", "227,227,3", "--num-classes", "1000",
                                  "--preset", "alexnet", "--filters", "96,256,(384,384,256)",
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_params"] == 62_378_344
    result = runner.invoke(main, ["summary", "--conv-blocks", "3", "--filters", "8,16,32",
                                  "--dense-units", "none", "--head", "gap", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["spec"]["dense_units"] == []


def test_config_file_and_check_keras(runner, tmp_path):
    from kerascnn.presets import get_preset

    path = get_preset("simple").replace(conv_blocks=3, filters=(8, 16, 32)).save(
        tmp_path / "spec.yaml")
    result = runner.invoke(main, ["summary", "--config", str(path), "--check-keras"])
    assert result.exit_code == 0, result.output
    assert "block3_pool" in result.output
    assert "agree" in result.output


@pytest.mark.parametrize("args,match", [
    (["--preset", "vgg16", "--input-shape", "16,16,3"], "too small"),
    (["--input-shape", "28,x,1"], "--input-shape"),
    (["--input-shape", "28"], "expected 2 or 3 or 4 integers"),
    (["--input-shape", "0,28,1"], "must be >= 1"),
    (["--preset", "vgg61"], "Did you mean 'vgg16'"),
    (["--padding", "full"], "Unknown padding"),
    (["--pooling", "median"], "Unknown pooling"),
    (["--filters", "32,64,128"], "length must equal conv_blocks=2"),
    (["--num-classes", "1"], "--num-classes"),
    (["--conv-blocks", "0"], "--conv-blocks"),
    (["--dropout", "1.5"], "dropout must be in"),
    (["--format", "xml"], "--format"),
    (["--config", "/nonexistent/spec.yaml"], "not found"),
    (["--preset", "simple", "--config", "x.yaml"], "not both"),
    (["--filters", "[32"], "--filters"),
])
def test_bad_input_one_line_exit_2(runner, args, match):
    result = runner.invoke(main, ["summary", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert match in lines[0]
    assert "Traceback" not in result.output


def test_unknown_yaml_key_in_config(runner, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("input_shape: [28, 28, 1]\nnum_classes: 10\nconv_blockz: 3\n")
    result = runner.invoke(main, ["summary", "--config", str(path)])
    assert result.exit_code == 2
    assert "conv_blockz" in result.output


def test_help_and_summary_never_import_tensorflow():
    code = ("import sys; from kerascnn.cli import main\n"
            "try:\n    main(['summary', '--preset', 'vgg16'])\nexcept SystemExit: pass\n"
            "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "assert 'keras' not in sys.modules, 'keras imported'\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert time.perf_counter() - start < 20  # a guard against hangs, not a benchmark


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "kerascnn", "summary", "--preset", "lenet5"],
                         check=True, capture_output=True, text=True).stdout
    assert "Total params: 61,706" in out
