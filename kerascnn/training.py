"""Training: compile settings shared by `train` and `tune`, callbacks, schedules, lr-find.

`train` trains one network on one dataset and, given an `output_dir`, writes
the run folder:

    spec.yaml      the network that was trained
    config.yaml    every resolved option (dataset, epochs, optimizer, ...)
    history.csv    one row per epoch, rewritten atomically after each epoch
    model.keras    the best weights (by validation loss), with class names
    metrics.json   test_accuracy, test_loss and the best epoch
    manifest.json  versions, seed, dataset fingerprint, command line

While training runs, the folder also holds `checkpoints/` (the best weights
so far and the `BackupAndRestore` state); it is removed when training ends.
After a kill, the same call with `resume=True` continues from the last
finished epoch.

Speed options, measured by `python bench/overhead.py --repeats 4 --epochs 3`
(the `simple` preset on the bundled Fashion-MNIST sample, 5,400 training
images, batch 128; 2-core AMD EPYC with AVX-512 BF16, shared with other jobs,
load average 2-3; medians of interleaved repetitions in one run):

    kerascnn.train / hand-written Keras, same settings   1.015 (per CPU second 1.03)
    kerascnn defaults (batch 128) / Keras defaults (32)  x1.73
    mixed_precision=True (mixed_bfloat16 on this CPU)    x1.43 (per CPU second x1.21)
    jit=True (XLA)                                       x0.74: slower on this CPU,
                                                         hence off by default
    strategy="mirrored"                                  one CPU device here: no gain;
                                                         it spreads batches over GPUs

On a GPU `mixed_precision=True` selects `mixed_float16` (with Keras's loss
scaling); the classifier always computes in float32.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from kerascnn.schedules import SCHEDULES, make_schedule, validate_schedule

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
STRATEGIES = ("none", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = ("spec.yaml", "config.yaml", "history.csv", "model.keras", "metrics.json",
             "manifest.json")
# options that may change between a killed run and its `resume`
_RESUMABLE_CHANGES = ("epochs", "resume", "overwrite", "tensorboard", "verbose")


def make_optimizer(name: str = "adam", learning_rate=1e-3, *, weight_decay: float | None = None,
                   momentum: float = 0.9):
    """A Keras optimizer by name. `learning_rate` may be a float or a schedule."""
    import keras

    name = str(name).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer; allowed: {', '.join(OPTIMIZERS)}. "
                         f"Received: optimizer={name!r}")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Nadam(learning_rate)


def compile_model(model, *, optimizer="adam", learning_rate=1e-3, weight_decay=None,
                  jit_compile=False, steps_per_execution: int = 1, from_logits: bool | None = None):
    """Compile a classifier with sparse categorical cross-entropy and accuracy.

    `from_logits` defaults to whether the last layer has no softmax.
    """
    import keras

    if from_logits is None:
        last = model.layers[-1]
        act = getattr(last, "activation", None)
        from_logits = not (act is not None and getattr(act, "__name__", "") == "softmax")
    opt = optimizer if not isinstance(optimizer, str) else make_optimizer(
        optimizer, learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


# ---------------------------------------------------------------------------
# Precision, strategy, determinism
# ---------------------------------------------------------------------------


def check_precision(mixed_precision: bool | str | None) -> str:
    """Validate a `mixed_precision` argument: a policy name, or `"auto"` for `True`."""
    if mixed_precision in (None, False, "float32", "none", "off"):
        return "float32"
    if mixed_precision is True or mixed_precision in ("auto", "on", "true"):
        return "auto"
    if mixed_precision in PRECISIONS:
        return str(mixed_precision)
    raise ValueError(f"mixed_precision must be a bool or one of {', '.join(PRECISIONS)}. "
                     f"Received: mixed_precision={mixed_precision!r}")


def resolve_precision(mixed_precision: bool | str | None) -> str:
    """The Keras dtype policy name for a `mixed_precision` argument.

    `True` picks `mixed_float16` when TensorFlow sees a GPU and
    `mixed_bfloat16` otherwise (CPUs with AVX-512 BF16 or AMX run bfloat16
    matrix multiplies natively; float16 would be emulated). A policy name may
    also be given. Under `mixed_float16`, Keras's `compile` wraps the
    optimizer in a `LossScaleOptimizer`; bfloat16 needs no loss scaling.
    """
    policy = check_precision(mixed_precision)
    if policy != "auto":
        return policy
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Set Keras's global dtype policy for the block, then restore it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """Turn on TensorFlow's op determinism for the block (if asked)."""
    if not enabled:
        yield
        return
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def parse_tf_config(environ: dict | None = None) -> dict:
    """Read and check `TF_CONFIG` for multi-worker training.

    Returns:
        The parsed dict (with `cluster` and `task`).

    Raises:
        ValueError: `TF_CONFIG` is missing, not JSON, or incomplete.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text:
        raise ValueError(f"strategy='multiworker' needs the TF_CONFIG environment variable, "
                         f"e.g. {example}. Received: TF_CONFIG unset")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e.msg}); expected e.g. {example}. "
                         f"Received: TF_CONFIG={text[:200]!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs 'cluster' and 'task' mappings, e.g. {example}. "
                         f"Received: TF_CONFIG={text[:200]!r}")
    task_type, index = task.get("type"), task.get("index")
    members = cluster.get(task_type)
    if not isinstance(members, list) or not isinstance(index, int) \
            or not 0 <= index < len(members):
        raise ValueError(f"TF_CONFIG task {task!r} does not name a member of the cluster "
                         f"{cluster!r}. Received: TF_CONFIG={text[:200]!r}")
    for address in (a for v in cluster.values() if isinstance(v, list) for a in v):
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Every TF_CONFIG cluster address must be HOST:PORT. "
                             f"Received: {address!r}")
    return config


def is_chief(tf_config: dict | None) -> bool:
    """Whether this process writes the run folder (worker 0, or the chief)."""
    if not tf_config:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def make_strategy(name: str):
    """A `tf.distribute` strategy by name (`none` gives the default strategy)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------


