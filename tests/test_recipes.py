"""The recipes: keras.io-style structure (fast) and a tiny run of each (slow)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
NAMES = ["finetune_mobilenet_v2", "finetune_vgg16", "finetune_resnet50",
         "pretrain_then_finetune"]
ALLOWED_IMPORTS = {"argparse", "os", "pathlib", "keras", "numpy", "kerascnn"}


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_recipe_reads_like_a_keras_io_example(name):
    source = (RECIPES / f"{name}.py").read_text()
    tree = ast.parse(source)
    header = ast.get_docstring(tree, clean=False)
    assert header and header.lstrip().startswith("Title:") and "Description:" in header
    sections = [node.value.value for node in tree.body
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.value.value.strip().startswith("##")]
    assert any("## Introduction" in s for s in sections) and len(sections) >= 5
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS
    assert f"`{name}.py`" in (RECIPES / "README.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_recipe_uses_only_the_public_api(name):
    """`from kerascnn import X` and `kerascnn.X` only, with every X in `kerascnn.__all__`."""
    import kerascnn

    tree = ast.parse((RECIPES / f"{name}.py").read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "kerascnn":
            assert node.module == "kerascnn", f"imports the private module {node.module}"
            used |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            assert all(a.name == "kerascnn" or not a.name.startswith("kerascnn.")
                       for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "kerascnn":
            used.add(node.attr)
    assert used, "the recipe uses no kerascnn name"
    assert used <= set(kerascnn.__all__), used - set(kerascnn.__all__)
    for public in used:
        assert getattr(kerascnn, public) is not None


@pytest.fixture
def ten_class_npz(tmp_path):
    """30 training and 10 test images per class, 28x28 gray, class = a bright row band."""
    rng = np.random.default_rng(0)

    def make(per_class):
        y = np.repeat(np.arange(10), per_class)
        x = rng.integers(0, 40, (len(y), 28, 28, 1)).astype("uint8")
        for c in range(10):
            x[y == c, 2 * c + 4: 2 * c + 7] = 220
        return x, y

    x_train, y_train = make(30)
    x_test, y_test = make(10)
    path = tmp_path / "ten.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["finetune_mobilenet_v2", "finetune_vgg16",
                                  "finetune_resnet50"])
def test_finetune_recipe_runs_tiny(name, ten_class_npz, tmp_path):
    recipe = load_recipe(name)
    output = tmp_path / "model.keras"
    accuracy = recipe.main([str(ten_class_npz), "--weights", "none", "--image-size", "32",
                            "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "32",
                            "--output", str(output)])
    assert 0.0 <= accuracy <= 1.0
    import kerascnn

    model = kerascnn.load_model(output)
    assert model.input_shape == (None, 28, 28, 1)
    assert len(model.kerascnn_metadata["class_names"]) == 10


@pytest.mark.slow
def test_pretrain_then_finetune_runs_tiny(ten_class_npz):
    recipe = load_recipe("pretrain_then_finetune")
    result = recipe.main([str(ten_class_npz), "--per-class", "5", "--pretrain-epochs", "2",
                          "--epochs", "1", "--fine-tune-epochs", "1"])
    assert set(result) == {"scratch", "transfer"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
