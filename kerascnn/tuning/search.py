"""`kerascnn.tune`: the fastest way to a good network for a given time budget.

The budget is a contract (`kerascnn.tuning.budget`): the call ends within
`time_budget` (+5%), search, final training, test and writing included:

1. **Search** (about half): by default successive halving on data x epochs
   (`kerascnn.tuning.halving`): many candidates for an epoch on a stratified
   fraction of the training images, the best third promoted to more data and
   epochs, every trial sized in seconds predicted by the cost model
   (`kerascnn.tuning.cost`) and skipped when it cannot finish in time. The
   first candidates are known-good seeds (the keras.io convnet with batch
   norm, a VGG-style net), trained at the highest rung that fits.
   Every candidate the analysis rejects is resampled (no wasted trial).
   keras-tuner's `hyperband`, `bayesian`, `random` and `grid` remain.
2. **Final training** (the rest): the winner trained again on train +
   validation with a schedule that ends when the budget does
   (`kerascnn.tuning.final`); if that is interrupted or worse, the search
   checkpoint stays the result and `best/metrics.json` says why.
3. **Test** once, write `best/`.

Results in `<directory>/<project_name>/`: keras-tuner's state (`oracle.json`,
`trial_*/`), `leaderboard.csv`/`.json` (after every trial), `search.yaml`
(reusable as `--config`), `budget.json` (the budget spent so far),
`manifest.json`, and `best/` (`model.keras`, `spec.yaml`, `metrics.json`),
written from the end of the first trial on (anytime).

Resume: the same call again continues (after a kill -9 too, during the final
training included); what was spent counts against the same budget. A changed
space, dataset, tuner or epochs is refused unless `overwrite=True`.
Distributed search: the oracle (resampling, rungs, deadline, leaderboard)
runs on the chief; workers train whatever rung it hands them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import keras

from kerascnn import runtime
from kerascnn.analysis import analyze
from kerascnn.checks import (MAX_SEED, InputError, check_choice, check_int, format_duration,
                             parse_duration, received)
from kerascnn.data import load_dataset, network_input_shape, preprocessing_layers
from kerascnn.distributed import resolve
from kerascnn.files import read_json, write_json, write_yaml
from kerascnn.runs import manifest
from kerascnn.search_space import SearchSpace
from kerascnn.spec import CNNSpec
from kerascnn.tuning.budget import Budget
from kerascnn.tuning.cost import CostModel
from kerascnn.tuning.fidelity import Subsets
from kerascnn.tuning.final import FINAL_AUGMENTATION, choose_winner, final_train
from kerascnn.tuning.halving import observe_trials
from kerascnn.tuning.hypermodel import CNNHyperModel, compile_trial
from kerascnn.tuning.leaderboard import Reporter, leaderboard_rows, write_leaderboard
from kerascnn.tuning.results import BestWriter, plain_compile
from kerascnn.tuning.resume import SEARCH_FILE, check_resume, search_yaml
from kerascnn.tuning.storage import prune_checkpoints
from kerascnn.tuning.tuners import OBJECTIVE, TUNERS, make_tuner
from kerascnn.tuning.worker import run_worker

logger = logging.getLogger(__name__)

BUDGET_FILE = "budget.json"
FINAL_DIR = "final"
# seconds between two rewrites of best/ from a new leader during the search
LEADER_EVERY = 10.0
# seconds to write best/ (model, spec, metrics) and the manifest, beyond testing
AFTER_FINAL_SECONDS = 3.0


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
        stopped_by_budget: bool, whether the time budget ended the search.
        best_trial_id: str, the trial whose network `best/` holds.
        final_model: str, which model `best/model.keras` is and why.
        extra: dict, more figures (budget phases, skipped candidates, ...).
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
    final_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def tune(
    dataset: Any = "fashion_mnist_sample",
    *,
    space: Optional[Mapping[str, Any]] = None,
    tuner: str = "halving",
    max_trials: Optional[int] = None,
    epochs: int = 8,
    time_budget: Any = "3m",
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
    started: Optional[float] = None,
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
        tuner: str. `"halving"` (successive halving on data x epochs, sized
            in predicted seconds: `kerascnn.tuning.halving`), `"hyperband"`,
            `"bayesian"`, `"random"` or `"grid"`. Defaults to `"halving"`.
        max_trials: int. The most trials, every tuner (promoted candidates
            and Hyperband's continuations count). Defaults to `None` (the
            time budget decides).
        epochs: int. Epochs per trial at most (the last rung's, Hyperband's
            `max_epochs`). Defaults to 8.
        time_budget: seconds or a duration string (`"15m"`): the whole call,
            search, final training, test and writing, ends within it (plus
            5%). About half goes to the search, the rest to training the
            winner on train + validation (`kerascnn.tuning.budget`); an
            interrupted search resumed with the same budget gets what is
            left of it. `None` needs `max_trials`. Defaults to `"3m"`.
        max_params, max_macs: int. Candidates above these are resampled
            before training. Defaults to `None`.
        patience: int. Early-stopping patience (epochs without a better
            validation loss) inside each trial of the other tuners (a rung's
            trials are one to a few epochs); 0 turns it off. Defaults to 2.
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
        started: float. `time.time()` at which the budget's clock started
            (the command line passes its own start, so Python's and
            TensorFlow's start-up count). Defaults to now.

    Returns:
        A `TuneResult`.

    Raises:
        InputError: a bad argument, a space in which no
            architecture is valid or meets the limits, or a changed
            configuration on resume; raised before anything is written.

    Example:

    >>> result = kerascnn.tune(time_budget="2m", space={"conv_blocks": (1, 3)})
    >>> result.test_accuracy, result.best_model_path
    """
    started = time.time() if started is None else float(started)
    runtime.start()
    # ---- validate everything before any file exists
    check_choice("tuner", tuner, TUNERS)
    if max_trials is not None:
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
    budget_seconds = parse_duration(time_budget)
    if budget_seconds is None and max_trials is None:
        raise InputError("A search needs an end: give time_budget (e.g. '15m') or max_trials. "
                         "Received: time_budget=None, max_trials=None")
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0 < validation_split < 1:
        raise InputError(f"A search chooses by validation accuracy, so validation_split must be "
                         f"in (0, 1). {received('validation_split', validation_split)}")
    if space is None:
        space = {}
    if not isinstance(space, Mapping):
        raise InputError(f"space must be a mapping of hyperparameter names to values. "
                         f"{received('space', space)}")
    for name, value in (("directory", directory), ("project_name", project_name)):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise InputError(f"{name} must be a non-empty folder name. {received(name, value)}")
    if any(sep in str(project_name) for sep in ("/", "\\")) or str(project_name) in (".", ".."):
        raise InputError(f"project_name is a folder name, not a path. "
                         f"{received('project_name', project_name)}")
    # the space is checked once without data (cheap, clear errors before loading)
    checked = SearchSpace((8, 8, 1), 2, per_block_filters=per_block_filters,
                          augmentation=augmentation, max_params=max_params, max_macs=max_macs,
                          **dict(space))
    source = str(dataset) if isinstance(dataset, (str, Path)) else str(dataset.source)
    config = {
        "dataset": source,
        "dataset_fingerprint": None,  # known once the data is loaded
        "image_size": list(image_size) if image_size else None,
        "validation_split": float(validation_split),
        "batch_size": batch_size,
        "tuner": tuner,
        "max_trials": max_trials,
        "epochs": epochs,
        "time_budget": budget_seconds,
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
    fidelity = Subsets(bundle, seed=seed)
    hypermodel = CNNHyperModel(network_shape, bundle.num_classes,
                               preprocessing=preprocessing,
                               raw_input_shape=tuple(bundle.input_shape),
                               per_block_filters=per_block_filters, augmentation=augmentation,
                               max_params=max_params, max_macs=max_macs, seed=seed,
                               fidelity=fidelity, epochs=epochs, **dict(space))
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
    tuner_options = dict(max_trials=max_trials, epochs=epochs, directory=str(directory),
                         # keras-tuner takes seed 0 as "none": 1..MAX_SEED, numpy's range
                         project_name=str(project_name), seed=seed % MAX_SEED + 1,
                         max_failed_trials=max_failed_trials,
                         cost=CostModel(batch_size=batch_size),
                         validation_images=int(bundle.num_validation))
    if is_worker:  # trains the chief's trials, writes no result
        return run_worker(dist, project_dir, search_yaml(config),
                          lambda: make_tuner(tuner, hypermodel, **tuner_options), bundle,
                          epochs=epochs, patience=0 if tuner == "halving" else patience,
                          verbose=verbose, seed=seed)

    # ---- from here on files are written
    keras.utils.set_random_seed(seed)
    if overwrite and project_dir.exists():
        shutil.rmtree(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(project_dir / SEARCH_FILE, search_yaml(config))
    state = _read_budget_state(project_dir) if resuming else {}
    budget = None if budget_seconds is None else Budget(
        budget_seconds, started, spent_before=float(state.get("spent", 0.0)))
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="running",
        runtime=runtime.settings()))

    search_end = None if budget is None else budget.search_end
    best_writer = BestWriter(project_dir, hypermodel, lambda tid: kt_tuner._get_checkpoint_fname(
        tid), bundle.class_names or [])
    reporter = Reporter(project_dir, search_space, max_trials, search_end, started=started,
                        on_leader=best_writer.write_checkpoint,
                        after=lambda: _write_budget_state(project_dir, budget, "search"),
                        leader_every=LEADER_EVERY if budget is None else max(
                            LEADER_EVERY, 0.1 * budget.search_share * budget.total))
    kt_tuner = make_tuner(tuner, hypermodel, deadline=search_end, reporter=reporter,
                          keep_checkpoints=keep_checkpoints, distributed=dist,
                          **tuner_options)
    oracle = kt_tuner.oracle
    if resuming:
        logger.info("Resuming %s: %d trial(s) done%s.", project_dir, len(oracle.end_order),
                    "" if budget is None else
                    f", {format_duration(budget.spent())} of the budget spent")
    logger.info("Searching %s (%s, %d classes, %d training images) with %s%s%s.",
                config["dataset"], "x".join(map(str, network_shape)), bundle.num_classes,
                bundle.num_train, tuner,
                f", up to {max_trials} trials" if max_trials else "",
                "" if budget is None else
                f", time budget {format_duration(budget_seconds)} (search "
                f"{format_duration(max(0.0, budget.search_end - started))})")

    if state.get("phase") != "final" and (budget is None or budget.left(search_end) > 0
                                                  or not _completed(oracle)):
        _search(kt_tuner, bundle, project_dir, epochs=epochs,
                patience=0 if tuner == "halving" else patience, tensorboard=tensorboard,
                verbose=verbose)
    if not oracle.ongoing_trials:  # the search is over: keep the best K only
        prune_checkpoints(oracle, project_dir, keep_checkpoints, final=True)
    rows = leaderboard_rows(oracle, search_space)
    write_leaderboard(project_dir, rows)
    stopped = oracle.stopped_by_budget or any(r.get("stopped_by") == "budget" for r in rows)
    if stopped and budget is not None:
        logger.info("Search phase over (%s): %d trial(s) done.",
                    budget.progress("search", started, budget.search_end),
                    len(oracle.end_order))
    leader = next((r for r in rows if r["rank"] == 1), None)
    if leader is None:
        reason = oracle.failed_out or "no trial completed"
        raise RuntimeError(f"No trial completed ({reason}); see "
                           f"{project_dir / 'leaderboard.json'}.")
    cost = getattr(oracle, "cost", None) or tuner_options["cost"]
    observe_trials(cost, oracle.trials.values(), search_space, fidelity.size,
                   int(bundle.num_validation), getattr(oracle, "_observed", set()))
    winner, why = _winner(rows, leader, oracle, search_space, cost, bundle, budget, state,
                          has_weights=lambda tid: Path(best_writer.checkpoint(tid)).is_file())
    if why:
        logger.info("Final training: %s.", why)
    best = oracle.trials[winner["trial_id"]]
    final_dir = project_dir / FINAL_DIR
    if state.get("winner") not in (None, best.trial_id) and final_dir.exists():
        shutil.rmtree(final_dir)  # trained for an earlier winner: not this search's answer
    best_writer.write_checkpoint(best, winner)  # the result until a better one is trained
    _write_budget_state(project_dir, budget, "final", winner=best.trial_id, winner_reason=why)
    if budget is not None:  # keep time to test the result and write it (load included)
        budget.after_final = AFTER_FINAL_SECONDS + cost.predict(
            analyze(search_space.spec(search_space.values_from(best.hyperparameters.values))),
            1, 1, validation_images=bundle.num_test)
    model, final_metrics = _final_phase(best, best_writer, hypermodel, bundle, budget, cost,
                                        final_dir, seed=seed)
    final_model = final_metrics["final_model"]
    metrics = best_writer.finish(model, best, {
        "val_accuracy": None if best.score is None else float(best.score),
        "trial_id": best.trial_id, "params": winner.get("params"), "macs": winner.get("macs"),
        "winner_reason": why, **final_metrics}, bundle.test)
    del model
    keras.backend.clear_session()
    gc.collect()
    _write_budget_state(project_dir, budget, "done", winner=best.trial_id, winner_reason=why)
    seconds = time.time() - started
    figures = {"skipped_candidates": getattr(oracle, "skipped", 0),
               "rejected_candidates": oracle.rejected,
               "budget_seconds": budget_seconds,
               "spent_seconds": None if budget is None else round(budget.spent(), 1)}
    write_json(project_dir / "manifest.json", manifest(
        seed=seed, dataset_fingerprint=config["dataset_fingerprint"],
        command_line=command_line, kind="tune", status="finished",
        runtime=runtime.settings(), trials=len(oracle.trials),
        completed=sum(t.status == "COMPLETED" for t in oracle.trials.values()),
        best_trial=best.trial_id, test_accuracy=metrics["test_accuracy"],
        seconds=round(seconds, 1), stopped_by_budget=stopped, **figures))
    values = search_space.values_from(best.hyperparameters.values)
    return TuneResult(best_spec=search_space.spec(values), best_model_path=best_writer.model_path,
                      best_hyperparameters={k: values[k] for k in search_space.hp_names(values)},
                      test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"],
                      leaderboard=rows, directory=project_dir, seconds=seconds,
                      stopped_by_budget=stopped, best_trial_id=best.trial_id,
                      final_model=final_model, extra=figures)


