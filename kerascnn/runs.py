"""Run folders: the one writer and the one reader of what a run leaves behind.

A run folder (written by `train`, `finetune`, and by `tune` for its best
model) holds:

    spec.yaml      the `CNNSpec` that was trained (always a CNNSpec)
    backbone.yaml  fine-tuning runs only: the pretrained backbone and head
    config.yaml    every resolved option
    history.csv    one row per epoch, rewritten atomically after each epoch
    model.keras    the model, with class names and spec inside the archive
    metrics.json   test figures and the best epoch
    manifest.json  versions, seed, dataset fingerprint, thread settings, command line

`RunWriter` writes these files (each one atomically, through
`kerascnn.files`), `read_run` reads them back, `find_run` and `find_search`
locate a run or a search folder from what a user typed.

`atomic_write_text`, `write_json`, `write_yaml`, `read_json` and `read_yaml`
are `kerascnn.files`'s, re-exported here for code that imported them from
`kerascnn.runs`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
import os
import platform
import shutil
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import keras

import kerascnn
from kerascnn import runtime
from kerascnn.batchnorm import fuse_batch_norm
from kerascnn.checks import InputError, received
from kerascnn.files import (atomic_path, atomic_write_bytes, atomic_write_text, jsonable,
                            read_json, read_yaml, write_json, write_yaml)
from kerascnn.spec import CNNSpec

__all__ = [
    "MODEL_METADATA_ENTRY", "RUN_FILES", "BACKBONE_FILE", "CHECKPOINT_DIR", "LEADERBOARD",
    "Run", "RunWriter", "read_run", "find_run", "find_spec_file", "find_search",
    "history_to_csv", "write_history", "read_history", "read_history_csv",
    "package_versions", "manifest", "prepare_output_dir",
    "save_model", "read_model_metadata", "check_model_path", "load_model",
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "write_json", "write_yaml",
    "read_json", "read_yaml",
]

logger = logging.getLogger(__name__)

MODEL_METADATA_ENTRY = "kerascnn.json"
SPEC_FILE = "spec.yaml"
BACKBONE_FILE = "backbone.yaml"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
RUN_FILES = (SPEC_FILE, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, METRICS_FILE, MANIFEST_FILE)
CHECKPOINT_DIR = "checkpoints"
LEADERBOARD = "leaderboard.json"


# ---------------------------------------------------------------------------
# history.csv
# ---------------------------------------------------------------------------


def history_to_csv(rows: Sequence[dict]) -> str:
    """CSV text of history rows; the columns are every key, in order of appearance."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_history(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Atomically write history rows as `history.csv`."""
    return atomic_write_text(path, history_to_csv(rows))


def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a `history.csv`: `epoch` as int, numbers as float, other text kept.

    Empty cells (a column that only some rows have) are left out of the row.
    """
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                if key == "epoch":
                    parsed[key] = int(value)
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:  # e.g. a fine-tuning run's `phase`
                    parsed[key] = value
            rows.append(parsed)
    return rows


read_history_csv = read_history


# ---------------------------------------------------------------------------
# Manifest and output folders
# ---------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages a result depends on."""
    versions: dict[str, str | None] = {"python": platform.python_version(),
                                       "kerascnn": kerascnn.__version__}
    for dist in ("tensorflow", "keras", "keras-tuner", "tensorflow-datasets", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def manifest(
    *, seed: int | None = None, dataset_fingerprint: str | None = None,
    command_line: Sequence[str] | None = None, **extra: Any,
) -> dict[str, Any]:
    """The provenance record written as `manifest.json` next to every result.

    Args:
        seed: int. The run's seed.
        dataset_fingerprint: str. `DatasetBundle.fingerprint`.
        command_line: list of str. Defaults to `sys.argv`.
        **extra: more fields (kind, status, seconds, ...).

    Returns:
        A dict with `created`, `versions`, `platform`, `runtime` (the CPU
        thread settings `kerascnn.runtime.start()` applied), `seed`,
        `dataset_fingerprint`, `command_line` and `extra`.
    """
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "platform": platform.platform(),
        "runtime": runtime.settings(),
        "seed": seed,
        "dataset_fingerprint": dataset_fingerprint,
        "command_line": list(command_line) if command_line is not None else list(sys.argv),
        **extra,
    }


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse to reuse a non-empty output folder unless `overwrite`.

    Nothing is created here; callers create the folder once their inputs are
    validated, so a failed load never leaves an empty run folder behind.

    Raises:
        InputError: the path is a file, or a folder with results and no `overwrite`,
            or it cannot be made (a file where a parent folder should be).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"Output path exists and is not a folder. Choose another "
                         f"--output-dir. {received('output_dir', str(path))}")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and parent is not None and not parent.is_dir():
        raise InputError(f"Output folder cannot be made: {str(parent)!r} is a file. Choose "
                         f"another --output-dir. {received('output_dir', str(path))}")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(f"Output folder {str(path)!r} already holds results; pass "
                         f"--overwrite to replace them or choose another --output-dir. "
                         f"{received('output_dir', str(path))}")
    return path


