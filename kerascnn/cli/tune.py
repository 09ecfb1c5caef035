"""`kerascnn tune`: search N, M, K and filters on a dataset, within a budget."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click
import yaml

from kerascnn.checks import DISTRIBUTED_ROLES, TUNERS, InputError
from kerascnn.cli import command, configure_logging, one_line
from kerascnn.cli._options import (DURATION, Duration, config_option, data_kwargs, dataset_options,
                                   seed_option, start_tensorflow, verbosity_options)
from kerascnn.distributed import WorkerResult, resolve
from kerascnn.files import read_yaml


class BudgetParam(Duration):
    """A duration, or `none` for no time limit (then --max-trials ends the search)."""

    name = "DURATION|none"

    def convert(self, value: Any, param, ctx):
        if value is None or str(value).strip().lower() == "none":
            return None
        return super().convert(value, param, ctx)


class SpaceParam(click.ParamType):
    """A search space: a YAML/JSON file, inline YAML (`"conv_blocks: {min: 1, max: 4}"`),
    or (from `--config`) a mapping."""

    name = "SPACE"

    def convert(self, value: Any, param, ctx) -> dict:
        if value is None or isinstance(value, dict):
            return value
        text = str(value)
        if os.path.exists(text):
            try:
                data = read_yaml(text)
            except InputError as e:
                self.fail(str(e), param, ctx)
            if isinstance(data, dict) and isinstance(data.get("space"), dict):
                data = data["space"]  # a search.yaml
        else:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                first = str(e).strip().splitlines()[0]
                self.fail(f"not a file and not a YAML mapping ({first}). Received: {text!r}",
                          param, ctx)
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.fail("expected a YAML mapping of hyperparameter names to a value, a list of "
                      f"choices or {{min: ..., max: ...}}. Received: {text!r}", param, ctx)
        return data


class NamesParam(click.ParamType):
    """Comma-separated names (`flip,translation`), or a list from `--config`."""

    name = "NAMES"

    def convert(self, value: Any, param, ctx):
        if value is None or isinstance(value, (list, tuple)):
            return value
        return [v.strip() for v in str(value).split(",") if v.strip()]


@command()
@config_option()
@dataset_options
@click.option("--tuner", type=click.Choice(TUNERS), default="halving",
              help="Search algorithm: successive halving on data x epochs sized in seconds "
                   "(halving), or keras-tuner's.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None,
              help="Most trials, for every tuner (promotions and Hyperband's continuations "
                   "count) [default: the time budget decides].")
@click.option("--epochs", type=click.IntRange(min=1), default=8,
              help="Most epochs per trial (the last rung's; Hyperband's max_epochs).")
@click.option("--time-budget", type=BudgetParam(), default="3m",
              help="Wall-clock limit of the whole command, e.g. 90s, 15m, 1h30m: about half "
                   "searches, the rest trains the winner on train+validation, then it is "
                   "tested and written. 'none': no limit and no final training (needs "
                   "--max-trials).")
@click.option("--max-params", type=click.IntRange(min=1), default=None,
              help="Resample candidates with more parameters (before training).")
@click.option("--max-macs", type=click.IntRange(min=1), default=None,
              help="Resample candidates with more multiply-accumulates per image.")
@click.option("--patience", type=click.IntRange(min=0), default=2,
              help="Early-stopping patience inside each trial of the keras-tuner tuners "
                   "(0: off; a rung's trials are too short for it).")
@click.option("--space", type=SpaceParam(), default=None,
              help="Search space: a YAML file or inline YAML, e.g. "
                   "'{conv_blocks: {min: 1, max: 4}, kernel_size: [3, 5], padding: valid}'. "
                   "Unset entries take their defaults (docs/tuning.md).")
@click.option("--per-block-filters", is_flag=True,
              help="Search filters per block instead of a base and a growth factor.")
@click.option("--augmentation", type=NamesParam(), default=None,
              help="Augmentations scaled by the searched augmentation_strength, e.g. "
                   "flip,translation.")
@click.option("--directory", type=click.Path(file_okay=False), default="runs",
              help="Parent folder of the search.")
@click.option("--project-name", default="tune",
              help="Folder of this search inside --directory (the same name resumes).")
@click.option("--overwrite", is_flag=True,
              help="Start over: delete the search of the same name, accept a changed space.")
@click.option("--tensorboard", is_flag=True,
              help="Write TensorBoard logs (scalars and the HParams view) to "
                   "DIRECTORY/PROJECT_NAME/tensorboard.")
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3,
              help="Keep the weights of the best K trials, delete the others' as the search "
                   "goes (the leaderboard keeps every trial).")
@click.option("--max-failed-trials", type=click.IntRange(min=1), default=3,
              help="Consecutive failed trials (a crash, a NaN loss) that end the search.")
@click.option("--distributed", type=click.Choice(DISTRIBUTED_ROLES), default=None,
              help="Distributed search (keras-tuner's gRPC oracle): the chief serves the "
                   "oracle and writes the results, workers train (docs/distributed.md).")
@click.option("--oracle-address", default=None, metavar="HOST:PORT",
              help="The chief's address [default: 127.0.0.1:8000, loopback only]. The oracle "
                   "has no authentication: bind it to a private network only.")
@click.option("--worker-id", default=None,
              help="A worker's unique name; restarted with the same id it picks up its trial.")
@click.option("--chief-timeout", type=DURATION, default="10m",
              help="How long a worker waits for its chief.")
@seed_option
@verbosity_options
def tune(config, dataset, data_dir, image_size, color_mode, validation_split, batch_size,
         download, tuner, max_trials, epochs, time_budget, max_params, max_macs, patience,
         space, per_block_filters, augmentation, directory, project_name, overwrite,
         tensorboard, keep_checkpoints, max_failed_trials, distributed, oracle_address, worker_id,
         chief_timeout, seed, verbose, quiet):
    """Search CNN architectures (N, M, K, filters, ...) and training settings.

    Ends within --time-budget (3 minutes by default): about half searches
    (successive halving: many candidates on a fraction of the images, the best
    promoted to more), the rest trains the winner on train + validation, then
    it is tested once. Runs again with the same options to resume. Writes
    DIRECTORY/PROJECT_NAME/: leaderboard.csv/json after every trial,
    best/model.keras (from the first trial on), best/spec.yaml,
    best/metrics.json (which model and why), search.yaml (reusable as
    --config), budget.json, manifest.json and keras-tuner's own state.
    """
    started = time.time()  # the budget's clock: TensorFlow's start-up counts
    configure_logging(verbose, quiet)
    # addresses and ids are refused before TensorFlow loads
    resolve(distributed, oracle_address, worker_id, chief_timeout)
    start_tensorflow(verbose)
    from kerascnn.tuning import format_leaderboard
    from kerascnn.tuning import tune as run_tune

    data = data_kwargs(dict(dataset=dataset, data_dir=data_dir, image_size=image_size,
                            color_mode=color_mode, validation_split=validation_split,
                            batch_size=batch_size, download=download))
    try:
        result = run_tune(
            data.pop("dataset"), **data, space=space, tuner=tuner, max_trials=max_trials,
            epochs=epochs, time_budget=time_budget, max_params=max_params, max_macs=max_macs,
            patience=patience, per_block_filters=per_block_filters, augmentation=augmentation,
            directory=directory, project_name=project_name, overwrite=overwrite, seed=seed,
            verbose=verbose, tensorboard=tensorboard, keep_checkpoints=keep_checkpoints,
            max_failed_trials=max_failed_trials,
            distributed=distributed, oracle_address=oracle_address, worker_id=worker_id,
            chief_timeout=chief_timeout, command_line=["kerascnn", *sys.argv[1:]],
            started=started)
    except RuntimeError as e:  # no chief, no completed trial: one line, exit 1
        raise click.ClickException(one_line(str(e))) from None
    if isinstance(result, WorkerResult):
        if not quiet:
            click.echo(f"Worker {result.worker_id}: {len(result.trial_ids)} trial(s) "
                       f"({', '.join(result.trial_ids) or 'none'}) in {result.seconds:.0f}s; "
                       f"{'the chief is gone' if result.chief_gone else 'no trial left'}.")
        return
    if quiet:
        return
    click.echo(format_leaderboard(result.leaderboard, top=5))
    click.echo()
    click.echo(f"Best: trial {result.best_trial_id}, test accuracy "
               f"{result.test_accuracy:.4f} (test loss {result.test_loss:.4f})"
               f"{', stopped by the time budget' if result.stopped_by_budget else ''}, "
               f"{result.seconds:.0f}s")
    click.echo(f"Best model: {result.best_model_path} ({result.final_model})")