def _history_rows_to_csv(rows: list[dict]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_history_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a `history.csv` with numbers parsed (epoch as int)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                parsed[key] = int(value) if key == "epoch" else float(value)
            rows.append(parsed)
    return rows


def _make_callbacks_module():
    """Callback classes, defined lazily so that importing this module needs no Keras."""
    import keras

    class History(keras.callbacks.Callback):
        """Keeps every epoch's logs (with the learning rate and seconds) and
        rewrites `history.csv` atomically after each epoch.

        On resume, rows from before the restored epoch are kept and later ones
        (an epoch logged but not backed up before a kill) are dropped.
        """

        def __init__(self, path: Path | None, previous_rows: Sequence[dict] = ()):
            super().__init__()
            self.path = path
            self.rows: list[dict] = list(previous_rows)
            self._start = 0.0

        def on_train_begin(self, logs=None):
            initial = int(getattr(self.model, "_initial_epoch", 0) or 0)
            self.rows = [r for r in self.rows if int(r["epoch"]) < initial]

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": int(epoch)}
            for key, value in (logs or {}).items():
                row[key] = float(value)
            if "learning_rate" not in row:
                row["learning_rate"] = _current_lr(self.model)
            row["seconds"] = round(time.perf_counter() - self._start, 3)
            self.rows = [r for r in self.rows if int(r["epoch"]) != int(epoch)] + [row]
            if self.path is not None:
                from kerascnn.runs import atomic_write_text

                atomic_write_text(self.path, _history_rows_to_csv(self.rows))

    class BestCheckpoint(keras.callbacks.Callback):
        """Keeps the weights of the best epoch so far.

        In memory, and, given a folder, also as `best.weights.npz` (written to
        a temporary name and renamed) with the best score in `best.json`, so
        that a resumed run compares against it and can still restore it.
        A plain `.npz` of the model's weights is about ten times faster to
        write than Keras's `.weights.h5` with the optimizer state, which
        matters when it is written after most epochs.
        """

        def __init__(self, directory: Path | None, monitor: str = "val_loss"):
            super().__init__()
            self.directory = Path(directory) if directory is not None else None
            self.monitor = monitor
            self.best = math.inf
            self.best_epoch: int | None = None
            self.weights: list | None = None
            if self.directory is not None:
                self.path = self.directory / "best.weights.npz"
                self.info_path = self.directory / "best.json"
                if self.info_path.is_file() and self.path.is_file():
                    try:
                        info = json.loads(self.info_path.read_text())
                        self.best, self.best_epoch = float(info["best"]), int(info["epoch"])
                    except (ValueError, KeyError, TypeError):
                        pass

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(float(value)) or float(value) >= self.best:
                return
            self.weights = self.model.get_weights()
            self.best, self.best_epoch = float(value), int(epoch)
            if self.directory is None:
                return
            import numpy as np

            from kerascnn.runs import write_json

            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / ".best.weights.npz.tmp"
            with open(tmp, "wb") as f:
                np.savez(f, *self.weights)
            os.replace(tmp, self.path)
            write_json(self.info_path, {"monitor": self.monitor, "best": self.best,
                                        "epoch": self.best_epoch})

        def restore_best(self) -> bool:
            """Put the best weights back into the model; False if there are none."""
            weights = self.weights
            if weights is None and self.directory is not None and self.path.is_file():
                import numpy as np

                with np.load(self.path, allow_pickle=False) as f:
                    weights = [f[f"arr_{i}"] for i in range(len(f.files))]
            if weights is None:
                return False
            self.model.set_weights(weights)
            return True

    class EpochLogger(keras.callbacks.Callback):
        """One log line per epoch: `epoch 3/10  loss 0.41  accuracy 0.85 ...`."""

        def __init__(self, epochs: int):
            super().__init__()
            self.epochs = epochs
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            parts = [f"epoch {epoch + 1}/{self.epochs}"]
            for key, value in (logs or {}).items():
                if key != "learning_rate":
                    parts.append(f"{key} {float(value):.4f}")
            parts.append(f"lr {_current_lr(self.model):.3g}")
            parts.append(f"{time.perf_counter() - self._start:.1f}s")
            logger.info("  ".join(parts))

    class NaNGuard(keras.callbacks.TerminateOnNaN):
        """`TerminateOnNaN` that remembers that it fired."""

        fired = False

        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            if self.model.stop_training:
                self.fired = True

    return History, BestCheckpoint, EpochLogger, NaNGuard


def _current_lr(model) -> float:
    """The optimizer's rate now (a schedule evaluated at the current step)."""
    lr = model.optimizer.learning_rate  # a Keras variable, also for schedules
    try:
        return float(lr)
    except TypeError:  # under a tf.distribute strategy the value is a MirroredVariable
        return float(lr.value.read_value().numpy())


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained `keras.Model` (weights of the best epoch).
        spec: the `CNNSpec` that was trained.
        history: list of dict, one per epoch (`epoch`, `loss`, `accuracy`,
            `val_loss`, `val_accuracy`, `learning_rate`, `seconds`).
        metrics: dict with `test_accuracy`, `test_loss`, `best_epoch`,
            `epochs_run`, `stopped_early`, `diverged`.
        config: dict of the resolved options (what `config.yaml` holds).
        output_dir: the run folder, or `None`.
        paths: dict of file name -> path of every file written.
        seconds: wall-clock seconds of `fit`.
        images_per_second: training throughput over the whole `fit`.
    """

    model: Any
    spec: Any
    history: list[dict]
    metrics: dict[str, Any]
    config: dict[str, Any]
    output_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get("diverged"))


# ---------------------------------------------------------------------------
# Spec and model
# ---------------------------------------------------------------------------


def resolve_spec(spec_or_preset, *, input_shape: tuple[int, ...], num_classes: int,
                 **fields: Any):
    """A `CNNSpec` from a spec, a dict, a preset name or a spec file, fitted to the data.

    A preset (or a dict/file without `input_shape`/`num_classes`) takes the
    dataset's shape and class count; an explicit spec must agree with them.
    A callable is called as `spec_or_preset(input_shape, num_classes)` and
    must return a `CNNSpec` (the CLI builds its spec this way once the data
    is known). `fields` override spec fields.
    """
    from kerascnn.spec import CNNSpec

    if spec_or_preset is None:
        spec_or_preset = "simple"
    if callable(spec_or_preset) and not isinstance(spec_or_preset, (CNNSpec, str, dict)):
        made = spec_or_preset(tuple(input_shape), num_classes)
        if not isinstance(made, CNNSpec):
            raise TypeError(f"A spec factory must return a CNNSpec. "
                            f"Received: {type(made).__name__}")
        spec_or_preset = made
    if isinstance(spec_or_preset, CNNSpec):
        spec = spec_or_preset.replace(**fields) if fields else spec_or_preset
    elif isinstance(spec_or_preset, dict):
        config = {"input_shape": input_shape, "num_classes": num_classes,
                  **spec_or_preset, **fields}
        spec = CNNSpec.from_dict(config)
    elif isinstance(spec_or_preset, (str, os.PathLike)):
        text = str(spec_or_preset)
        if text.lower().endswith((".yaml", ".yml", ".json")) or os.path.sep in text:
            from kerascnn.runs import read_yaml

            data = read_yaml(text)
            if isinstance(data, dict) and isinstance(data.get("spec"), dict):
                data = data["spec"]
            if not isinstance(data, dict):
                raise ValueError(f"A spec file must hold a mapping of spec fields. "
                                 f"Received: {type(data).__name__} in {text!r}")
            return resolve_spec(data, input_shape=input_shape, num_classes=num_classes,
                                **fields)
        from kerascnn.presets import get_preset

        spec = get_preset(text, input_shape=tuple(input_shape), num_classes=num_classes)
        if fields:
            spec = spec.replace(**fields)
    else:
        raise TypeError(f"spec must be a CNNSpec, a dict, a preset name or a spec file path. "
                        f"Received: {type(spec_or_preset).__name__}")
    if spec.num_classes != num_classes:
        raise ValueError(f"The spec has num_classes={spec.num_classes} but the dataset has "
                         f"{num_classes} classes; set num_classes to match. "
                         f"Received: num_classes={spec.num_classes}")
    return spec


def _fit_input_shape(spec, bundle, image_size):
    """The image size that makes the data fit `spec.input_shape`, or an error."""
    from kerascnn.data import network_input_shape

    net_shape = tuple(network_input_shape(bundle, image_size))
    if tuple(spec.input_shape) == net_shape:
        return image_size
    if image_size is None and len(spec.input_shape) == 3 and len(net_shape) == 3 \
            and spec.input_shape[-1] == net_shape[-1]:
        logger.info("Images of %s are resized to %s inside the model.",
                    "x".join(map(str, net_shape[:2])), "x".join(map(str, spec.input_shape[:2])))
        return tuple(spec.input_shape[:2])
    raise ValueError(f"The spec's input_shape {tuple(spec.input_shape)} does not fit the data "
                     f"(network input {net_shape}); change input_shape, or --image-size for "
                     f"images. Received: input_shape={tuple(spec.input_shape)}")


def build_model(spec, bundle, *, image_size=None, normalize: bool = False,
                augmentation_strength: float = 1.0):
    """`build_cnn(spec)` with the data's preprocessing in front (raw pixels in)."""
    from kerascnn.builders import build_cnn
    from kerascnn.data import preprocessing_layers

    layers = preprocessing_layers(bundle, image_size=image_size, normalize=normalize,
                                  augmentation=tuple(spec.augmentation),
                                  augmentation_strength=augmentation_strength)
    return build_cnn(spec, preprocessing=layers, raw_input_shape=tuple(bundle.input_shape))


def _steps_per_epoch(dataset, num_examples: int, batch_size: int | None) -> int:
    try:
        n = int(dataset.cardinality())
    except Exception:  # noqa: BLE001 - unknown cardinality
        n = -1
    if n > 0:
        return n
    return max(1, math.ceil(num_examples / (batch_size or 128)))


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return value


def _check_options(*, epochs, batch_size, optimizer, learning_rate, weight_decay, schedule,
                   early_stopping, strategy, steps_per_execution, output_dir, tensorboard,
                   resume, overwrite=False):
    _check_positive_int("epochs", epochs)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    _check_positive_int("steps_per_execution", steps_per_execution)
    if str(optimizer).lower() not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer; allowed: {', '.join(OPTIMIZERS)}. "
                         f"Received: optimizer={optimizer!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number. "
                         f"Received: learning_rate={learning_rate!r}")
    if weight_decay is not None and (not isinstance(weight_decay, (int, float))
                                     or weight_decay < 0):
        raise ValueError(f"weight_decay must be a number >= 0. "
                         f"Received: weight_decay={weight_decay!r}")
    schedule = validate_schedule(schedule)
    if early_stopping is not None and (isinstance(early_stopping, bool)
                                       or not isinstance(early_stopping, int)
                                       or early_stopping < 0):
        raise ValueError(f"early_stopping is a patience in epochs (0 or None turns it off). "
                         f"Received: early_stopping={early_stopping!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy; allowed: {', '.join(STRATEGIES)}. "
                         f"Received: strategy={strategy!r}")
    if output_dir is None and (tensorboard or resume):
        what = "tensorboard" if tensorboard else "resume"
        raise ValueError(f"{what}=True needs an output_dir to write to. "
                         f"Received: output_dir=None")
    if resume and overwrite:
        raise ValueError("Give resume (continue the run) or overwrite (start again), not both. "
                         "Received: resume=True, overwrite=True")
    if resume and strategy == "multiworker":
        raise ValueError("resume is not supported with strategy='multiworker' (each worker "
                         "would restore a different state); restart the whole job instead. "
                         "Received: resume=True, strategy='multiworker'")
    return schedule