# ---------------------------------------------------------------------------
# Models with metadata
# ---------------------------------------------------------------------------


def save_model(model: keras.Model, path: str | os.PathLike, *,
               class_names: Sequence[str] | None = None, spec=None, **metadata: Any) -> Path:
    """Save a Keras model as `.keras` with kerascnn metadata inside the archive.

    The metadata (class names, spec, anything in `metadata`) is stored as an
    extra `kerascnn.json` entry of the `.keras` zip, so it travels with the file;
    Keras ignores the entry when loading. The file is written atomically.

    Raises:
        InputError: `path` does not end in `.keras`.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"Model files end in '.keras'. {received('path', str(path))}")
    info = dict(metadata)
    if class_names is not None:
        info["class_names"] = [str(c) for c in class_names]
    if spec is not None:
        info["spec"] = spec.to_dict() if isinstance(spec, CNNSpec) else spec
    info.setdefault("kerascnn_version", kerascnn.__version__)
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(MODEL_METADATA_ENTRY, json.dumps(jsonable(info), indent=2))
    return path


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The kerascnn metadata stored in a `.keras` file ({} if there is none)."""
    try:
        with zipfile.ZipFile(Path(path)) as zf:
            if MODEL_METADATA_ENTRY not in zf.namelist():
                return {}
            return json.loads(zf.read(MODEL_METADATA_ENTRY))
    except zipfile.BadZipFile:
        return {}


