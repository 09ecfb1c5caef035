"""The final training: the search's winner trained again until the budget ends.

After the search, the winning spec is trained from scratch on the training
split plus part of the validation split, with a learning-rate schedule that
ends when the time does, then compared with the search's own checkpoint of
that winner. The better one becomes the search's result.

- **A schedule on the clock.** The learning rate follows one-cycle (a linear
  rise to the peak over the first 30%, then a cosine to almost zero) or a
  linear decay to zero, as a function of the fraction of the final training's
  *time* that has passed, checked before every batch; training stops after
  the batch that reaches the end. So the rate reaches zero when the time is
  spent, however wrong the predicted epoch time was or however the machine's
  load changed. The cost model (`kerascnn.tuning.cost`) predicts the epochs
  (for the log, and to skip a final training that would not get `min_epochs`).
- **A mild shift.** Trials are a few epochs long and learn best without
  augmentation; the final training runs many more epochs over the same
  images, and a shift by up to 5% of the image (`FINAL_AUGMENTATION`) then
  helps. The search adds it (`kerascnn.tuning.search`) unless the space
  chose its own augmentation (then the final trains as the trials did).
- **Which trial.** The leaderboard ranks the trials of the highest rung by
  validation accuracy after a few epochs; the final training runs many more,
  and small networks learn fastest in few epochs. So among the trials of
  the leader's rung whose scores the validation split cannot tell from the
  leader's (within one standard error of its accuracy), the one with the
  most multiply-accumulates per image is trained (`choose_winner`), if the
  final phase can train it for more epochs than its trial had.
- **A fair comparison.** The validation split chose the winner, so it cannot
  judge it afterwards without bias, and data the final model trained on cannot
  judge it at all. The validation split is therefore cut in two (every other
  example of its fixed, seeded random order): the final training learns from
  one half, the other half (`holdout`) is never trained on, and both models are
  scored on it. The search checkpoint was selected on a split containing the
  holdout, which favours it slightly: the final model must overcome that to
  be kept, so the comparison errs toward the model already known to be good.
  Ties go to the final model (it trained on more data, for longer).
- **Interrupted, or not better: the search checkpoint stays.** The caller
  writes the search checkpoint as the result before calling `final_train`;
  only a final model that scores at least as well on the holdout replaces it.
  Ctrl-C during the final training keeps the search checkpoint and says so.
- **Resume.** The training keeps a `keras.callbacks.BackupAndRestore` folder
  and the schedule's progress per finished epoch in `directory`; the same call
  after a kill -9 continues from the last finished epoch, the rest of the
  schedule spread over the time then left. A final training that finished
  (`result.json` written) is not run again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import tensorflow as tf

from kerascnn.analysis import Analysis
from kerascnn.checks import InputError, check_choice, check_int, format_duration, received
from kerascnn.files import read_json, write_json
from kerascnn.runs import load_model, read_history, save_model
from kerascnn.training import History, compile_model, fit_model
from kerascnn.tuning.cost import EVAL_COST, CostModel

logger = logging.getLogger(__name__)

SCHEDULES = ("one-cycle", "linear")
WARMUP = {"one-cycle": 0.3, "linear": 0.05}  # fraction of the time spent warming up
START_DIV = 25.0  # the rate starts at peak / START_DIV (fastai's one-cycle)
FINAL_DIV = 1e4  # one-cycle ends at peak / (START_DIV * FINAL_DIV)
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"
BACKUP_DIR = "backup"
SAVE_SECONDS = 2.0  # writing the model and the results, kept aside from the training
# the augmentation of a final training whose search chose none: a shift by up to
# 5% of the image (bench/final_augmentation.py, the sample's ~35-epoch final
# training: +0.7 test points; a 10% shift +0.2)
FINAL_AUGMENTATION = ({"name": "translation", "factor": 0.05},)


@dataclasses.dataclass
class FinalResult:
    """What `final_train` decided.

    Attributes:
        chosen: `"final"` (the model trained here) or `"search"` (the search's
            checkpoint stays the result).
        reason: str. Why, in one sentence (goes to `best/metrics.json`).
        model: the final `keras.Model` when `chosen == "final"`, else None.
        model_path: Path of the final model's file (`directory/model.keras`)
            when one was trained to the end, else None.
        epochs: int. Epochs of the final training (all runs of it).
        seconds: float. Its wall-clock seconds (all runs of it).
        predicted_epochs: float. What the cost model expected.
        holdout_size: int. Validation examples never trained on.
        holdout_accuracy_final, holdout_accuracy_search: float or None.
        train_images: int. Images the final training learned from per epoch.
    """

    chosen: str
    reason: str
    model: Any = None
    model_path: Optional[Path] = None
    epochs: int = 0
    seconds: float = 0.0
    predicted_epochs: float = 0.0
    holdout_size: int = 0
    holdout_accuracy_final: Optional[float] = None
    holdout_accuracy_search: Optional[float] = None
    train_images: int = 0

    def metrics(self) -> dict[str, Any]:
        """The fields for `best/metrics.json`."""
        what = ("final training of the best spec on train + half of validation"
                if self.chosen == "final" else "best checkpoint of the best trial")
        return {"final_model": what, "final_model_reason": self.reason,
                "final_training": {
                    "chosen": self.chosen, "epochs": self.epochs,
                    "seconds": round(self.seconds, 1),
                    "predicted_epochs": round(self.predicted_epochs, 2),
                    "train_images": self.train_images, "holdout_size": self.holdout_size,
                    "holdout_accuracy_final": self.holdout_accuracy_final,
                    "holdout_accuracy_search": self.holdout_accuracy_search}}

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "model"}  # not asdict: it would deep-copy the model
        out["model_path"] = str(self.model_path) if self.model_path else None
        return out


def learning_rate_at(progress: float, peak: float, schedule: str = "one-cycle") -> float:
    """The rate at `progress` (0 = start, 1 = the end of the time) of a schedule.

    `one-cycle`: linear from `peak / 25` to `peak` over the first 30%, then a
    cosine down to `peak / 250000`. `linear`: linear from `peak / 25` to `peak`
    over the first 5%, then linear to 0. `constant`: `peak` throughout.
    """
    if schedule == "constant":
        return float(peak)
    p = min(1.0, max(0.0, float(progress)))
    warm = WARMUP[schedule]
    low = peak / START_DIV
    if p < warm:
        return low + (peak - low) * p / warm
    q = (p - warm) / (1.0 - warm)
    if schedule == "linear":
        return peak * (1.0 - q)
    end = low / FINAL_DIV
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * q))


class ClockSchedule(keras.callbacks.Callback):
    """Sets the learning rate before every batch from the fraction of time spent.

    Progress runs from `start_progress` (0, or where a resumed run had got
    to) at the start of `fit` to 1 at `end` (a `time.time()` value), or to 1
    at the last of `max_epochs` epochs if that comes first (the epochs a
    resumed run starts with are not counted twice). At progress 1
    training stops after the current batch. The progress at the end of every
    epoch is written to `progress_path` (for resume).

    Args:
        peak: float. The peak rate.
        end: float. `time.time()` at which the rate reaches its end.
        schedule: str. `"one-cycle"`, `"linear"` or `"constant"`.
        max_epochs: int. The `epochs` given to `fit`.
        steps_per_epoch: int. Batches per epoch.
        progress_path: Path or None. The JSON file of progress per epoch.
        clock: callable returning seconds. Defaults to `time.time` (then `end`
            is a `time.time()` value); `time.process_time` gives every run the
            same CPU time instead, which a benchmark on a shared machine wants.
    """

    def __init__(self, peak: float, end: float, *, schedule: str = "one-cycle",
                 max_epochs: int, steps_per_epoch: int, progress_path: Optional[Path] = None,
                 clock: Callable[[], float] = time.time):
        super().__init__()
        self.clock = clock
        self.peak, self.end, self.schedule = float(peak), float(end), schedule
        self.max_epochs, self.steps = int(max_epochs), max(1, int(steps_per_epoch))
        self.progress_path = progress_path
        self.start_progress = 0.0
        self.progress = 0.0
        self.fired = False
        self._epoch = 0
        self._done = 0
        self._t0 = 0.0
        self._recorded: dict[str, float] = {}

    def on_train_begin(self, logs=None):
        if self.progress_path is not None and self.progress_path.is_file():
            self._recorded = {str(k): float(v) for k, v in
                              (read_json(self.progress_path).get("epochs") or {}).items()}
        done = int(getattr(self.model, "_initial_epoch", None) or 0)  # BackupAndRestore
        earlier = [int(k) for k in self._recorded if int(k) < done]
        self.start_progress = self._recorded[str(max(earlier))] if earlier else 0.0
        self._recorded = {k: v for k, v in self._recorded.items() if int(k) < done}
        self.progress = self.start_progress
        self._done = done
        self._t0 = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        now = self.clock()
        span = max(1e-9, self.end - self._t0)
        by_time = self.start_progress + (1 - self.start_progress) * (now - self._t0) / span
        left = max(1, self.max_epochs - self._done)
        by_steps = self.start_progress + (1 - self.start_progress) * (
            self._epoch - self._done + (batch + 1) / self.steps) / left
        self.progress = min(1.0, max(by_time, by_steps, self.progress))
        self.model.optimizer.learning_rate.assign(
            learning_rate_at(self.progress, self.peak, self.schedule))

    def on_train_batch_end(self, batch, logs=None):
        if self.progress >= 1.0 or self.clock() >= self.end:
            self.progress, self.fired = 1.0, True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._recorded[str(int(epoch))] = self.progress
        if self.progress_path is not None:
            write_json(self.progress_path, {"epochs": self._recorded})
        now = self.clock()
        logger.info("final training %s of %s  (epoch %d, lr %.3g)",
                    format_duration(now - self._t0),
                    format_duration(max(now, self.end) - self._t0), epoch + 1,
                    learning_rate_at(self.progress, self.peak, self.schedule))


def choose_winner(rows: Sequence[Mapping[str, Any]], *, validation_images: int,
                  final_epochs: Callable[[Mapping[str, Any]], float]
                  ) -> tuple[Mapping[str, Any], Optional[str]]:
    """The leaderboard row the final training trains, and why when it is not the leader.

    Args:
        rows: the leaderboard's rows, best first (`kerascnn.tuning.leaderboard`).
        validation_images: int. Size of the validation split that scored them.
        final_epochs: callable(row) -> float. Epochs the final phase can train
            that row's network for (the cost model's prediction).

    Returns:
        `(row, reason)`: the leader and None, or a larger network the
        validation split cannot tell from the leader and the sentence saying so.
    """
    leader = rows[0]
    score = leader.get("score")
    if score is None or not validation_images:
        return leader, None
    margin = math.sqrt(max(0.0, score * (1.0 - score)) / validation_images)
    ties = [row for row in rows
            if row.get("status") == "COMPLETED" and row.get("rung") == leader.get("rung")
            and row.get("score") is not None and row["score"] >= score - margin
            and (row.get("macs") or 0) > (leader.get("macs") or 0)
            and final_epochs(row) > float(row.get("rung_epochs") or row.get("epochs") or 0)]
    if not ties:
        return leader, None
    pick = max(ties, key=lambda row: (row["macs"], row["score"]))
    reason = (f"trial {pick['trial_id']} ({pick['score']:.4f} validation accuracy, "
              f"{pick['macs']:,} MACs per image) is trained rather than the leader, trial "
              f"{leader['trial_id']} ({score:.4f}, {leader.get('macs') or 0:,} MACs): "
              f"{validation_images} validation images cannot tell them apart (one standard "
              f"error is {100 * margin:.1f} points), and the final training's longer schedule "
              f"favours the larger network")
    return pick, reason


def split_validation(validation, num_validation: int, batch_size: int):
    """(the half to train on, the holdout), each a batched `tf.data.Dataset`, and their sizes.

    The validation split comes in a fixed, seeded random order; every other
    example (positions 1, 3, 5, ...) is trained on, the rest are held out.
    """
    indexed = validation.unbatch().enumerate()
    train_half = indexed.filter(_odd_position).map(_example)
    holdout = indexed.filter(_even_position).map(_example)
    n_holdout = (int(num_validation) + 1) // 2
    n_train = int(num_validation) - n_holdout
    holdout = holdout.batch(batch_size).apply(
        tf.data.experimental.assert_cardinality(math.ceil(n_holdout / batch_size)))
    return train_half, n_train, holdout, n_holdout


# named functions, not lambdas: autograph cannot read two lambdas on one line
# and warns that it runs them unconverted
def _odd_position(i, xy):
    return i % 2 == 1


def _even_position(i, xy):
    return i % 2 == 0


def _example(i, xy):
    return xy


def merged_training_data(bundle, train_half, n_train_half: int, *, batch_size: int, seed: int):
    """The training split and `train_half` mixed in proportion, reshuffled every epoch."""
    extra = train_half.cache().shuffle(max(1, n_train_half), seed=seed,
                                       reshuffle_each_iteration=True)
    n = int(bundle.num_train) + int(n_train_half)
    if n_train_half:
        mixed = tf.data.Dataset.sample_from_datasets(
            [bundle.train.unbatch(), extra],
            weights=[bundle.num_train / n, n_train_half / n], seed=seed,
            stop_on_empty_dataset=False)
    else:
        mixed = bundle.train.unbatch()
    steps = math.ceil(n / batch_size)
    data = mixed.batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps))
    return data.prefetch(tf.data.AUTOTUNE), n, steps


def _accuracy(model, data) -> float:
    if not getattr(model, "compiled", False) or model.optimizer is None:
        compile_model(model)
    evaluation = model.evaluate(data, verbose=0, return_dict=True)
    return float(evaluation.get("accuracy", evaluation.get("compile_metrics", math.nan)))


def final_train(build: Callable[[], keras.Model], search_model: keras.Model, bundle, *,
                directory: str | Path, deadline: float, cost: CostModel, analysis: Analysis,
                learning_rate: float, optimizer: str = "adam",
                weight_decay: Optional[float] = None, schedule: str = "one-cycle",
                min_epochs: int = 2, seed: int = 0, save_metadata: Optional[dict] = None,
                class_names=None, spec=None,
                compile_fn: Optional[Callable[[keras.Model], Any]] = None,
                max_epochs: Optional[int] = None) -> FinalResult:
    """Train the winner again until `deadline`, and keep it only if it is as good.

    Args:
        build: callable returning a fresh, uncompiled (or compiled: it is
            compiled again) model of the winning spec, preprocessing included.
        search_model: the search's checkpoint of the winner (a `keras.Model`).
        bundle: the `DatasetBundle` the search used (it needs `validation`).
        directory: folder for the final training's files (`model.keras`,
            `history.csv`, `result.json`, the backup); the same folder again
            resumes.
        deadline: float. `time.time()` by which everything here must be done:
            training, the two holdout evaluations and saving.
        cost: `CostModel` calibrated by the search.
        analysis: `Analysis` of the winning spec.
        learning_rate: float. The peak rate (the winner's searched rate).
        optimizer: str. Defaults to `"adam"`.
        weight_decay: float. For `adamw`. Defaults to `None`.
        schedule: str. `"one-cycle"` or `"linear"`. Defaults to `"one-cycle"`.
        min_epochs: int. A final training predicted to get fewer epochs is
            not started. Defaults to 2.
        seed: int. Shuffling seed. Defaults to 0.
        save_metadata, class_names, spec: passed to `kerascnn.runs.save_model`
            for `directory/model.keras`.
        compile_fn: callable(model) that compiles the fresh model as the
            search's trials were (a loss with label smoothing, say); its
            optimizer must take a plain float rate, which the schedule then
            sets before every batch. Defaults to `None`: `optimizer` and
            `weight_decay` with sparse categorical cross-entropy
            (`kerascnn.training.compile_model`).
        max_epochs: int. At most this many epochs (all runs of a resumed
            final training together); the schedule then ends with the last
            of them if that comes before the deadline. Defaults to `None`:
            the deadline alone ends it.

    Returns:
        A `FinalResult`.

    Raises:
        InputError: no validation split, or a bad `schedule` or `min_epochs`.
    """
    check_choice("schedule", schedule, SCHEDULES)
    check_int("min_epochs", min_epochs)
    if max_epochs is not None:
        check_int("max_epochs", max_epochs)
    if bundle.validation is None or not bundle.num_validation:
        raise InputError("The final training compares against the search on a validation "
                         "split, and this dataset has none. " + received(
                             "validation_split", bundle.validation_split))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / RESULT_FILE
    if done.is_file():  # finished before (a resumed command): the same decision again
        return _recorded(done, compile_fn)
    started = time.time()
    batch_size = int(bundle.batch_size or cost.batch_size)
    train_half, n_half, holdout, n_holdout = split_validation(
        bundle.validation, bundle.num_validation, batch_size)
    data, n_images, steps = merged_training_data(bundle, train_half, n_half,
                                                 batch_size=batch_size, seed=seed)

    # time for what follows the training: two holdout evaluations and saving
    reserve = 2 * EVAL_COST * n_holdout * cost.seconds_per_image(analysis) + SAVE_SECONDS
    end = deadline - reserve
    history_path = directory / "history.csv"
    previous = read_history(history_path) if history_path.is_file() else []
    predicted = cost.epochs_within(analysis, n_images, end - time.time())
    common = dict(holdout_size=n_holdout, train_images=n_images, predicted_epochs=predicted,
                  epochs=len(previous), seconds=sum(r.get("seconds", 0.0) for r in previous))
    needed = min_epochs if not previous else 1  # a resumed one finishes what it started
    if predicted < needed:
        why = (f"{format_duration(max(0.0, end - time.time()))} left would give "
               f"{predicted:.1f} epoch(s) of {n_images} images, fewer than {needed}")
        reason = f"no final training: {why}"
        logger.info("Final training skipped: %s.", why)
        return FinalResult("search", reason, **common)

    planned = max(needed, int(predicted))
    # a cap far beyond the prediction (the clock ends training); the epochs of a
    # resumed run count, so that fit still has epochs left to run
    cap = len(previous) + max(4 * planned, planned + 10)
    if max_epochs is not None:
        cap = min(cap, max(int(max_epochs), len(previous) + 1))
    logger.info("final training: the best spec on %d images (train + half of validation), "
                "~%d epochs in %s (%s schedule to the end), %d validation images held out",
                n_images, planned, format_duration(end - time.time()), schedule, n_holdout)
    clock = ClockSchedule(learning_rate, end, schedule=schedule, max_epochs=cap,
                          steps_per_epoch=steps, progress_path=directory / PROGRESS_FILE)
    model = build()
    if compile_fn is not None:
        compile_fn(model)
    try:
        result = fit_model(
            model, data, epochs=cap, optimizer=optimizer,
            learning_rate=learning_rate_at(0.0, learning_rate, schedule),
            weight_decay=weight_decay, schedule="constant", restore_best=False,
            compile=compile_fn is None,
            backup_dir=directory / BACKUP_DIR, history=History(history_path, previous),
            history_path=history_path, log_prefix="final training", callbacks=[clock])
    except KeyboardInterrupt:
        reason = "the final training was interrupted; the search checkpoint is the result"
        logger.warning("Final training interrupted: %s.", reason)
        return FinalResult("search", reason, **common)
    common.update(epochs=len(result.history),
                  seconds=sum(r.get("seconds", 0.0) for r in result.history))
    if result.diverged:
        reason = "the final training diverged (the loss became NaN)"
        return _decide(directory, FinalResult("search", reason, **common))

    final_accuracy = _accuracy(model, holdout)
    search_accuracy = _accuracy(search_model, holdout)
    common.update(holdout_accuracy_final=final_accuracy, holdout_accuracy_search=search_accuracy)
    model_path = save_model(model, directory / "model.keras", class_names=class_names,
                            spec=spec, **(save_metadata or {}))
    verdict = (f"on {n_holdout} validation images neither model trained on, the final "
               f"training scored {final_accuracy:.4f} and the search checkpoint "
               f"{search_accuracy:.4f}")
    if final_accuracy >= search_accuracy:
        chosen = FinalResult("final", verdict, model=model, model_path=model_path, **common)
    else:
        chosen = FinalResult("search", verdict, model_path=model_path, **common)
    logger.info("Final training: %s; the %s is the result (%s).", verdict,
                "final model" if chosen.chosen == "final" else "search checkpoint",
                format_duration(time.time() - started))
    return _decide(directory, chosen)


def _decide(directory: Path, result: FinalResult) -> FinalResult:
    write_json(directory / RESULT_FILE, result.to_json())
    return result


def _recorded(path: Path, compile_fn) -> FinalResult:
    state = read_json(path)
    fields = {f.name for f in dataclasses.fields(FinalResult)}
    result = FinalResult(**{k: v for k, v in state.items() if k in fields})
    if result.model_path:
        result.model_path = Path(result.model_path)
    if result.chosen == "final" and result.model_path and result.model_path.is_file():
        # loaded uncompiled (a loss of the caller's need not be registered with Keras)
        result.model = load_model(result.model_path, compile=False)
        (compile_fn or compile_model)(result.model)
    elif result.chosen == "final":  # the file went missing: fall back, say so
        result.chosen = "search"
        result.reason = f"the final model file is missing ({result.model_path})"
    return result