def _check_resume(out: Path, config: dict, spec) -> bool:
    """Whether `out` holds a run to continue; raises if it holds another run."""
    from kerascnn.runs import read_yaml

    if not out.is_dir() or not any(out.iterdir()):
        return False
    config_path = out / "config.yaml"
    if not config_path.is_file() or not (out / "spec.yaml").is_file():
        raise ValueError(f"Output folder {str(out)!r} holds files but no interrupted run "
                         f"(config.yaml, spec.yaml) to resume; pass --overwrite or choose "
                         f"another --output-dir. Received: output_dir={str(out)!r}")
    if (out / "metrics.json").is_file() and not (out / CHECKPOINT_DIR).is_dir():
        raise ValueError(f"The run in {str(out)!r} has already finished; nothing to resume. "
                         f"Pass --overwrite to train again. Received: output_dir={str(out)!r}")
    old = read_yaml(config_path) or {}
    diffs = sorted(k for k in set(old) | set(config)
                   if k not in _RESUMABLE_CHANGES and old.get(k) != config.get(k))
    old_spec = read_yaml(out / "spec.yaml")
    if old_spec != json.loads(json.dumps(spec.to_dict())):
        diffs.insert(0, "spec")
    if diffs:
        raise ValueError(f"Cannot resume {str(out)!r}: these options differ from the "
                         f"interrupted run: {', '.join(diffs)}. Use the same options, or "
                         f"--overwrite to start again. Received: output_dir={str(out)!r}")
    return True


