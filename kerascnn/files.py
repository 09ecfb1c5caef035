"""Files written whole or not at all, and the JSON/YAML kerascnn reads and writes.

Every file a user reads (leaderboard, metrics, manifest, spec, figure) is
written to a temporary file in the same folder and renamed into place, so a
kill at any moment leaves either the old file or the new one, never half of
one. Pure Python: PyYAML is the only import beyond the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from kerascnn.checks import InputError, received


def _umask_mode() -> int:
    """The mode a plain `open()` would give a new file (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`.

    For writers that want a file name (matplotlib's `savefig`, Keras' `save`):
    write to the yielded path and leave the block; on an exception the
    temporary file is removed and `path` is untouched. The temporary name keeps
    `path`'s suffix so writers that dispatch on it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file, fsync, `os.replace`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """`obj` with tuples as lists, paths as strings and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
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
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as YAML (block style, keys in insertion order)."""
    return atomic_write_text(
        path, yaml.safe_dump(jsonable(obj), sort_keys=False, default_flow_style=None))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML (or JSON) file with `yaml.safe_load`; `InputError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Config file not found: {str(path)!r}. {received('path', str(path))}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"Could not parse {str(path)!r} as YAML or JSON: {first}. "
                         f"{received('path', str(path))}") from None