def check_model_path(path: str | os.PathLike) -> Path:
    """The `.keras` file that `path` names: the file, or a run or tune folder's model.

    Raises:
        InputError: no such file, a folder without a model, or not a `.keras` archive.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model file not found. {received('model', str(path))}")
    if path.is_dir():
        for candidate in (path / MODEL_FILE, path / "best" / MODEL_FILE):
            if candidate.is_file():
                return candidate
        raise InputError(f"Folder holds no model.keras (a run folder or a tune result is "
                         f"expected). {received('model', str(path))}")
    if not zipfile.is_zipfile(path):
        raise InputError(f"Not a Keras model file (expected a '.keras' archive). "
                         f"{received('model', str(path))}")
    with zipfile.ZipFile(path) as zf:
        if "config.json" not in zf.namelist():
            raise InputError(f"Not a Keras model file (no config.json in the archive). "
                             f"{received('model', str(path))}")
    return path


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """Load a `.keras` model in Keras safe mode (a model file cannot run code).

    Args:
        path: str. A `.keras` file, a run folder with `model.keras`, or a
            tune folder with `best/model.keras`.
        compile: bool. Whether to restore the training configuration.
            Defaults to `True`.

    Returns:
        The `keras.Model`. Its kerascnn metadata (class names, spec) is
        available as `model.kerascnn_metadata`. Its batch norm layers train
        on TensorFlow's fused kernel (`kerascnn.batchnorm`).

    Raises:
        InputError: the file does not exist or is not a Keras model.
    """
    path = check_model_path(path)
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - anything Keras raises is a bad file here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"Could not load {str(path)!r} as a Keras model: {first}. "
                         f"{received('model', str(path))}") from None
    fuse_batch_norm(model)  # training it again is as fast as the first time
    try:
        model.kerascnn_metadata = read_model_metadata(path)
    except AttributeError:
        pass
    return model


# ---------------------------------------------------------------------------
# Writing a run folder
# ---------------------------------------------------------------------------


class RunWriter:
    """Writes the files of one run folder, each atomically; remembers what it wrote.

    The folder is created by the first write, so a run refused before it
    writes anything leaves no folder behind.

    Args:
        path: str or Path. The run folder.

    Example:

    >>> run = RunWriter("runs/a")
    >>> run.write_spec(spec); run.write_config({"epochs": 3})
    >>> run.write_history(rows)                     # after every epoch
    >>> run.write_model(model, class_names=names, spec=spec)
    >>> run.write_metrics({"test_accuracy": 0.9}); run.write_manifest(seed=0, kind="train")
    >>> run.paths                                   # file name -> path written
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.paths: dict[str, Path] = {}

    @property
    def checkpoint_dir(self) -> Path:
        """`checkpoints/`: training state while the run is unfinished."""
        return self.path / CHECKPOINT_DIR

    def _record(self, name: str, path: Path) -> Path:
        self.paths[name] = path
        return path

    def write_spec(self, spec: CNNSpec) -> Path:
        """`spec.yaml`: the `CNNSpec` (`CNNSpec.load` reads it back)."""
        return self._record(SPEC_FILE, spec.save(self.path / SPEC_FILE))

    def write_backbone(self, backbone: dict[str, Any]) -> Path:
        """`backbone.yaml`: a fine-tuned network (backbone, weights, head)."""
        return self._record(BACKBONE_FILE, write_yaml(self.path / BACKBONE_FILE, backbone))

    def write_config(self, config: dict[str, Any]) -> Path:
        """`config.yaml`: every resolved option."""
        return self._record(CONFIG_FILE, write_yaml(self.path / CONFIG_FILE, config))

    def write_history(self, rows: Sequence[dict]) -> Path:
        """`history.csv`: one row per epoch."""
        return self._record(HISTORY_FILE, write_history(self.path / HISTORY_FILE, rows))

    def write_model(self, model: keras.Model, *, class_names: Sequence[str] | None = None,
                    spec=None, **metadata: Any) -> Path:
        """`model.keras` with class names, spec and `metadata` inside (see `save_model`)."""
        return self._record(MODEL_FILE, save_model(model, self.path / MODEL_FILE,
                                                   class_names=class_names, spec=spec,
                                                   **metadata))

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """`metrics.json`."""
        return self._record(METRICS_FILE, write_json(self.path / METRICS_FILE, metrics))

    def write_manifest(self, **fields: Any) -> Path:
        """`manifest.json`: `manifest(**fields)`."""
        return self._record(MANIFEST_FILE, write_json(self.path / MANIFEST_FILE,
                                                      manifest(**fields)))

    def remove_run_files(self, extra: Sequence[str] = ()) -> None:
        """Delete the run files (and `extra` names) a previous run left; nothing else."""
        for name in (*RUN_FILES, BACKBONE_FILE, CHECKPOINT_DIR, *extra):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


# ---------------------------------------------------------------------------
# Reading a run folder
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """A run folder as read back by `read_run`.

    Attributes:
        path: Path. The folder.
        spec: `CNNSpec` or None (fine-tuning runs have `backbone` instead).
        backbone: dict or None. `backbone.yaml` of a fine-tuning run.
        config: dict. `config.yaml` ({} if absent).
        history: list of dict. `history.csv` rows ([] if absent).
        metrics: dict. `metrics.json` ({} if absent, e.g. an unfinished run).
        manifest: dict. `manifest.json` ({} if absent).
    """

    path: Path
    spec: CNNSpec | None
    backbone: dict[str, Any] | None
    config: dict[str, Any]
    history: list[dict]
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def finished(self) -> bool:
        """Whether training ended (metrics written, no checkpoints left)."""
        return bool(self.metrics) and not (self.path / CHECKPOINT_DIR).is_dir()

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def load_model(self, *, compile: bool = True) -> keras.Model:
        """The run's `model.keras` (see `load_model`)."""
        return load_model(self.model_path, compile=compile)


def _read_optional(path: Path, reader) -> Any:
    return reader(path) if path.is_file() else None


