"""The import layout of issue 13: no cycles, two light doors, imports at the top.

- No import cycle among kerascnn's modules (read from the code with `ast`), and
  every module imports on its own, as the first kerascnn module of a process.
- `kerascnn --help`, `kerascnn summary`, `kerascnn datasets` and
  `import kerascnn; kerascnn.analyze(...)` import no TensorFlow, Keras,
  keras-tuner or matplotlib; nor does importing a pure module.
- No kerascnn module imports another kerascnn module inside a function, except
  the command functions of `kerascnn.cli` (the lazy commands) and the package's
  lazy exports (`importlib`, not an import statement); no `except ImportError`
  around a kerascnn module; no class factory (a function that imports and
  defines a class).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kerascnn

ROOT = Path(kerascnn.__file__).resolve().parent
REPO = ROOT.parent
HEAVY = ("tensorflow", "keras", "keras_tuner", "matplotlib")
# modules that import nothing heavy (issue 13's first door)
PURE = ("kerascnn", "kerascnn.checks", "kerascnn.files", "kerascnn.runtime", "kerascnn.spec",
        "kerascnn.analysis", "kerascnn.presets", "kerascnn.augment", "kerascnn.search_space",
        "kerascnn.distributed", "kerascnn.data.builtin", "kerascnn.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str | None, level: int, importer: str) -> str:
    """The absolute name of `from <level dots><module> import ...` in `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imported(node: ast.AST, importer: str) -> list[str]:
    """The kerascnn modules an import statement loads."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(node.module, node.level, importer)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in MODULES else base)
    return [n for n in names if n in MODULES]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module, importer: str) -> set[str]:
    """Imports that run when the module is imported (module body, class bodies,
    `if`/`try` blocks; not function bodies, not `if TYPE_CHECKING:`)."""
    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(_imported(node, importer))
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    found.discard(importer)
    return found


TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}
GRAPH = {name: _top_level_imports(tree, name) for name, tree in TREES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("import kerascnn.spec\nfrom kerascnn import runtime, __version__\n"
                     "from . import checks\nfrom .spec import CNNSpec\n"
                     "if TYPE_CHECKING:\n    import kerascnn.runs\n"
                     "def f():\n    import kerascnn.training\n")
    assert _top_level_imports(tree, "kerascnn.analysis") == {
        "kerascnn.spec", "kerascnn.runtime", "kerascnn", "kerascnn.checks"}


def test_no_import_cycle_among_kerascnn_modules():
    assert len(MODULES) > 30
    cycles = _cycles(GRAPH)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _command_functions(tree: ast.Module) -> set[ast.AST]:
    """Functions decorated as click commands (the CLI's lazy bodies)."""
    def is_command(decorator: ast.AST) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        return name in ("command", "group")

    return {node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(is_command(d) for d in node.decorator_list)}


def _function_level_problems(name: str, tree: ast.Module) -> list[str]:
    problems = []
    allowed = _command_functions(tree) if name.startswith("kerascnn.cli") else set()
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if function in allowed:
            continue
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                inner = _imported(node, name)
                if inner:
                    problems.append(f"{name}:{node.lineno} {function.name}() imports "
                                    f"{', '.join(inner)}")
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(function)):
            for node in ast.walk(function):
                if isinstance(node, ast.ClassDef):  # a class factory deferring an import
                    problems.append(f"{name}:{node.lineno} {function.name}() imports and "
                                    f"defines class {node.name}")
    return problems


def _import_error_hedges(name: str, tree: ast.Module) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            catches.update(getattr(t, "id", getattr(t, "attr", "")) for t in types if t)
        if not catches & {"ImportError", "ModuleNotFoundError"}:
            continue
        for inner in node.body:
            for sub in ast.walk(inner):
                if isinstance(sub, (ast.Import, ast.ImportFrom)) and _imported(sub, name):
                    problems.append(f"{name}:{sub.lineno} except ImportError around "
                                    f"{', '.join(_imported(sub, name))}")
    return problems


def test_the_function_level_checks_see_what_they_should():
    code = ("import click\n"
            "def helper():\n    from kerascnn.training import train\n"
            "def factory():\n    import keras\n    class Late(keras.Model):\n        pass\n"
            "def plain():\n    class Handler:\n        pass\n"
            "@click.command()\ndef body():\n    from kerascnn.training import train\n"
            "try:\n    import kerascnn.runs\nexcept ImportError:\n    pass\n")
    tree = ast.parse(code)
    problems = _function_level_problems("kerascnn.cli.x", tree)
    assert any("helper() imports kerascnn.training" in p for p in problems), problems
    assert any("factory() imports and defines class Late" in p for p in problems), problems
    assert not any("plain()" in p for p in problems), problems
    assert not any("body()" in p for p in problems), problems
    assert len(_import_error_hedges("kerascnn.cli.x", tree)) == 1
    # outside the CLI, a command decorator does not excuse anything
    assert any("body()" in p for p in _function_level_problems("kerascnn.runs", tree))


def test_imports_are_at_the_top():
    problems = []
    for name, tree in TREES.items():
        problems += _function_level_problems(name, tree)
        problems += _import_error_hedges(name, tree)
    assert problems == [], "\n".join(problems)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.fixture(scope="module")
def imported_alone() -> dict:
    """Import each module as the first kerascnn module of a process (one process,
    kerascnn's modules dropped from `sys.modules` between imports), then every
    public name; report what failed."""
    code = ("import importlib, json, sys, traceback\n"
            "failed = {}\n"
            "for name in sys.argv[1:]:\n"
            "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'kerascnn']:\n"
            "        del sys.modules[loaded]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as e:\n"
            "        failed[name] = traceback.format_exc(limit=-3)\n"
            "import kerascnn\n"
            "missing = [n for n in kerascnn.__all__ if not hasattr(kerascnn, n)]\n"
            "print(json.dumps({'modules': failed, 'public': missing,\n"
            "                  'input_error': issubclass(kerascnn.InputError, ValueError)}))\n")
    modules = sorted(n for n in MODULES if n != "kerascnn.__main__")
    proc = _run(code, *modules)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_on_its_own(imported_alone):
    """A cycle that only some import orders trip over fails here."""
    failed = imported_alone["modules"]
    assert failed == {}, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_every_public_name_resolves(imported_alone):
    """Each lazy export of `kerascnn.__all__` is there (a renamed or moved name fails here)."""
    assert imported_alone["public"] == []
    assert imported_alone["input_error"]


LIGHT_CHECK = ("import sys\n"
               "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
               "print('HEAVY', heavy)\n"
               "assert not heavy, heavy\n")


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["summary", "--preset", "vgg16", "--input-shape", "224,224,3", "--num-classes", "1000"],
    ["summary", "--preset", "lenet5", "--format", "json"],
    ["datasets"],
    ["train", "--help"],
    ["tune", "--help"],
], ids=lambda a: " ".join(a[:2]))
def test_the_light_commands_import_nothing_heavy(argv):
    code = ("import sys\nfrom kerascnn.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            + LIGHT_CHECK.format(heavy=HEAVY))
    proc = _run(code, *argv)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_import_kerascnn_and_analyze_import_nothing_heavy():
    code = ("import kerascnn\n"
            "a = kerascnn.analyze(kerascnn.get_preset('vgg16'))\n"
            "assert a.total_params > 0\n"
            "s = kerascnn.CNNSpec(input_shape=(28, 28, 1), num_classes=10)\n"
            "assert kerascnn.is_valid(s)\n"
            "try:\n    kerascnn.analyze(s.replace(conv_blocks=9))\n"
            "except kerascnn.InputError:\n    pass\n"
            "else:\n    raise AssertionError('9 blocks on 28x28 accepted')\n"
            + LIGHT_CHECK.format(heavy=HEAVY))
    proc = _run(code)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_nothing_heavy(module):
    proc = _run(f"import {module}\n" + LIGHT_CHECK.format(heavy=HEAVY))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

