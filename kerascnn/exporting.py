"""Export a model as `.keras`, a TensorFlow SavedModel, TFLite (LiteRT) or ONNX.

Every export is checked before it is put in place: the exported artifact is
loaded with its own runtime (Keras safe mode, `tf.saved_model.load`, the
LiteRT/TFLite interpreter, ONNX Runtime), run on a sample batch, and its
outputs compared with the Keras model's. An export whose largest difference is
above the tolerance is deleted and reported as an error, so a file at the output
path is always one that was verified.

The class names travel with the `.keras` file (inside the archive), with the
SavedModel (`kerascnn.json` in its folder) and with the ONNX model (metadata
property `kerascnn`); a `.tflite` file has no place for them.

ONNX needs the optional extra: `pip install 'kerascnn[onnx]'` (tf2onnx,
onnxruntime, onnx).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerascnn import runtime
from kerascnn.checks import EXPORT_FORMATS, InputError, check_float, check_int, received
from kerascnn.inspection import image_input_shape, resolve_model
from kerascnn.runs import load_model, save_model

# optional: the [onnx] extra, and LiteRT's own interpreter (TensorFlow's is the fallback)
try:
    import onnx
    import onnxruntime
except ImportError:  # `missing_onnx_dependencies` names what is missing
    onnx = onnxruntime = None
try:
    from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter
except ImportError:
    LiteRTInterpreter = None

logger = logging.getLogger(__name__)

FORMATS = EXPORT_FORMATS
ONNX_INSTALL_HINT = "pip install 'kerascnn[onnx]'"


class ExportVerificationError(RuntimeError):
    """The exported artifact's outputs differ from the Keras model's."""


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote and how closely it agrees with Keras.

    Attributes:
        format: str. One of `FORMATS`.
        path: Path. The file or folder written.
        max_abs_diff: float. Largest absolute difference between the export's
            outputs and the Keras model's on the sample batch.
        tolerance: float. The bound it was checked against.
        num_samples: int. Size of the sample batch.
        size_bytes: int. Size on disk (all files for a folder).
        seconds: float. Time to export and verify.
        converted_from: str or None. The mixed-precision policy of a model
            exported as its float32 copy (TFLite and ONNX), else None; the
            check is then against that float32 Keras copy.
        precision_diff: float or None. Largest difference between the float32
            copy and the mixed-precision model on the sample.
    """

    format: str
    path: Path
    max_abs_diff: float
    tolerance: float
    num_samples: int
    size_bytes: int
    seconds: float
    converted_from: str | None = None
    precision_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def missing_onnx_dependencies() -> list[str]:
    """The ONNX export packages that are not installed."""
    return [m for m in ("tf2onnx", "onnxruntime", "onnx") if importlib.util.find_spec(m) is None]


def _check_output(output: Path, fmt: str, overwrite: bool) -> None:
    if fmt == "keras" and output.suffix != ".keras":
        raise InputError(f"A Keras model file must end in '.keras'. "
                         f"{received('output', str(output))}")
    if output.exists() and not overwrite:
        raise InputError(f"Output path already exists; pass --overwrite (overwrite=True) to "
                         f"replace it or choose another path. {received('output', str(output))}")
    if output.exists() and fmt == "saved_model" and not output.is_dir():
        raise InputError(f"A SavedModel is a folder but the output path is a file. "
                         f"{received('output', str(output))}")
    if output.is_dir() and fmt != "saved_model":
        raise InputError(f"A {fmt} export is one file but the output path is a folder. "
                         f"{received('output', str(output))}")
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"The output's parent is not a folder. "
                         f"{received('output', str(output))}")


def sample_batch(model, num_samples: int = 8, seed: int = 0) -> np.ndarray:
    """Random images with the model's input shape and raw pixel range 0-255.

    Unknown spatial sizes (None) become 32.
    """
    shape = tuple(32 if d is None else int(d) for d in image_input_shape(model))
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_samples, *shape)).astype(np.float32)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _run_saved_model(path: Path, x: np.ndarray) -> np.ndarray:
    loaded = tf.saved_model.load(str(path))
    out = loaded.serve(tf.constant(x))
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return np.asarray(out)


def _tflite_interpreter(path: Path):
    if LiteRTInterpreter is not None:
        return LiteRTInterpreter(model_path=str(path))
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that it moved to LiteRT
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path))


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = _tflite_interpreter(path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0])


def _run_keras(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(load_model(path, compile=False).predict_on_batch(x))


def _write(model, fmt: str, path: Path, metadata: dict[str, Any]) -> None:
    if fmt == "keras":
        meta = {k: v for k, v in metadata.items() if k != "kerascnn_version"}
        class_names = meta.pop("class_names", None)
        spec = meta.pop("spec", None)
        save_model(model, path, class_names=class_names, spec=spec, **meta)
    elif fmt == "saved_model":
        model.export(str(path), format="tf_saved_model", verbose=False)
        if metadata:
            (path / "kerascnn.json").write_text(json.dumps(metadata, indent=2) + "\n",
                                                encoding="utf-8")
    elif fmt == "tflite":
        model.export(str(path), format="litert", verbose=False)
    elif fmt == "onnx":
        with warnings.catch_warnings():  # keras' tf2onnx patch trips numpy's np.object warning
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(path), format="onnx", verbose=False)
        if metadata:
            proto = onnx.load(str(path))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "kerascnn", json.dumps(metadata)
            onnx.save(proto, str(path))
    if not path.exists():
        raise ExportVerificationError(f"The {fmt} export wrote nothing at {str(path)!r}.")


