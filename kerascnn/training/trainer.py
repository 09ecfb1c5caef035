"""`train`: one network, one dataset, one run folder (and resume after a kill)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import keras

from kerascnn import runtime
from kerascnn.analysis import analyze
from kerascnn.builders import check_fits_in_memory
from kerascnn.checks import (MAX_STEPS_PER_EXECUTION, InputError, check_choice, check_float,
                             check_int, check_seed, received)
from kerascnn.files import read_yaml
from kerascnn.runs import CHECKPOINT_DIR, RunWriter, prepare_output_dir, read_history
from kerascnn.schedules import validate_schedule
from kerascnn.training.callbacks import History
from kerascnn.training.distribute import (STRATEGIES, check_precision, dtype_policy, is_chief,
                                          make_strategy, op_determinism, parse_tf_config,
                                          resolve_precision)
from kerascnn.training.fitting import fit_model
from kerascnn.training.optimizers import check_optimizer, compile_model, make_optimizer
from kerascnn.training.resolve import build_model, clone_with_weights, data_and_spec

logger = logging.getLogger(__name__)

# options that may change between a killed run and its `resume`
_RESUMABLE_CHANGES = ("epochs", "resume", "overwrite", "tensorboard", "verbose")


@dataclasses.dataclass
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
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get("diverged"))


def _check_options(*, epochs, batch_size, optimizer, learning_rate, weight_decay, schedule,
                   early_stopping, strategy, steps_per_execution, seed, output_dir, tensorboard,
                   resume, overwrite=False) -> str:
    check_int("epochs", epochs)
    check_seed(seed)
    if batch_size is not None:
        check_int("batch_size", batch_size)
    check_int("steps_per_execution", steps_per_execution, maximum=MAX_STEPS_PER_EXECUTION)
    check_optimizer(optimizer)
    check_float("learning_rate", learning_rate)
    if weight_decay is not None:
        check_float("weight_decay", weight_decay, inclusive=True)
    schedule = validate_schedule(schedule)
    if early_stopping is not None and (isinstance(early_stopping, bool)
                                       or not isinstance(early_stopping, int)
                                       or early_stopping < 0):
        raise InputError(f"early_stopping is a patience in epochs (0 or None turns it off). "
                         f"{received('early_stopping', early_stopping)}")
    check_choice("strategy", strategy, STRATEGIES)
    if output_dir is None and (tensorboard or resume):
        what = "tensorboard" if tensorboard else "resume"
        raise InputError(f"{what}=True needs an output_dir to write to. "
                         f"Received: output_dir=None")
    if resume and overwrite:
        raise InputError("Give resume (continue the run) or overwrite (start again), not both. "
                         "Received: resume=True, overwrite=True")
    if resume and strategy == "multiworker":
        raise InputError("resume is not supported with strategy='multiworker' (each worker "
                         "would restore a different state); restart the whole job instead. "
                         "Received: resume=True, strategy='multiworker'")
    return schedule


def _refuse_finished(out: Path) -> None:
    if (out / "metrics.json").is_file() and not (out / CHECKPOINT_DIR).is_dir():
        raise InputError(f"The run in {str(out)!r} has already finished; nothing to resume. "
                         f"Pass --overwrite to train again. {received('output_dir', str(out))}")


def _check_resume(out: Path, config: dict, spec) -> bool:
    """Whether `out` holds a run to continue; raises if it holds another run."""
    if not out.is_dir() or not any(out.iterdir()):
        return False
    config_path = out / "config.yaml"
    if not config_path.is_file() or not (out / "spec.yaml").is_file():
        raise InputError(f"Output folder {str(out)!r} holds files but no interrupted run "
                         f"(config.yaml, spec.yaml) to resume; pass --overwrite or choose "
                         f"another --output-dir. {received('output_dir', str(out))}")
    _refuse_finished(out)
    old = read_yaml(config_path) or {}
    diffs = sorted(k for k in set(old) | set(config)
                   if k not in _RESUMABLE_CHANGES and old.get(k) != config.get(k))
    old_spec = read_yaml(out / "spec.yaml")
    if old_spec != json.loads(json.dumps(spec.to_dict())):
        diffs.insert(0, "spec")
    if diffs:
        raise InputError(f"Cannot resume {str(out)!r}: these options differ from the "
                         f"interrupted run: {', '.join(diffs)}. Use the same options, or "
                         f"--overwrite to start again. {received('output_dir', str(out))}")
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

    The run folder (see `kerascnn.runs`) holds `spec.yaml`, `config.yaml`,
    `history.csv` (rewritten after each epoch), `model.keras` (the best
    weights by validation loss, with class names), `metrics.json` and
    `manifest.json`. While training runs it also holds `checkpoints/`
    (the best weights so far and the `BackupAndRestore` state), removed when
    training ends; after a kill, the same call with `resume=True` continues
    from the last finished epoch.

    Args:
        spec: `CNNSpec`, dict of spec fields, preset name (`"simple"`,
            `"lenet5"`, ...), path of a spec YAML/JSON file, or a callable
            `(input_shape, num_classes) -> CNNSpec`.
            A preset takes the dataset's input shape and class count.
            Defaults to `"simple"`.
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
        seed: int. Seeds Python, NumPy, TensorFlow and the data split.
            Defaults to 0.
        deterministic: bool. Turn on TensorFlow's op determinism. Same
            seed, same history, bit for bit, holds only with
            `deterministic=True` (slower). Without it the seed fixes the
            data split, the order of the batches and the initial weights,
            but oneDNN and TensorFlow's thread pools may sum in a different
            order from run to run, so two runs' losses usually differ in the
            last digits (and those differences grow over epochs).
            Defaults to `False`.
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
        InputError: a bad option, a spec that does not fit the data, an
            output folder that holds results (without `overwrite`). All
            checks run before anything is written.

    Example:

    >>> result = kerascnn.train("simple", epochs=2, output_dir="runs/simple")
    >>> result.metrics["test_accuracy"]
    """
    runtime.start()
    schedule = _check_options(
        epochs=epochs, batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate,
        weight_decay=weight_decay, schedule=schedule, early_stopping=early_stopping,
        strategy=strategy, steps_per_execution=steps_per_execution, seed=seed,
        output_dir=output_dir, tensorboard=tensorboard, resume=resume, overwrite=overwrite)
    check_precision(mixed_precision)
    tf_config = parse_tf_config() if strategy == "multiworker" else None
    chief = is_chief(tf_config)
    out = Path(output_dir) if output_dir is not None else None
    writer = RunWriter(out) if out is not None and chief else None
    if writer is not None:
        if resume:
            _refuse_finished(out)
        else:
            prepare_output_dir(out, overwrite=overwrite)

    # a multi-worker strategy must exist before TensorFlow runs any op
    dist = make_strategy(strategy)
    precision = resolve_precision(mixed_precision)

    keras.utils.set_random_seed(seed)
    bundle, spec, image_size = data_and_spec(
        spec, fields, dataset, validation_split=validation_split, image_size=image_size,
        color_mode=color_mode, batch_size=batch_size, data_dir=data_dir, download=download,
        seed=seed)
    analysis = analyze(spec)  # raises a clear error for a network that cannot exist
    check_fits_in_memory(analysis)  # ... or cannot exist on this machine

    config = {
        "dataset": bundle.source,
        "dataset_fingerprint": bundle.fingerprint,
        "validation_split": bundle.validation_split,
        "image_size": list(image_size) if image_size else None,
        "color_mode": color_mode,
        "normalize": bool(normalize),
        "epochs": epochs,
        "batch_size": batch_size if isinstance(dataset, str) else bundle.batch_size,
        "optimizer": str(optimizer).lower(),
        "learning_rate": float(learning_rate),
        "weight_decay": weight_decay,
        "schedule": schedule,
        "early_stopping": early_stopping or 0,
        "seed": seed,
        "data_seed": bundle.seed,
        "deterministic": bool(deterministic),
        "mixed_precision": precision,
        "jit": bool(jit),
        "steps_per_execution": steps_per_execution,
        "strategy": strategy,
        "tensorboard": bool(tensorboard),
    }
    resuming = False
    if writer is not None:
        if resume:
            resuming = _check_resume(out, config, spec)
        elif out.is_dir():  # overwrite=True: remove the old run's files, nothing else
            writer.remove_run_files(extra=("logs", "lr_find.png"))

    # ---- everything is valid: write
    # training state (best weights, BackupAndRestore): in the run folder; a worker that
    # writes no folder keeps its own in a scratch folder; without output_dir, in memory
    scratch = state_dir = None
    if writer is not None:
        writer.write_spec(spec)
        writer.write_config(config)
        state_dir = writer.checkpoint_dir
    elif out is not None:
        scratch = tempfile.TemporaryDirectory(prefix="kerascnn-train-")
        state_dir = Path(scratch.name)
    logger.info("Training a network of %s parameters (%s%s) on %s: %d training, "
                "%d validation images%s", f"{analysis.total_params:,}", precision,
                ", XLA" if jit else "", config["dataset"], bundle.num_train,
                bundle.num_validation, "; resuming" if resuming else "")
    history_path = writer.path / "history.csv" if writer is not None else None
    previous_rows = []
    if resuming and history_path.is_file():
        previous_rows = read_history(history_path)
    has_validation = bundle.validation is not None and (bundle.num_validation or 0) > 0

    try:
        with op_determinism(deterministic), dtype_policy(precision):
            with dist.scope():
                model = build_model(spec, bundle, image_size=image_size, normalize=normalize)
            fit = fit_model(
                model, bundle.train, validation_data=bundle.validation if has_validation
                else None, epochs=epochs, optimizer=optimizer, learning_rate=learning_rate,
                weight_decay=weight_decay, schedule=schedule, early_stopping=early_stopping,
                jit_compile=jit, steps_per_execution=steps_per_execution, strategy=dist,
                history=History(history_path, previous_rows),
                checkpoint_dir=state_dir,
                backup_dir=state_dir / "backup" if state_dir is not None else None,
                tensorboard_dir=writer.path / "logs" if tensorboard and writer is not None
                else None,
                verbose=verbose, callbacks=list(callbacks))
            model = fit.model
            if precision != "float32":
                out_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
                if out_dtype != "float32":
                    logger.warning("The output layer computes in %s under %s; the loss may "
                                   "be imprecise.", out_dtype, precision)
            if strategy == "multiworker":
                # Distributed, each worker would score its own shard of the test split and
                # the shards' accuracies would be averaged; instead every worker scores the
                # whole split on a local copy with the same weights (no collective op, the
                # same result on all).
                model = clone_with_weights(model)
                compile_model(model, optimizer=make_optimizer(
                    optimizer, float(learning_rate), weight_decay=weight_decay))
                model.optimizer.build(model.trainable_variables)  # saved like a trained one
            test = model.evaluate(bundle.test, verbose=0, return_dict=True)
        metrics = _metrics(fit, test)
        if fit.diverged:
            logger.info("Training stopped after %d epoch(s): the loss became NaN (learning "
                        "rate %s too high?)", metrics["epochs_run"], learning_rate)
        result = TrainResult(
            model=model, spec=spec, history=fit.history, metrics=metrics, config=config,
            output_dir=out if chief else None, seconds=fit.seconds,
            images_per_second=(fit.epochs_trained * bundle.num_train / fit.seconds
                               if fit.seconds > 0 else 0.0))
        if writer is not None:
            writer.paths["history.csv"] = history_path
            writer.write_model(model, class_names=bundle.class_names, spec=spec, config=config)
            writer.write_metrics(metrics)
            writer.write_manifest(
                seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
                command_line=command_line, kind="train",
                status="diverged" if result.diverged else "complete",
                dataset=config["dataset"], epochs_run=metrics["epochs_run"],
                seconds=round(fit.seconds, 2), resumed=resuming)
            if tensorboard:
                writer.paths["logs"] = writer.path / "logs"
            shutil.rmtree(state_dir, ignore_errors=True)
            result.paths = dict(writer.paths)
        return result
    finally:
        if scratch is not None:
            scratch.cleanup()


def _metrics(fit, test: dict) -> dict[str, Any]:
    rows = fit.history
    metrics = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "best_epoch": fit.best_epoch,
        f"best_{fit.monitor}": fit.best,
        "epochs_run": len(rows),
        "stopped_early": fit.stopped_early,
        "diverged": fit.diverged,
    }
    if fit.best_epoch is not None:
        best_row = next((r for r in rows if r["epoch"] == fit.best_epoch), {})
        for key in ("val_accuracy", "accuracy"):
            if key in best_row:
                metrics[f"best_{key}"] = best_row[key]
    return metrics