def train(
    spec=None,
    *,
    dataset: Any = "fashion_mnist_sample",
    epochs: int = 10,
    batch_size: int | None = 128,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    weight_decay: float | None = None,
    schedule: str = "constant",
    early_stopping: int | None = 5,
    validation_split: float = 0.1,
    image_size: tuple[int, int] | None = None,
    color_mode: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    normalize: bool = False,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    mixed_precision: bool | str = False,
    jit: bool = False,
    steps_per_execution: int = 1,
    strategy: str = "none",
    tensorboard: bool = False,
    resume: bool = False,
    verbose: int = 0,
    callbacks: Sequence[Any] = (),
    command_line: Sequence[str] | None = None,
    **fields: Any,
) -> TrainResult:
    """Train one network and (with `output_dir`) write its run folder.

    Args:
        spec: `CNNSpec`, dict of spec fields, preset name (`"simple"`,
            `"lenet5"`, ...), path of a spec YAML/JSON file, or a callable
            `(input_shape, num_classes) -> CNNSpec`. A preset takes the
            dataset's input shape and class count. Defaults to `"simple"`.
        dataset: str or `DatasetBundle`. A dataset name as
            `kerascnn.load_dataset` takes it, or an already loaded bundle
            (then `batch_size` and the data options are not used).
            Defaults to the bundled Fashion-MNIST sample.
        epochs: int. Maximum number of epochs. Defaults to 10.
        batch_size: int. Global batch size. Defaults to 128 (plain Keras
            uses 32; `bench/overhead.py` measures the difference).
        optimizer: str. `adam`, `adamw`, `sgd` (Nesterov, momentum 0.9),
            `rmsprop` or `nadam`. Defaults to `"adam"`.
        learning_rate: float. The base rate (the peak rate for
            `one-cycle`). Defaults to 1e-3.
        weight_decay: float. Decoupled weight decay for `adamw`.
        schedule: str. `constant`, `cosine`, `one-cycle` or `plateau`
            (see `kerascnn.schedules`). Defaults to `"constant"`.
        early_stopping: int. Patience in epochs on the validation loss;
            0 or `None` turns early stopping off. Defaults to 5.
        validation_split, image_size, color_mode, data_dir, download: passed
            to `kerascnn.load_dataset`.
        normalize: bool. Add a `Normalization` layer adapted on the
            training data. Defaults to `False` (rescaling to [0, 1] only).
        output_dir: str. The run folder; `None` writes nothing.
        overwrite: bool. Replace results already in `output_dir`.
        seed: int. Seeds Python, NumPy, TensorFlow and the data split: the
            same seed gives the same history. Defaults to 0.
        deterministic: bool. Also turn on TensorFlow's op determinism
            (bit-identical results, slower). Defaults to `False`.
        mixed_precision: bool or str. `True`: `mixed_float16` on a GPU,
            `mixed_bfloat16` on a CPU; the output layer stays float32.
            Defaults to `False`.
        jit: bool. Compile the train step with XLA. Defaults to `False`.
        steps_per_execution: int. Train steps per `tf.function` call.
            Defaults to 1.
        strategy: str. `none`, `mirrored` (all local GPUs) or `multiworker`
            (`tf.distribute.MultiWorkerMirroredStrategy`, configured by
            `TF_CONFIG`; every worker runs the same call, worker 0 writes
            the run folder). Defaults to `"none"`.
        tensorboard: bool. Write TensorBoard logs to `output_dir/logs`.
        resume: bool. Continue an interrupted run in `output_dir` from its
            last finished epoch (Keras `BackupAndRestore`); starts afresh if
            there is nothing to continue.
        verbose: int. 0: one log line per epoch; 1: Keras progress bars.
        callbacks: more Keras callbacks, run after kerascnn's own.
        command_line: list of str. Recorded in `manifest.json`. Defaults
            to `sys.argv`.
        **fields: `CNNSpec` fields that override the spec's.

    Returns:
        `TrainResult` with the model, history, metrics and file paths.

    Raises:
        ValueError: a bad option, a spec that does not fit the data, an
            output folder that holds results (without `overwrite`). All
            checks run before anything is written.

    Example:

    >>> result = kerascnn.train("simple", epochs=2, output_dir="runs/simple")
    >>> result.metrics["test_accuracy"]
    """
    schedule = _check_options(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate,
        weight_decay=weight_decay, schedule=schedule, early_stopping=early_stopping,
        strategy=strategy, steps_per_execution=steps_per_execution, output_dir=output_dir,
        tensorboard=tensorboard, resume=resume, overwrite=overwrite)
    check_precision(mixed_precision)
    tf_config = parse_tf_config() if strategy == "multiworker" else None
    chief = is_chief(tf_config)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None and chief:
        from kerascnn.runs import prepare_output_dir

        if not resume:
            prepare_output_dir(out, overwrite=overwrite)
        elif (out / "metrics.json").is_file() and not (out / CHECKPOINT_DIR).is_dir():
            raise ValueError(f"The run in {str(out)!r} has already finished; nothing to "
                             f"resume. Pass --overwrite to train again. "
                             f"Received: output_dir={str(out)!r}")

    # a multi-worker strategy must exist before TensorFlow runs any op
    dist = make_strategy(strategy)
    precision = resolve_precision(mixed_precision)

    import keras

    keras.utils.set_random_seed(seed)
    bundle, spec, image_size = _data_and_spec(
        spec, fields, dataset, validation_split=validation_split, image_size=image_size,
        color_mode=color_mode, batch_size=batch_size, data_dir=data_dir, download=download,
        seed=seed)
    from kerascnn.analysis import analyze

    analysis = analyze(spec)  # raises a clear error for a network that cannot exist

    config = {
        "dataset": getattr(bundle, "source", str(dataset)),
        "dataset_fingerprint": getattr(bundle, "fingerprint", None),
        "validation_split": getattr(bundle, "validation_split", validation_split),
        "image_size": list(image_size) if image_size else None,
        "color_mode": color_mode,
        "normalize": bool(normalize),
        "epochs": epochs,
        "batch_size": batch_size if isinstance(dataset, str) else getattr(bundle, "batch_size",
                                                                           batch_size),
        "optimizer": str(optimizer).lower(),
        "learning_rate": float(learning_rate),
        "weight_decay": weight_decay,
        "schedule": schedule,
        "early_stopping": early_stopping or 0,
        "seed": seed,
        "data_seed": getattr(bundle, "seed", seed),
        "deterministic": bool(deterministic),
        "mixed_precision": precision,
        "jit": bool(jit),
        "steps_per_execution": steps_per_execution,
        "strategy": strategy,
        "tensorboard": bool(tensorboard),
    }
    resuming = False
    if out is not None and chief:
        if resume:
            resuming = _check_resume(out, config, spec)
        elif out.is_dir():  # overwrite=True: remove the old run's files, nothing else
            _remove_run_files(out)

    # ---- everything is valid: write
    from kerascnn.runs import manifest, save_model, write_json, write_yaml

    paths: dict[str, Path] = {}
    scratch = None
    if out is not None and chief:
        out.mkdir(parents=True, exist_ok=True)
        paths["spec.yaml"] = spec.save(out / "spec.yaml")
        paths["config.yaml"] = write_yaml(out / "config.yaml", config)
        state_dir = out / CHECKPOINT_DIR
    else:
        scratch = tempfile.TemporaryDirectory(prefix="kerascnn-train-")
        state_dir = Path(scratch.name)
    logger.info("Training a network of %s parameters (%s%s) on %s: %d training, "
                "%d validation images%s", f"{analysis.total_params:,}", precision,
                ", XLA" if jit else "", config["dataset"], bundle.num_train,
                bundle.num_validation, "; resuming" if resuming else "")

    try:
        with op_determinism(deterministic), dtype_policy(precision):
            result = _fit(
                spec, bundle, dist, config=config, image_size=image_size,
                normalize=normalize, epochs=epochs, optimizer=optimizer,
                learning_rate=learning_rate, weight_decay=weight_decay, schedule=schedule,
                early_stopping=early_stopping, jit=jit,
                steps_per_execution=steps_per_execution, state_dir=state_dir,
                history_path=(out / "history.csv") if out is not None and chief else None,
                tensorboard_dir=(out / "logs") if tensorboard and out is not None and chief
                else None,
                resuming=resuming, backup=out is not None, verbose=verbose,
                extra_callbacks=list(callbacks))
        result.output_dir = out if chief else None
        if out is not None and chief:
            paths["history.csv"] = out / "history.csv"
            paths["model.keras"] = save_model(result.model, out / "model.keras",
                                              class_names=bundle.class_names, spec=spec,
                                              config=config)
            paths["metrics.json"] = write_json(out / "metrics.json", result.metrics)
            paths["manifest.json"] = write_json(out / "manifest.json", manifest(
                seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
                command_line=command_line, kind="train", status=(
                    "diverged" if result.diverged else "complete"),
                dataset=config["dataset"], epochs_run=result.metrics["epochs_run"],
                seconds=round(result.seconds, 2), resumed=resuming))
            if tensorboard:
                paths["logs"] = out / "logs"
            shutil.rmtree(state_dir, ignore_errors=True)
        result.paths = paths
        return result
    finally:
        if scratch is not None:
            scratch.cleanup()


