"""Run folders: atomic files, manifests, and models that carry their class names.

Every file a user reads (leaderboard, metrics, manifest, spec) is written to a
temporary file in the same folder and renamed into place, so a kill at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

MODEL_METADATA_ENTRY = "kerascnn.json"


def _umask_mode() -> int:
    """The mode a plain `open()` would give a new file (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (temporary file + `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as YAML (block style, keys in insertion order)."""
    import yaml

    return atomic_write_text(
        path, yaml.safe_dump(_jsonable(obj), sort_keys=False, default_flow_style=None)
    )


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file with `yaml.safe_load`; a clear ValueError if it is not YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Config file not found: {str(path)!r}. Received: path={str(path)!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"Could not parse {str(path)!r} as YAML or JSON: {first}. Received: path={str(path)!r}"
        ) from None


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on (no TensorFlow import)."""
    from importlib import metadata

    import kerascnn

    versions = {"python": platform.python_version(), "kerascnn": kerascnn.__version__}
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
    """The provenance record written as `manifest.json` next to every result."""
    import datetime

    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "platform": platform.platform(),
        "seed": seed,
        "dataset_fingerprint": dataset_fingerprint,
        "command_line": list(command_line) if command_line is not None else list(sys.argv),
        **extra,
    }


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse to reuse a non-empty output folder unless `overwrite`.

    Nothing is created here; callers create the folder once their inputs are
    validated, so a failed load never leaves an empty run folder behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"Output path exists and is not a folder. Choose another --output-dir. "
            f"Received: output_dir={str(path)!r}"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ValueError(
            f"Output folder {str(path)!r} already holds results; pass --overwrite to replace "
            f"them or choose another --output-dir. Received: output_dir={str(path)!r}"
        )
    return path


# ---------------------------------------------------------------------------
# Models with metadata
# ---------------------------------------------------------------------------


def save_model(model, path: str | os.PathLike, *, class_names: Sequence[str] | None = None,
               spec=None, **metadata: Any) -> Path:
    """Save a Keras model as `.keras` with kerascnn metadata inside the archive.

    The metadata (class names, spec, anything in `metadata`) is stored as an
    extra `kerascnn.json` entry of the `.keras` zip, so it travels with the file;
    Keras ignores the entry when loading. The file is written atomically.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Model files end in '.keras'. Received: path={str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        info = dict(metadata)
        if class_names is not None:
            info["class_names"] = [str(c) for c in class_names]
        if spec is not None:
            info["spec"] = spec.to_dict() if hasattr(spec, "to_dict") else spec
        import kerascnn

        info.setdefault("kerascnn_version", kerascnn.__version__)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(MODEL_METADATA_ENTRY, json.dumps(_jsonable(info), indent=2))
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The kerascnn metadata stored in a `.keras` file ({} if there is none)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if MODEL_METADATA_ENTRY not in zf.namelist():
                return {}
            return json.loads(zf.read(MODEL_METADATA_ENTRY))
    except zipfile.BadZipFile:
        return {}


def check_model_path(path: str | os.PathLike) -> Path:
    """Validate that `path` names a readable `.keras` model file (no TF import)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Model file not found. Received: model={str(path)!r}")
    if path.is_dir():
        candidate = path / "model.keras"
        if candidate.is_file():
            return candidate
        candidate = path / "best" / "model.keras"
        if candidate.is_file():
            return candidate
        raise ValueError(
            f"Folder holds no model.keras (a run folder or a tune result is expected). "
            f"Received: model={str(path)!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Not a Keras model file (expected a '.keras' archive). Received: model={str(path)!r}"
        )
    with zipfile.ZipFile(path) as zf:
        if "config.json" not in zf.namelist():
            raise ValueError(
                f"Not a Keras model file (no config.json in the archive). "
                f"Received: model={str(path)!r}"
            )
    return path


def load_model(path: str | os.PathLike, *, compile: bool = True):
    """Load a `.keras` model in Keras safe mode (a model file cannot run code).

    Args:
        path: str. A `.keras` file, a run folder with `model.keras`, or a
            tune folder with `best/model.keras`.
        compile: bool. Whether to restore the training configuration.
            Defaults to `True`.

    Returns:
        The `keras.Model`. Its kerascnn metadata (class names, spec) is
        available as `model.kerascnn_metadata`.

    Raises:
        ValueError: the file does not exist or is not a Keras model.
    """
    path = check_model_path(path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - anything Keras raises is a bad file here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"Could not load {str(path)!r} as a Keras model: {first}. "
                         f"Received: model={str(path)!r}") from None
    try:
        model.kerascnn_metadata = read_model_metadata(path)
    except AttributeError:
        pass
    return model