def _completed(oracle) -> bool:
    return any(t.status == "COMPLETED" for t in oracle.trials.values())


def _search(kt_tuner, bundle, project_dir: Path, *, epochs: int, patience: int,
            tensorboard: bool, verbose: int) -> None:
    """The search phase: keras-tuner's `search` with kerascnn's callbacks."""
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


def _winner(rows, leader, oracle, space: SearchSpace, cost: CostModel, bundle,
            budget: Optional[Budget], state: Mapping[str, Any], *,
            has_weights: Callable[[str], bool]):
    """The leaderboard row the final training trains and why, if not the leader
    (`kerascnn.tuning.final.choose_winner`; trials whose weights were pruned
    are not candidates); a resumed run keeps its choice."""
    if budget is None:  # no final training: the leader is the result
        return leader, None
    by_id = {row["trial_id"]: row for row in rows}
    if state.get("phase") in ("final", "done") and state.get("winner") in by_id:
        return by_id[state["winner"]], state.get("winner_reason")
    images = int(bundle.num_train) + int(bundle.num_validation) // 2
    seconds = budget.final_end - time.time()

    def final_epochs(row) -> float:
        values = space.values_from(oracle.trials[row["trial_id"]].hyperparameters.values)
        return cost.epochs_within(analyze(space.spec(values)), images, seconds)

    ranked = [row for row in rows if row.get("rank") is not None
              and (row is leader or has_weights(row["trial_id"]))]
    return choose_winner(ranked, validation_images=int(bundle.num_validation),
                         final_epochs=final_epochs)


