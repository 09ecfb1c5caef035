"""The built-in datasets: where each is read from, and whether it is here now.

* ``fashion_mnist_sample``: a stratified subset of Fashion-MNIST shipped with the
  package (6,000 training and 1,000 test images, 28x28x1; see
  ``scripts/make_fashion_mnist_sample.py`` and ``LICENSE.fashion-mnist``).
* ``fashion_mnist`` and ``mnist``: the full datasets, from the original idx
  ``.gz`` files, searched in this order:

  1. ``data_dir`` (``--data-dir``), in ``<data_dir>/<name>/`` then ``<data_dir>/``;
  2. ``$KERASCNN_DATA_DIR``, the same way;
  3. the system folder of the Debian/Ubuntu package (``apt install
     dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``);
  4. a prepared tensorflow-datasets copy (``data_dir``, then TFDS's own
     default folder);
  5. a download into ``<data_dir or $KERASCNN_DATA_DIR or ~/.keras/datasets>/<name>/``,
     only when ``download=True``.

Pure: this module reads the file system only (no TensorFlow, no
tensorflow-datasets), so `kerascnn datasets` lists the built-ins in a blink;
the loaders are in `kerascnn.data.sources`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerascnn.checks import InputError, received

ENV_DATA_DIR = "KERASCNN_DATA_DIR"
SAMPLE_PATH = Path(__file__).with_name("fashion_mnist_sample.npz")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
_VERSION = re.compile(r"\d+\.\d+\.\d+")

# array name -> idx file name (the names both datasets use)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class Builtin:
    """What kerascnn knows about a built-in dataset."""

    name: str
    description: str
    class_names: tuple[str, ...]
    num_train: int
    num_test: int
    input_shape: tuple[int, ...]
    system_dirs: tuple[str, ...] = ()
    tfds_name: str | None = None
    url: str | None = None
    md5: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


BUILTINS: dict[str, Builtin] = {
    "fashion_mnist_sample": Builtin(
        "fashion_mnist_sample",
        "Stratified subset of Fashion-MNIST shipped with kerascnn (MIT, Zalando Research)",
        FASHION_MNIST_CLASSES, 6000, 1000, (28, 28, 1)),
    "fashion_mnist": Builtin(
        "fashion_mnist", "Fashion-MNIST, Zalando's article images (MIT)",
        FASHION_MNIST_CLASSES, 60000, 10000, (28, 28, 1),
        system_dirs=("/usr/share/datasets/fashion-mnist",), tfds_name="fashion_mnist",
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5=(("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
             ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
             ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
             ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"))),
    "mnist": Builtin(
        "mnist", "MNIST handwritten digits (LeCun, Cortes and Burges)",
        MNIST_CLASSES, 60000, 10000, (28, 28, 1),
        system_dirs=("/usr/share/datasets/mnist",), tfds_name="mnist",
        url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        md5=(("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
             ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
             ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"))),
}


@dataclass(frozen=True)
class Location:
    """Where a built-in dataset would be read from on this machine."""

    kind: str  # "package", "idx", "tfds", "download" or "missing"
    path: str
    available: bool  # readable offline now

    def describe(self) -> str:
        if self.kind == "download":
            return f"download from {self.path} (needs --download)"
        if self.kind == "missing":
            return self.path
        return f"{self.kind}: {self.path}"


def _idx_dir(folder: Path) -> Path | None:
    """`folder` if it holds the four idx files (gzip-compressed or not)."""
    for name in IDX_FILES.values():
        if not (folder / name).is_file() and not (folder / name[:-3]).is_file():
            return None
    return folder


def idx_file(folder: Path, name: str) -> Path:
    path = folder / name
    return path if path.is_file() else folder / name[:-3]


def search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders searched for a built-in's idx files, in order."""
    builtin = BUILTINS[name]
    dirs: list[Path] = []
    for root in (data_dir, os.environ.get(ENV_DATA_DIR)):
        if root:
            dirs += [Path(root) / name, Path(root)]
    dirs += [Path(d) for d in builtin.system_dirs]
    return dirs


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in folder.name.split("."))


def tfds_prepared_dir(tfds_name: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder of a prepared tensorflow-datasets copy of `tfds_name`, or None.

    Looks in `data_dir` (if given) and then in TFDS's default data folder
    (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`) for the layout `tfds build`
    writes, `<folder>/<name>/<version>/dataset_info.json`, and returns the
    newest version's folder. Only the file system is read (no
    tensorflow-datasets import, never a download); the loader opens the copy
    with tensorflow-datasets and refuses it there if it is unusable.
    """
    candidates = [Path(data_dir)] if data_dir else []
    candidates.append(Path(os.environ.get("TFDS_DATA_DIR")
                           or Path.home() / "tensorflow_datasets"))
    for directory in candidates:
        versions = [v for v in (directory / tfds_name).glob("*.*.*")
                    if _VERSION.fullmatch(v.name) and (v / "dataset_info.json").is_file()]
        if versions:
            return max(versions, key=_version_key)
    return None


def locate(name: str, data_dir: str | os.PathLike | None = None, *,
           check_tfds: bool = True) -> Location:
    """Where the built-in `name` would be read from now (no download, no reading)."""
    builtin = BUILTINS[name]
    if name == "fashion_mnist_sample":
        return Location("package", str(SAMPLE_PATH), SAMPLE_PATH.is_file())
    for folder in search_dirs(name, data_dir):
        if _idx_dir(folder):
            return Location("idx", str(folder), True)
    if check_tfds and builtin.tfds_name:
        prepared = tfds_prepared_dir(builtin.tfds_name, data_dir)
        if prepared is not None:
            return Location("tfds", str(prepared), True)
    if builtin.url:
        return Location("download", builtin.url, False)
    return Location("missing", "not found", False)


def download_root(data_dir: str | os.PathLike | None) -> Path:
    root = data_dir or os.environ.get(ENV_DATA_DIR)
    return Path(root) if root else Path.home() / ".keras" / "datasets"


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Describe every built-in dataset and where it would be read from here.

    Args:
        data_dir: str or None, the folder `load_dataset(data_dir=...)` would search
            first. Defaults to None.

    Returns:
        One dict per built-in: `name`, `description`, `num_classes`, `class_names`,
        `num_train`, `num_test`, `input_shape`, `location` (where it would be read
        from), `source_kind` (package, idx, tfds, download or missing),
        `available` (readable offline now), `size_bytes` (of the files found, or None).
    """
    if data_dir is not None and (not isinstance(data_dir, (str, os.PathLike))
                                 or not Path(data_dir).expanduser().is_dir()):
        raise InputError(f"The data folder {str(data_dir)!r} does not exist or is not a folder; "
                         f"pass an existing folder as --data-dir. "
                         f"{received('data_dir', str(data_dir))}")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    rows = []
    for name, builtin in BUILTINS.items():
        where = locate(name, data_dir)
        size = None
        if where.kind == "package" and where.available:
            size = SAMPLE_PATH.stat().st_size
        elif where.kind == "idx":
            size = sum(idx_file(Path(where.path), f).stat().st_size for f in IDX_FILES.values())
        elif where.kind == "tfds":
            size = sum(p.stat().st_size for p in Path(where.path).rglob("*") if p.is_file())
        rows.append({
            "name": name,
            "description": builtin.description,
            "num_classes": builtin.num_classes,
            "class_names": list(builtin.class_names),
            "num_train": builtin.num_train,
            "num_test": builtin.num_test,
            "input_shape": list(builtin.input_shape),
            "location": where.describe(),
            "source_kind": where.kind,
            "available": where.available,
            "size_bytes": size,
        })
    return rows