def _remove_run_files(out: Path) -> None:
    for name in (*RUN_FILES, CHECKPOINT_DIR, "logs", "lr_find.png"):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _data_and_spec(spec, fields, dataset, *, image_size, **data_options):
    """Load the data, then resolve the spec against its shape and classes."""
    bundle, image_size = _load_data(dataset, image_size=image_size, **data_options)
    from kerascnn.data import network_input_shape

    spec = resolve_spec(spec, input_shape=tuple(network_input_shape(bundle, image_size)),
                        num_classes=bundle.num_classes, **fields)
    return bundle, spec, _fit_input_shape(spec, bundle, image_size)


def _load_data(dataset, *, validation_split, image_size, color_mode, batch_size, data_dir,
               download, seed):
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    elif image_size is not None:
        image_size = tuple(int(v) for v in image_size)
        if len(image_size) == 1:
            image_size = (image_size[0], image_size[0])
    from kerascnn.data import as_bundle

    bundle = as_bundle(dataset, validation_split=validation_split, image_size=image_size,
                       color_mode=color_mode, batch_size=batch_size or 128, data_dir=data_dir,
                       download=download, seed=seed)
    return bundle, image_size


def _distributable(dataset, strategy_name: str):
    """Shard a `tf.data` pipeline by data, not files, across workers."""
    if dataset is None or strategy_name != "multiworker":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def _keras_multiworker_fixes(strategy):
    """Work around two Keras 3 bugs with `MultiWorkerMirroredStrategy` (TF backend).

    tensorflow/tensorflow#72388 ("tf.distribute and keras 3 incompatibility:
    Invalid reduction dimension 0 for input with 0 dimensions"):

    1. Before `fit`, Keras builds the model symbolically from a first batch that
       it averages across workers with `strategy.reduce` on the whole `(x, y)`
       tuple, which the collective strategy cannot do. The caller clears the
       model's own strategy so that Keras takes it from this scope instead and
       builds the model when the train step is traced, as without a strategy.
    2. Keras averages each step's scalar logs across workers with
       `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar. Inside
       this block, scalars are averaged with `axis=None` (a plain all-reduce
       mean across workers); everything else goes through Keras unchanged.

    Both changes last only for the block.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer
    from keras.src import tree

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy_):
            def reduce(v):
                local = strategy_.experimental_local_results(v)[0]
                axis = None if getattr(local.shape, "rank", None) == 0 else 0
                return strategy_.reduce("MEAN", v, axis=axis)
            return tree.map_structure(reduce, values)
        return original(values, strategy_, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        with strategy.scope():
            yield
    finally:
        tf_trainer.reduce_per_replica = original


def _fit(spec, bundle, dist, *, config, image_size, normalize, epochs, optimizer, learning_rate,
         weight_decay, schedule, early_stopping, jit, steps_per_execution, state_dir,
         history_path, tensorboard_dir, resuming, backup, verbose,
         extra_callbacks=()) -> TrainResult:
    import keras

    History, BestCheckpoint, EpochLogger, NaNGuard = _make_callbacks_module()
    has_validation = bundle.validation is not None and (bundle.num_validation or 0) > 0
    monitor = "val_loss" if has_validation else "loss"
    steps = _steps_per_epoch(bundle.train, bundle.num_train, config["batch_size"])
    lr, schedule_callbacks = make_schedule(
        schedule, float(learning_rate), epochs=epochs, steps_per_epoch=steps, monitor=monitor,
        plateau_patience=max(1, (early_stopping or 4) // 2))

    with dist.scope():
        model = build_model(spec, bundle, image_size=image_size, normalize=normalize)
        compile_model(model, optimizer=make_optimizer(optimizer, lr, weight_decay=weight_decay),
                      jit_compile=bool(jit), steps_per_execution=steps_per_execution)
    if config["mixed_precision"] != "float32":
        out_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
        if out_dtype != "float32":
            logger.warning("The output layer computes in %s under %s; the loss may be "
                           "imprecise.", out_dtype, config["mixed_precision"])

    previous_rows: list[dict] = []
    if resuming and history_path is not None and history_path.is_file():
        previous_rows = read_history_csv(history_path)
    history_cb = History(history_path, previous_rows)
    best_cb = BestCheckpoint(state_dir if backup else None, monitor=monitor)
    nan_cb = NaNGuard()
    callbacks: list = [nan_cb]
    if backup:
        # restores weights, optimizer state and the epoch before anything else runs; the
        # previous backup is kept too, so a kill in the middle of writing one is survived
        callbacks.insert(0, keras.callbacks.BackupAndRestore(
            str(state_dir / "backup"), double_checkpoint=True, delete_checkpoint=False))
    callbacks += [history_cb, best_cb, *schedule_callbacks]
    early_cb = None
    if early_stopping:
        early_cb = keras.callbacks.EarlyStopping(monitor=monitor, patience=int(early_stopping))
        callbacks.append(early_cb)
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    if verbose < 1:
        callbacks.append(EpochLogger(epochs))
    callbacks += list(extra_callbacks)

    train_ds = _distributable(bundle.train, config["strategy"])
    val_ds = _distributable(bundle.validation, config["strategy"]) if has_validation else None
    fit_scope = contextlib.nullcontext
    if config["strategy"] == "multiworker":
        model._distribute_strategy = None  # see _keras_multiworker_fixes
        fit_scope = functools.partial(_keras_multiworker_fixes, dist)
    start = time.perf_counter()
    with fit_scope():
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks,
                  shuffle=False,  # the pipeline shuffles; Keras would only warn
                  verbose=1 if verbose >= 1 else 0)
    seconds = time.perf_counter() - start
    initial_epoch = int(getattr(model, "_initial_epoch", 0) or 0)
    epochs_now = max(0, len(history_cb.rows) - len([r for r in previous_rows
                                                    if r["epoch"] < initial_epoch]))

    best_cb.restore_best()
    if config["strategy"] == "multiworker":
        # Distributed, each worker would score its own shard of the test split and the
        # shards' accuracies would be averaged; instead every worker scores the whole split
        # on a local copy with the same weights (no collective op, the same result on all).
        local = _clone(model)
        compile_model(local, optimizer=make_optimizer(optimizer, float(learning_rate),
                                                      weight_decay=weight_decay))
        local.optimizer.build(local.trainable_variables)  # saved like a trained model's
        model = local
    test = model.evaluate(bundle.test, verbose=0, return_dict=True)
    rows = history_cb.rows
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "best_epoch": best_cb.best_epoch,
        f"best_{monitor}": best_cb.best if math.isfinite(best_cb.best) else None,
        "epochs_run": len(rows),
        "stopped_early": bool(early_cb is not None and early_cb.stopped_epoch > 0),
        "diverged": bool(nan_cb.fired),
    }
    if best_cb.best_epoch is not None:
        best_row = next((r for r in rows if r["epoch"] == best_cb.best_epoch), {})
        for key in ("val_accuracy", "accuracy"):
            if key in best_row:
                metrics[f"best_{key}"] = best_row[key]
    if nan_cb.fired:
        logger.warning("Training stopped: the loss became NaN. Try a lower learning rate.")
    n_images = epochs_now * bundle.num_train
    return TrainResult(model=model, spec=spec, history=rows, metrics=metrics, config=config,
                       seconds=seconds,
                       images_per_second=n_images / seconds if seconds > 0 else 0.0)


# ---------------------------------------------------------------------------
# lr-find: the learning-rate range test
# ---------------------------------------------------------------------------


@dataclass
class LRFindResult:
    """What `lr_find` returns.

    Attributes:
        learning_rates: list of float, the rate of each step.
        losses: list of float, the raw training loss of each step's batch.
        smoothed_losses: list of float, exponentially smoothed (bias-corrected).
        suggestion: float, the suggested learning rate (by `method`).
        steepest: float, the rate where the smoothed loss falls fastest.
        minimum: float, the rate at the smoothed loss minimum.
        method: str, `"steepest"` or `"minimum/10"`.
        diverged: bool, whether the test stopped because the loss blew up.
        plot_path: Path of the saved plot, or `None`.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float
    steepest: float
    minimum: float
    method: str
    diverged: bool
    plot_path: Path | None = None