def mixed_precision_policy(model) -> str | None:
    """The first non-float32 dtype policy among the model's layers, or None."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        name = getattr(getattr(layer, "dtype_policy", None), "name", "float32")
        if name != "float32":
            return name
    return None


def float32_copy(model):
    """The same network and weights with every layer computing in float32.

    TFLite and ONNX Runtime cannot run the bfloat16/float16 casts of a
    mixed-precision model, so those exports are made from this copy.
    """
    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
                    obj.get("config"), dict):
                return {**obj, "config": {**obj["config"], "name": "float32"}}
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    config = walk(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    return copy


_RUNNERS = {"keras": _run_keras, "saved_model": _run_saved_model, "tflite": _run_tflite,
            "onnx": _run_onnx}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def export(
    model: Any,
    output: str | os.PathLike,
    *,
    format: str = "keras",
    overwrite: bool = False,
    tolerance: float = 1e-4,
    num_samples: int = 8,
    sample: np.ndarray | None = None,
    seed: int = 0,
) -> ExportResult:
    """Export a model and check that the export computes what Keras computes.

    Args:
        model: `keras.Model`, or the path of a `.keras` file, a run folder or a
            tune folder (loaded in Keras safe mode).
        output: str. File to write (`.keras`, `.tflite`, `.onnx`), or folder for
            `saved_model`.
        format: str. `"keras"`, `"saved_model"`, `"tflite"` or `"onnx"`.
            Defaults to `"keras"`.
        overwrite: bool. Replace an existing output. Defaults to `False`.
        tolerance: float. Largest allowed absolute difference per output
            value, plus 1e-4 of the value's magnitude (as `np.allclose`'s
            `rtol`). Defaults to 1e-4.
        num_samples: int. Size of the random sample batch. Defaults to 8.
        sample: Optional array of inputs to check on instead of random images.
        seed: int. Seed of the random sample. Defaults to 0.

    Returns:
        An `ExportResult` with the largest difference found.

    Raises:
        InputError: unknown format, output exists without `overwrite`, model
            file missing or not a Keras model, a bad tolerance or sample size.
        ImportError: ONNX export without the `[onnx]` extra installed.
        ExportVerificationError: the export's outputs differ from Keras's by
            more than the tolerance (nothing is left at `output`).

    Example:

    >>> kerascnn.export("runs/lenet", "lenet.tflite", format="tflite")  # doctest: +SKIP
    ExportResult(format='tflite', path=PosixPath('lenet.tflite'), max_abs_diff=5.9e-08, ...)
    """
    runtime.start()
    if format not in FORMATS:
        raise InputError(f"Unknown export format; allowed: {', '.join(FORMATS)}. "
                         f"{received('format', format)}")
    tolerance = check_float("tolerance", tolerance, minimum=0.0, inclusive=True)
    num_samples = check_int("num_samples", num_samples)
    output = Path(output)
    _check_output(output, format, overwrite)
    if format == "onnx":
        missing = missing_onnx_dependencies()
        if missing:
            raise ImportError(f"ONNX export needs {', '.join(missing)}: {ONNX_INSTALL_HINT}")

    model = resolve_model(model)
    x = sample_batch(model, num_samples, seed) if sample is None else np.asarray(sample, "float32")
    start = time.perf_counter()
    metadata = dict(getattr(model, "kerascnn_metadata", None) or {})
    reference, policy, precision_diff = model, None, None
    if format in ("tflite", "onnx"):
        policy = mixed_precision_policy(model)
        if policy is not None:
            reference = float32_copy(model)
            precision_diff = float(np.abs(
                np.asarray(reference.predict_on_batch(x), np.float64)
                - np.asarray(model.predict_on_batch(x), np.float64)).max())
            logger.warning("The model computes in %s, which %s cannot run; exporting it in "
                           "float32 (max |float32 - %s| = %.3g on the sample).",
                           policy, format, policy, precision_diff)
    expected = np.asarray(reference.predict_on_batch(x))
    if expected.size and float(np.ptp(expected)) < 1e-6:
        logger.warning("The model gives the same output for every sample image, so the check "
                       "of the export proves little (an untrained model?).")

    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    tmp = workdir / output.name
    try:
        _write(reference, format, tmp, metadata)
        actual = _RUNNERS[format](tmp, x)
        if actual.shape != expected.shape:
            raise ExportVerificationError(
                f"The {format} export returns shape {actual.shape}, Keras {expected.shape}.")
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        max_diff = float(diff.max()) if diff.size else 0.0
        bound = tolerance + 1e-4 * np.abs(expected.astype(np.float64))
        if not np.isfinite(max_diff) or np.any(diff > bound):
            raise ExportVerificationError(
                f"The {format} export disagrees with the Keras model: max |difference| = "
                f"{max_diff:.3g} on {len(x)} samples, above the tolerance {tolerance:g}. "
                f"Nothing was written to {str(output)!r}.")
        if output.exists():
            _remove(output)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = ExportResult(format=format, path=output, max_abs_diff=max_diff,
                          tolerance=float(tolerance), num_samples=len(x),
                          size_bytes=_size(output), seconds=time.perf_counter() - start,
                          converted_from=policy, precision_diff=precision_diff)
    logger.debug("Exported %s to %s; max |difference| with Keras %.3g", format, output, max_diff)
    return result