def read_run(path: str | os.PathLike) -> Run:
    """Read a run folder written by `train`, `finetune` or `tune` (its `best/`).

    Args:
        path: str. The run folder, or a folder `find_run` resolves to one.

    Returns:
        A `Run`.

    Raises:
        InputError: no run folder there.
    """
    folder = find_run(path)
    spec_path = folder / SPEC_FILE
    return Run(
        path=folder,
        spec=CNNSpec.load(spec_path) if spec_path.is_file() else None,
        backbone=_read_optional(folder / BACKBONE_FILE, read_yaml),
        config=_read_optional(folder / CONFIG_FILE, read_yaml) or {},
        history=_read_optional(folder / HISTORY_FILE, read_history) or [],
        metrics=_read_optional(folder / METRICS_FILE, read_json) or {},
        manifest=_read_optional(folder / MANIFEST_FILE, read_json) or {},
    )


def _is_run(folder: Path) -> bool:
    return (folder / SPEC_FILE).is_file() or (folder / BACKBONE_FILE).is_file()


def find_run(directory: str | os.PathLike, *, name: str = "directory") -> Path:
    """The run folder a user means: `DIR`, a tune result's `DIR/best`, or `DIR/<project>/best`.

    Args:
        directory: str. A run folder, a tune project folder, or the tune
            `--directory` above a single project.
        name: str. How the argument is called in error messages (the CLI
            passes `"--from"`). Defaults to `"directory"`.

    Returns:
        The folder that holds `spec.yaml` (or a fine-tuning run's `backbone.yaml`).

    Raises:
        InputError: not a folder, no run in it, or several tune results to choose from.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{name} needs a run folder or a tune result folder. "
                         f"{received(name, str(directory))}")
    for candidate in (root, root / "best"):
        if _is_run(candidate):
            return candidate
    found = sorted(c.parent for c in root.glob(f"*/best/{SPEC_FILE}"))
    if len(found) > 1:
        raise InputError(f"{name} {str(directory)!r} holds several tune results "
                         f"({', '.join(str(c.parent) for c in found)}); name one. "
                         f"{received(name, str(directory))}")
    if not found:
        raise InputError(f"No spec.yaml in {str(directory)!r} (looked for spec.yaml, "
                         f"best/spec.yaml and */best/spec.yaml). "
                         f"{received(name, str(directory))}")
    return found[0]


def find_spec_file(directory: str | os.PathLike, *, name: str = "directory") -> Path:
    """The `spec.yaml` of the run folder `find_run` finds.

    Raises:
        InputError: as `find_run`, or a fine-tuning run (it has no `CNNSpec`).
    """
    folder = find_run(directory, name=name)
    spec = folder / SPEC_FILE
    if not spec.is_file():
        raise InputError(f"{str(folder)!r} is a fine-tuning run (backbone.yaml): it has no "
                         f"spec.yaml to train again; use `kerascnn finetune`. "
                         f"{received(name, str(directory))}")
    return spec


def _not_a_search(path: Path, why: str) -> InputError:
    return InputError(f"Not a search folder: {why}. Give the folder `kerascnn tune` wrote "
                      f"(<directory>/<project-name>, holding {LEADERBOARD}). "
                      f"{received('search_dir', str(path))}")


def find_search(search_dir: str | os.PathLike) -> Path:
    """The search (tune project) folder holding `leaderboard.json`.

    Args:
        search_dir: str. The project folder itself, or the `--directory`
            above it when it holds a single project.

    Returns:
        The project folder.

    Raises:
        InputError: no such folder, no search in it, or several to choose from.
    """
    path = Path(search_dir)
    if not path.is_dir():
        raise _not_a_search(path, "no such folder")
    if (path / LEADERBOARD).is_file():
        return path
    projects = sorted(p for p in path.iterdir() if (p / LEADERBOARD).is_file())
    if len(projects) == 1:
        return projects[0]
    if len(projects) > 1:
        raise InputError(f"The folder holds several searches; name one of them: "
                         f"{', '.join(p.name for p in projects)}. "
                         f"{received('search_dir', str(path))}")
    raise _not_a_search(path, f"no {LEADERBOARD} in it or in a project folder below it")