LR_FIND_METHODS = ("steepest", "minimum/10")


def suggest_learning_rate(learning_rates: Sequence[float], smoothed: Sequence[float], *,
                          skip_start: int | None = None) -> tuple[float, float]:
    """`(steepest, minimum)` of a smoothed loss-vs-rate curve.

    `steepest` is the rate where the loss falls fastest per decade, looked for
    between the first points (skipped: the smoothing has not settled yet) and
    the loss minimum; `minimum` is the rate at the minimum. Leslie Smith's and
    fastai's rules of thumb are `steepest` or `minimum / 10`.
    """
    import numpy as np

    lrs = np.asarray(learning_rates, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        raise ValueError(f"The range test needs at least 3 finite losses to suggest a rate. "
                         f"Received: {int(finite.sum())} finite losses")
    lrs, loss = lrs[finite], loss[finite]
    i_min = int(np.argmin(loss))
    minimum = float(lrs[i_min])
    skip = max(1, len(lrs) // 10) if skip_start is None else skip_start
    lo, hi = min(skip, max(0, i_min - 2)), max(i_min + 1, 3)
    segment = slice(lo, hi)
    grad = np.gradient(loss[segment], np.log10(lrs[segment]))
    steepest = float(lrs[segment][int(np.argmin(grad))])
    return steepest, minimum


def plot_lr_find(result: LRFindResult, path: str | os.PathLike, *,
                 title: str = "Learning-rate range test") -> Path:
    """Save the loss-vs-learning-rate curve as a PNG (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.learning_rates, result.losses, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(result.learning_rates, result.smoothed_losses, color="C0", lw=2,
            label="smoothed loss")
    ax.set_xscale("log")
    ax.axvline(result.steepest, color="C3", ls="--",
               label=f"steepest descent: {result.steepest:.2g}")
    ax.axvline(result.minimum / 10, color="C2", ls=":",
               label=f"minimum / 10: {result.minimum / 10:.2g}")
    finite = [v for v in result.smoothed_losses if math.isfinite(v)]
    if finite:  # keep the divergence from flattening the interesting part
        raw = [v for v in result.losses if math.isfinite(v)]
        low, first = min(finite + raw), finite[0]
        ax.set_ylim(low - 0.1 * abs(first - low) - 1e-3, first + 0.5 * abs(first - low) + 1e-3)
    ax.set_title(f"{title} (suggested rate {result.suggestion:.2g})")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _batches(data, batch_size: int | None):
    """An endless iterator of `(x, y)` batches from a bundle, a tf.data set or arrays."""
    import tensorflow as tf

    if hasattr(data, "train") and hasattr(data, "num_classes"):
        ds = data.train
    elif isinstance(data, tf.data.Dataset):
        ds = data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        ds = tf.data.Dataset.from_tensor_slices(tuple(data)).shuffle(
            len(data[0]), seed=0).batch(batch_size or 128)
    else:
        raise TypeError(f"data must be a DatasetBundle, a tf.data.Dataset of (x, y) batches or "
                        f"an (x, y) tuple of arrays. Received: {type(data).__name__}")
    return iter(ds.repeat())


def _clone(model):
    """A copy of a Keras model with the same weights, or the model if it cannot be cloned."""
    import keras

    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    except Exception:  # noqa: BLE001 - subclassed models: train the original, then restore
        logger.debug("Could not clone %s; its weights are restored after the test.", model.name)
        return model


def lr_find(
    model=None,
    *,
    dataset: Any = "fashion_mnist_sample",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
    optimizer: str = "adam",
    weight_decay: float | None = None,
    batch_size: int | None = 128,
    smoothing: float = 0.98,
    divergence: float = 4.0,
    method: str = "steepest",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    validation_split: float = 0.1,
    image_size: tuple[int, int] | None = None,
    color_mode: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    normalize: bool = False,
    **fields: Any,
) -> LRFindResult:
    """The learning-rate range test (Leslie Smith, 2015; fastai's `lr_find`).

    Trains for `steps` batches while the rate grows exponentially from
    `start_lr` to `end_lr`, records the loss of each batch, smooths it, and
    stops early once the smoothed loss exceeds `divergence` times its best.
    A given model is left as it was: the test runs on a clone with the same
    weights (or, for a model Keras cannot clone, on the model itself, whose
    weights are restored afterwards).

    Args:
        model: a `keras.Model` (compiled or not; a compiled model keeps its
            loss), or anything `train` takes as a spec (`CNNSpec`, preset
            name, dict, spec file). Defaults to the `simple` preset.
        dataset: for a spec: a dataset name or `DatasetBundle`; for a
            model: also a `tf.data.Dataset` of `(x, y)` batches or an
            `(x, y)` tuple of arrays. Defaults to the bundled sample.
        start_lr: float. First rate. Defaults to 1e-7.
        end_lr: float. Last rate. Defaults to 10.
        steps: int. Number of batches (at least 10). Defaults to 200.
        optimizer: str. As in `train`. Defaults to `"adam"`.
        smoothing: float. Exponential smoothing factor in [0, 1).
            Defaults to 0.98.
        divergence: float. Stop when the smoothed loss exceeds this many
            times its minimum. Defaults to 4.
        method: str. `"steepest"` (where the smoothed loss falls fastest)
            or `"minimum/10"`. Defaults to `"steepest"`.
        output: path of the PNG plot to save; `None` saves none.
        overwrite: bool. Replace an existing `output` file.
        seed: int. Random seed. Defaults to 0.
        **fields: `CNNSpec` fields overriding the spec's.

    Returns:
        `LRFindResult` with the curve and the suggestion.

    Raises:
        ValueError: bad rates, steps, smoothing or method, or an existing
            `output` without `overwrite`. Checked before any training.
    """
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")
    if start_lr >= end_lr:
        raise ValueError(f"start_lr must be smaller than end_lr. "
                         f"Received: start_lr={start_lr!r}, end_lr={end_lr!r}")
    _check_positive_int("steps", steps, minimum=10)
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1). Received: smoothing={smoothing!r}")
    if not isinstance(divergence, (int, float)) or divergence <= 1:
        raise ValueError(f"divergence must be a number > 1. Received: divergence={divergence!r}")
    if method not in LR_FIND_METHODS:
        raise ValueError(f"Unknown suggestion method; allowed: {', '.join(LR_FIND_METHODS)}. "
                         f"Received: method={method!r}")
    if str(optimizer).lower() not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer; allowed: {', '.join(OPTIMIZERS)}. "
                         f"Received: optimizer={optimizer!r}")
    if output is not None:
        output = Path(output)
        if output.suffix.lower() != ".png":
            raise ValueError(f"The plot is saved as PNG; the output must end in .png. "
                             f"Received: output={str(output)!r}")
        if output.is_dir() or (output.exists() and not overwrite):
            raise ValueError(f"{str(output)!r} already exists; pass --overwrite to replace it "
                             f"or choose another --output. Received: output={str(output)!r}")

    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    is_model = isinstance(model, keras.Model)
    if is_model:
        net = _clone(model)
        if fields:
            raise ValueError(f"Spec fields apply to a spec, not to a built model. "
                             f"Received: {sorted(fields)}")
        if isinstance(dataset, (str, os.PathLike)):
            dataset, _ = _load_data(dataset, validation_split=validation_split,
                                    image_size=image_size, color_mode=color_mode,
                                    batch_size=batch_size, data_dir=data_dir,
                                    download=download, seed=seed)
        data = dataset
    else:
        bundle, spec, image_size = _data_and_spec(
            model, fields, dataset, validation_split=validation_split, image_size=image_size,
            color_mode=color_mode, batch_size=batch_size, data_dir=data_dir,
            download=download, seed=seed)
        net = build_model(spec, bundle, image_size=image_size, normalize=normalize)
        data = bundle
    batches = _batches(data, batch_size)

    saved_weights = [w.numpy() for w in net.weights] if net is model else None
    loss = model.loss if is_model and getattr(model, "compiled", False) else None
    opt = make_optimizer(optimizer, float(start_lr), weight_decay=weight_decay)
    if loss is not None:
        net.compile(optimizer=opt, loss=loss)
    else:
        compile_model(net, optimizer=opt)

    factor = (end_lr / start_lr) ** (1.0 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, diverged = 0.0, math.inf, False
    try:
        for i in range(steps):
            lr = start_lr * factor ** i
            net.optimizer.learning_rate = lr
            x, y = next(batches)
            value = float(net.train_on_batch(x, y, return_dict=True)["loss"])
            avg = smoothing * avg + (1 - smoothing) * value
            smooth = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if not math.isfinite(smooth) or (i > 0 and smooth > divergence * best):
                diverged = True
                break
            best = min(best, smooth)
    finally:
        if saved_weights is not None:
            for w, v in zip(net.weights, saved_weights):
                w.assign(v)
    logger.info("Range test: %d steps from %.2g to %.2g%s", len(lrs), lrs[0], lrs[-1],
                " (stopped: the loss diverged)" if diverged else "")
    steepest, minimum = suggest_learning_rate(lrs, smoothed)
    suggestion = steepest if method == "steepest" else minimum / 10
    result = LRFindResult(learning_rates=lrs, losses=losses,
                          smoothed_losses=[float(v) for v in np.asarray(smoothed)],
                          suggestion=float(suggestion), steepest=steepest, minimum=minimum,
                          method=method, diverged=diverged)
    if output is not None:
        result.plot_path = plot_lr_find(result, output)
    return result
