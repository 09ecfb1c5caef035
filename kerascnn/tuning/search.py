"""`kerascnn.tune`: search CNN architectures and training settings within a budget.

The engines are keras-tuner's (`hyperband`, `bayesian`, `random`, `grid`);
kerascnn adds what they lack (`kerascnn.tuning.oracles`,
`kerascnn.tuning.tuners`):

- **No wasted trial.** The oracles resample a candidate that the analysis says
  cannot exist (a feature map below 1x1) or that breaks `max_params` /
  `max_macs`. `grid` walks only the valid combinations. A space in which
  nothing is valid is an error before training.
- **Budget.** `max_trials` caps every tuner, Hyperband included (its trials
  that continue an earlier trial count too); `epochs` is the per-trial maximum
  (Hyperband's `max_epochs`); `time_budget` stops the search cleanly: the
  oracle hands out no trial after the deadline and a running trial stops at the
  end of its current epoch; finished trials are kept and results written.
  Early stopping (`patience`) runs inside every trial.
- **Results** in `<directory>/<project_name>/`: keras-tuner's own state
  (`oracle.json`, `trial_*/`), `leaderboard.csv` and `leaderboard.json`
  (rewritten atomically after every trial), `search.yaml` (the resolved
  configuration, usable again as `--config`), `manifest.json`, and `best/`
  with `model.keras`, `spec.yaml`, `metrics.json`.
- **Resume.** The same call again continues the search (a larger `max_trials`
  adds trials, finished ones are never rerun). A changed space, dataset, tuner
  or epochs is refused unless `overwrite=True`.
- **Distributed search** (keras-tuner's chief/worker mode over gRPC): the
  resampling, the deadline, the leaderboard and the progress lines all live in
  the oracle, which runs on the chief, so workers only train.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import keras

from kerascnn import runtime
from kerascnn.checks import (InputError, check_choice, check_int, format_duration,
                             parse_duration, received)
from kerascnn.data import load_dataset, network_input_shape, preprocessing_layers
from kerascnn.distributed import resolve
from kerascnn.files import write_json, write_yaml
from kerascnn.runs import manifest, save_model
from kerascnn.search_space import SearchSpace
from kerascnn.tuning.hypermodel import CNNHyperModel
from kerascnn.tuning.leaderboard import Reporter, leaderboard_rows, write_leaderboard
from kerascnn.tuning.resume import SEARCH_FILE, check_resume, search_yaml
from kerascnn.tuning.storage import prune_checkpoints
from kerascnn.tuning.tuners import OBJECTIVE, TUNERS, make_tuner
from kerascnn.tuning.worker import run_worker

logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """What `tune` found.

    Attributes:
        best_spec: `CNNSpec` of the best trial.
        best_model_path: `Path` of `best/model.keras`.
        best_hyperparameters: dict of the best trial's searched values.
        test_accuracy, test_loss: float, from one evaluation on the test split.
        leaderboard: list of dict rows, best first (as `leaderboard.json`).
        directory: `Path` of `<directory>/<project_name>`.
        seconds: float, wall-clock time of this call.
        stopped_by_budget: bool, whether `time_budget` ended the search.
    """

    best_spec: Any
    best_model_path: Path
    best_hyperparameters: dict[str, Any]
    test_accuracy: float
    test_loss: float
    leaderboard: list[dict[str, Any]]
    directory: Path
    seconds: float
    stopped_by_budget: bool = False
    best_trial_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def tune(
    dataset: Any = "fashion_mnist_sample",
    *,
    space: Optional[Mapping[str, Any]] = None,
    tuner: str = "hyperband",
    max_trials: int = 8,
    epochs: int = 8,
    time_budget: Any = None,
    max_params: Optional[int] = None,
    max_macs: Optional[int] = None,
    patience: int = 2,
    batch_size: int = 128,
    validation_split: float = 0.1,
    image_size: Optional[Sequence[int]] = None,
    color_mode: Optional[str] = None,
    data_dir: Optional[str] = None,
    download: bool = False,
    per_block_filters: bool = False,
    augmentation: Any = None,
    directory: str = "runs",
    project_name: str = "tune",
    overwrite: bool = False,
    seed: int = 0,
    max_failed_trials: int = 3,
    keep_checkpoints: int = 3,
    tensorboard: bool = False,
    distributed: Optional[str] = None,
    oracle_address: Optional[str] = None,
    worker_id: Optional[str] = None,
    chief_timeout: Any = None,
    verbose: int = 0,
    command_line: Optional[Sequence[str]] = None,
) -> TuneResult:
    """Search CNN architectures and training settings for a dataset.

    Args:
        dataset: str or `DatasetBundle`. Anything `kerascnn.load_dataset`
            takes, or an already loaded bundle. Defaults to the bundled
            `"fashion_mnist_sample"`.
        space: dict. Hyperparameter entries (see `kerascnn.hypermodel`):
            each fixed, a list of choices, a `(min, max)` tuple or a
            `{min, max, step, sampling}` mapping. Missing entries take
            their documented defaults. Defaults to `None` (all defaults).
        tuner: str. `"hyperband"`, `"bayesian"`, `"random"` or `"grid"`.
            Defaults to `"hyperband"`.
        max_trials: int. The most trials, every tuner (Hyperband's
            continuation trials count). Defaults to 8.
        epochs: int. Epochs per trial at most. Defaults to 8.
        time_budget: seconds or a duration string (`"15m"`). After it no
            trial starts, a running trial stops at the end of its epoch, and
            results are written. Defaults to `None` (no limit).
        max_params, max_macs: int. Candidates above these are resampled
            before training. Defaults to `None`.
        patience: int. Early-stopping patience (epochs without a better
            validation loss) inside each trial; 0 turns it off. Defaults to 2.
        batch_size, validation_split, image_size, color_mode, data_dir,
            download: passed
            to `kerascnn.load_dataset`.
        per_block_filters: bool. Search filters per block. Defaults to
            `False`.
        augmentation: list. Entries scaled by `augmentation_strength`.
        directory: str. Parent folder of the search. Defaults to `"runs"`.
        project_name: str. The search's folder name. Defaults to `"tune"`.
        overwrite: bool. Start over instead of resuming, and accept a
            changed configuration. Defaults to `False`.
        seed: int. Seed of the oracle, the data split and Keras. Defaults to 0.
        max_failed_trials: int. Consecutive failed trials (a crash, a NaN
            loss) that end the search. Defaults to 3.
        keep_checkpoints: int. Trials whose weights stay on disk (the best
            ones); the others' are deleted as the search goes, the
            leaderboard keeps every trial. Defaults to 3.
        tensorboard: bool. Write TensorBoard logs (scalars and the HParams view)
            to `<directory>/<project_name>/tensorboard`. Defaults to `False`.
        distributed: str. `"chief"` serves the oracle and, when no trial is
            left, writes the results; `"worker"` trains the chief's trials
            and returns a `kerascnn.distributed.WorkerResult`. Defaults to
            `None` (local, unless keras-tuner's `KERASTUNER_*` variables are
            set). See docs/distributed.md.
        oracle_address: str. `HOST:PORT` of the chief. Defaults to
            `127.0.0.1:8000`.
        worker_id: str. A worker's unique name; restarted with the same id
            it picks up its trial.
        chief_timeout: seconds or a duration. How long a worker waits for
            its chief. Defaults to 10 minutes.
        verbose: int. 1 or more shows Keras's epoch progress bars.
        command_line: list of str recorded in `manifest.json`. Defaults to
            `sys.argv`.

    Returns:
        A `TuneResult`.

    Raises:
        InputError: a bad argument, a space in which no
            architecture is valid or meets the limits, or a changed
            configuration on resume; raised before anything is written.

    Example:

    >>> result = kerascnn.tune(max_trials=4, epochs=2, space={"conv_blocks": (1, 3)})
    >>> result.test_accuracy, result.best_model_path
    """
    started = time.time()
    runtime.start()
    # ---- validate everything before any file exists
    check_choice("tuner", tuner, TUNERS)
    check_int("max_trials", max_trials)
    check_int("epochs", epochs)
    check_int("patience", patience, minimum=0)
    check_int("batch_size", batch_size)
    check_int("max_failed_trials", max_failed_trials)
    check_int("keep_checkpoints", keep_checkpoints)
    dist = resolve(distributed, oracle_address, worker_id, chief_timeout)
    if dist is not None and dist.role == "worker" and overwrite:
        raise InputError("overwrite is for the chief or a local search; a worker never deletes "
                         "the search. Received: overwrite=True")
    budget = parse_duration(time_budget)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0 < validation_split < 1:
        raise InputError(f"A search chooses by validation accuracy, so validation_split must be "
                         f"in (0, 1). Received: validation_split={validation_split!r}")
    if space is None:
        space = {}
    if not isinstance(space, Mapping):
        raise InputError(f"space must be a mapping of hyperparameter names to values. "
                        f"Received: space={space!r}")
    for name, value in (("directory", directory), ("project_name", project_name)):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise InputError(f"{name} must be a non-empty folder name. Received: {name}={value!r}")
    if any(sep in str(project_name) for sep in ("/", "\\")) or str(project_name) in (".", ".."):
        raise InputError(f"project_name is a folder name, not a path. "
                         f"Received: project_name={project_name!r}")
    # the space is checked once without data (cheap, clear errors before loading)
    checked = SearchSpace((8, 8, 1), 2, per_block_filters=per_block_filters,
                          augmentation=augmentation, max_params=max_params, max_macs=max_macs,
                          **dict(space))
    source = str(dataset) if isinstance(dataset, (str, Path)) else str(
        getattr(dataset, "source", dataset))
    config = {
        "dataset": source,
        "dataset_fingerprint": None,  # known once the data is loaded
        "image_size": list(image_size) if image_size else None,
        "validation_split": float(validation_split),
        "batch_size": batch_size,
        "tuner": tuner,
        "max_trials": max_trials,
        "epochs": epochs,
        "time_budget": budget,
        "patience": patience,
        "max_params": max_params,
        "max_macs": max_macs,
        "per_block_filters": per_block_filters,
        "augmentation": [dict(e) for e in checked.augmentation],
        "seed": seed,
        "objective": OBJECTIVE,
        "space": checked.to_config(),
    }
    project_dir = Path(directory) / str(project_name)
    if dist is None or dist.role != "worker":
        # a changed configuration is refused before the data is even loaded
        check_resume(project_dir, config, overwrite)

    with _held_logs("kerascnn.data") as held:  # shown once the inputs are known to be good
        bundle = _load(dataset, batch_size=batch_size, validation_split=validation_split,
                       image_size=image_size, color_mode=color_mode, data_dir=data_dir,
                       download=download, seed=seed)
    network_shape, preprocessing = _preprocessing(bundle, image_size)

    hypermodel = CNNHyperModel(network_shape, bundle.num_classes,
                               preprocessing=preprocessing,
                               raw_input_shape=tuple(bundle.input_shape),
                               per_block_filters=per_block_filters, augmentation=augmentation,
                               max_params=max_params, max_macs=max_macs, seed=seed,
                               **dict(space))
    search_space = hypermodel.space
    search_space.assert_feasible()
    if tuner == "grid" and not search_space.is_finite():
        next(iter(search_space.enumerate()))  # raises the "needs a finite set" error
    config.update(dataset_fingerprint=str(bundle.fingerprint),
                  input_shape=list(network_shape), num_classes=int(bundle.num_classes),
                  space=search_space.to_config())
    is_worker = dist is not None and dist.role == "worker"
    # the data's fingerprint is known now: changed data is refused too
    resuming = False if is_worker else check_resume(project_dir, config, overwrite)
    for record in held:
        logging.getLogger(record.name).handle(record)
    if is_worker:  # trains the chief's trials, writes no result
        return run_worker(
            dist, project_dir, search_yaml(config),
            lambda: make_tuner(tuner, hypermodel, max_trials=max_trials, epochs=epochs,
                               directory=str(directory), project_name=str(project_name),
                               seed=seed + 1, max_failed_trials=max_failed_trials),
            bundle, epochs=epochs, patience=patience, verbose=verbose, seed=seed)

    # ---- from here on files are written
    keras.utils.set_random_seed(seed)
    if overwrite and project_dir.exists():
        shutil.rmtree(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(project_dir / SEARCH_FILE, search_yaml(config))
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="running"))

    deadline = started + budget if budget is not None else None
    reporter = Reporter(project_dir, search_space, max_trials, deadline, started=started)
    kt_tuner = make_tuner(tuner, hypermodel, max_trials=max_trials, epochs=epochs,
                          directory=str(directory), project_name=str(project_name),
                          overwrite=False, seed=seed + 1, deadline=deadline,
                          max_failed_trials=max_failed_trials, reporter=reporter,
                          keep_checkpoints=keep_checkpoints,
                          distributed=dist)  # a chief serves the oracle instead of training
    done_before = len(kt_tuner.oracle.end_order)
    if resuming:
        logger.info("Resuming %s: %d trial(s) done, up to %d in all.", project_dir,
                    done_before, max_trials)
    logger.info("Searching %s (%s, %d classes, %d training images) with %s: up to %d trials "
                "of up to %d epochs%s.", config["dataset"], "x".join(map(str, network_shape)),
                bundle.num_classes, bundle.num_train, tuner, max_trials, epochs,
                f", time budget {format_duration(budget)}" if budget else "")

    callbacks = []
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    if tensorboard:
        # keras-tuner gives each trial its own log folder and adds the HParams callback
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(project_dir / "tensorboard")))
    with warnings.catch_warnings():
        # Keras warns that `shuffle` is ignored for a tf.data.Dataset (ours is
        # shuffled by the pipeline) and about optimizer variables when the
        # warm start of a Hyperband round loads weights only
        warnings.filterwarnings("ignore", message=".*shuffle.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
        kt_tuner.search(bundle.train, validation_data=bundle.validation, epochs=epochs,
                        callbacks=callbacks, verbose=1 if verbose and verbose > 0 else 0)

    if not kt_tuner.oracle.ongoing_trials:  # the search is over: keep the best K only
        prune_checkpoints(kt_tuner.oracle, project_dir, keep_checkpoints, final=True)
    rows = leaderboard_rows(kt_tuner.oracle, search_space)
    write_leaderboard(project_dir, rows)
    stopped = kt_tuner.oracle.stopped_by_budget or any(
        r["stopped_by"] == "budget" for r in rows if r.get("stopped_by"))
    if stopped:
        logger.info("Time budget of %s reached: stopping with %d trial(s) done.",
                    format_duration(budget), len(kt_tuner.oracle.end_order))
    best_trials = [t for t in kt_tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not best_trials:
        reason = kt_tuner.oracle.failed_out or "no trial completed"
        raise RuntimeError(f"No trial completed ({reason}); see "
                           f"{project_dir / 'leaderboard.json'}.")
    best = best_trials[0]
    result = _finish(kt_tuner, best, hypermodel, bundle, project_dir, rows, started, stopped,
                     seed, config, command_line)
    return result


@contextlib.contextmanager
def _held_logs(name: str):
    """Hold back the log records of logger `name` (and its children).

    A bad input must end in one error line; the data module's "Dataset ..."
    line is replayed by the caller once the space is known to fit the data.
    """
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record):
            held.append(record)

    target = logging.getLogger(name)
    handler, propagate = Hold(), target.propagate
    target.addHandler(handler)
    target.propagate = False
    try:
        yield held
    finally:
        target.removeHandler(handler)
        target.propagate = propagate


def _load(dataset, **kw):
    if hasattr(dataset, "train") and hasattr(dataset, "num_classes"):
        return dataset
    if not isinstance(dataset, (str, Path)):
        raise InputError(f"dataset must be a name, a path or a DatasetBundle. "
                         f"{received('dataset', dataset)}")
    image_size = kw.pop("image_size")
    if image_size is not None and len(tuple(image_size)) == 1:
        image_size = (image_size[0], image_size[0])
    return load_dataset(str(dataset), image_size=tuple(image_size) if image_size else None,
                        **kw)


def _preprocessing(bundle, image_size):
    """The network input shape and a factory of fresh preprocessing layers per model."""
    shape = tuple(network_input_shape(bundle, image_size))
    return shape, lambda: list(preprocessing_layers(bundle, image_size=image_size))


def _finish(kt_tuner, best, hypermodel, bundle, project_dir: Path, rows, started: float,
            stopped: bool, seed: int, config, command_line) -> TuneResult:
    """Load the best checkpoint, evaluate it once on the test split, write best/."""
    space = hypermodel.space
    values = space.values_from(best.hyperparameters.values)
    spec = space.spec(values)
    # The best trial's own checkpoint, into a freshly built model. Not
    # `kt_tuner.load_model`: Hyperband's version first loads the weights of the
    # trial a continuation started from, which --keep-checkpoints may have
    # deleted and which the best checkpoint overwrites anyway.
    keras.backend.clear_session()
    gc.collect()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
        model = hypermodel.build(best.hyperparameters.copy())
        model.load_weights(kt_tuner._get_checkpoint_fname(best.trial_id))
    evaluation = model.evaluate(bundle.test, verbose=0, return_dict=True)
    test_accuracy = float(evaluation.get("accuracy", evaluation.get("compile_metrics", 0.0)))
    test_loss = float(evaluation["loss"])
    if model.optimizer is not None and not model.optimizer.built:
        # saved with its (fresh) slots, so loading the file does not warn about them
        model.optimizer.build(model.trainable_variables)
    best_dir = project_dir / "best"
    best_dir.mkdir(parents=True, exist_ok=True)
    searched = {k: values[k] for k in space.hp_names(values)}
    model_path = save_model(model, best_dir / "model.keras",
                            class_names=list(bundle.class_names or []),
                            spec=spec, trial_id=best.trial_id, hyperparameters=values)
    spec.save(best_dir / "spec.yaml")
    row = next((r for r in rows if r["trial_id"] == best.trial_id), {})
    metrics = {
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        "val_accuracy": float(best.score), "trial_id": best.trial_id,
        "params": row.get("params"), "macs": row.get("macs"),
        "learning_rate": values.get("learning_rate"), "optimizer": values.get("optimizer"),
        "hyperparameters": searched,
        "final_model": "best checkpoint of the best trial (not retrained)",
    }
    write_json(best_dir / "metrics.json", metrics)
    seconds = time.time() - started
    oracle = kt_tuner.oracle
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="finished",
        trials=len(oracle.trials), completed=sum(t.status == "COMPLETED"
                                                 for t in oracle.trials.values()),
        best_trial=best.trial_id, test_accuracy=test_accuracy, seconds=round(seconds, 1),
        stopped_by_budget=stopped, rejected_candidates=oracle.rejected))
    del model
    keras.backend.clear_session()
    gc.collect()
    return TuneResult(best_spec=spec, best_model_path=model_path, best_hyperparameters=searched,
                      test_accuracy=test_accuracy, test_loss=test_loss, leaderboard=rows,
                      directory=project_dir, seconds=seconds, stopped_by_budget=stopped,
                      best_trial_id=best.trial_id)