def final_spec(space: SearchSpace, values: Mapping[str, Any]) -> CNNSpec:
    """The spec the final training trains: the winner's, with `FINAL_AUGMENTATION`
    when the space chose no augmentation (a user's choice, even none, is kept)."""
    spec = space.spec(values)
    if spec.augmentation or space.augmentation_chosen:
        return spec
    return dataclasses.replace(spec, augmentation=FINAL_AUGMENTATION)


def _final_phase(best, best_writer: BestWriter, hypermodel, bundle, budget: Optional[Budget],
                 cost: CostModel, final_dir: Path, *, seed: int):
    """Train the winner until the budget's final phase ends (`kerascnn.tuning.final`).

    Returns:
        `(model, metrics)`: the model `best/` will hold (the final model, or
        the search checkpoint when the final training was not run, was
        interrupted or scored worse) and the `best/metrics.json` fields that
        say which one it is and why.
    """
    search_model = best_writer.load_checkpoint(best)
    if budget is None:
        return search_model, {
            "final_model": "best checkpoint of the best trial",
            "final_model_reason": "no time budget, so no final training was sized"}
    space = hypermodel.space
    values = space.values_from(best.hyperparameters.values)
    spec = final_spec(space, values)
    result = final_train(
        lambda: hypermodel.network(spec), search_model, bundle, directory=final_dir,
        deadline=budget.final_end, cost=cost, analysis=analyze(spec),
        learning_rate=float(values["learning_rate"]), optimizer=values["optimizer"],
        schedule="linear" if values["schedule"] == "constant" else "one-cycle", seed=seed,
        class_names=list(bundle.class_names or []), spec=spec,
        save_metadata={"trial_id": best.trial_id, "hyperparameters": values},
        compile_fn=lambda model: compile_trial(  # the trials' loss (label smoothing)
            model, spec, optimizer=values["optimizer"],
            learning_rate=float(values["learning_rate"]),
            label_smoothing=values["label_smoothing"]))
    metrics = result.metrics()
    metrics["final_training"]["augmentation"] = [dict(e) for e in spec.augmentation]
    if result.chosen == "final" and result.model is not None:
        del search_model
        return plain_compile(result.model, values), metrics
    return search_model, metrics


def _read_budget_state(project_dir: Path) -> dict[str, Any]:
    path = project_dir / BUDGET_FILE
    try:
        state = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        state = {}
    return state if isinstance(state, dict) else {}


def _write_budget_state(project_dir: Path, budget: Optional[Budget], phase: str,
                        winner: Optional[str] = None,
                        winner_reason: Optional[str] = None) -> None:
    """`budget.json`: the phase reached, the budget spent and the winner, for a resumed run."""
    state: dict[str, Any] = {"phase": phase, "winner": winner, "winner_reason": winner_reason}
    if budget is not None:
        state.update(time_budget=budget.total, spent=round(budget.spent(), 2))
    write_json(project_dir / BUDGET_FILE, state)


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
