"""`kerascnn train` and `kerascnn lr-find`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kerascnn.checks import (LR_FIND_METHODS, MAX_STEPS_PER_EXECUTION, OPTIMIZERS, SCHEDULES,
                             STRATEGIES, InputError, received)
from kerascnn.cli import command, configure_logging
from kerascnn.cli._options import (SPEC_FIELD_PARAMS, data_kwargs, dataset_options, seed_option,
                                   spec_from_options, spec_options, start_tensorflow,
                                   verbosity_options)

_SPEC_KEYS = ("preset", "spec_file", "input_shape", "num_classes", *SPEC_FIELD_PARAMS)


def spec_factory(kw: dict, from_spec: str | Path | None = None):
    """A callable `(input_shape, num_classes) -> CNNSpec` from the spec options.

    A preset takes the dataset's shape and classes unless `--input-shape` or
    `--num-classes` say otherwise; a spec file (`--config`, or `from_spec`, the
    spec.yaml that `--from` names) keeps its own. Validated up front, so a bad
    flag fails before any data is loaded.
    """
    spec_kw = {k: kw.get(k) for k in _SPEC_KEYS}
    if from_spec is not None:
        _one_network_source(kw, from_spec)
        spec_kw["spec_file"] = str(from_spec)
    if spec_kw["spec_file"] and not Path(spec_kw["spec_file"]).is_file():
        raise InputError(f"Spec file not found. {received('--config', spec_kw['spec_file'])}")

    def make(input_shape, num_classes):
        if spec_kw["spec_file"]:
            return spec_from_options(**spec_kw)
        return spec_from_options(**{**spec_kw,
                                    "input_shape": spec_kw["input_shape"] or input_shape,
                                    "num_classes": spec_kw["num_classes"] or num_classes})

    # a bad file, preset or field value fails here, before any data is loaded (a preset is
    # checked at its own input shape: the fields' values, not yet their fit to the data)
    make(None, None)
    return make


def _one_network_source(kw: dict, from_dir) -> None:
    if from_dir is not None and (kw.get("preset") or kw.get("spec_file")):
        raise click.UsageError("Give one of --from, --preset or --config.")


def _early_spec(kw: dict, from_dir: str | None):
    """The spec factory when it needs no run folder, so that a bad flag is refused
    before TensorFlow loads; None with `--from` (read once TensorFlow is up)."""
    _one_network_source(kw, from_dir)
    return None if from_dir is not None else spec_factory(kw)


def _from_option(f):
    return click.option("--from", "from_dir", type=click.Path(file_okay=False), default=None,
                        help="Train the network of a run folder or a tune result "
                             "(reads its spec.yaml; DIR, DIR/best or DIR/<project>/best).")(f)


def _network_and_data_options(f):
    """What `train` and `lr-find` share: the network (spec, --from) and the data."""
    f = click.option("--normalize", is_flag=True,
                     help="Add a Normalization layer adapted on the training data.")(f)
    return spec_options(_from_option(dataset_options(f)))


@command("train")
@_network_and_data_options
@click.option("--epochs", type=click.IntRange(min=1), default=10, help="Maximum epochs.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam")
@click.option("--learning-rate", "--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              default=1e-3, help="Base rate (the peak rate for one-cycle).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Decoupled weight decay (adamw).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="constant",
              help="Learning-rate schedule.")
@click.option("--early-stopping", type=click.IntRange(min=0), default=5,
              help="Patience in epochs on the validation loss; 0 turns it off.")
@seed_option
@click.option("--deterministic", is_flag=True,
              help="TensorFlow op determinism: bit-identical reruns, slower.")
@click.option("--mixed-precision", is_flag=True,
              help="mixed_bfloat16 on CPU, mixed_float16 on GPU; the output layer stays float32.")
@click.option("--jit", is_flag=True, help="Compile the train step with XLA.")
@click.option("--steps-per-execution", type=click.IntRange(1, MAX_STEPS_PER_EXECUTION), default=1,
              help="Train steps per tf.function call.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="none",
              help="mirrored: all local GPUs; multiworker: several machines, set TF_CONFIG.")
@click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs to OUTPUT_DIR/logs.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in --output-dir from its last epoch.")
@click.option("--output-dir", type=click.Path(file_okay=False), required=True,
              help="The run folder: spec.yaml, config.yaml, history.csv, model.keras, "
                   "metrics.json, manifest.json.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --output-dir.")
@verbosity_options
def train(from_dir, normalize, epochs, optimizer, learning_rate, weight_decay, schedule,
          early_stopping, seed, deterministic, mixed_precision, jit, steps_per_execution,
          strategy, tensorboard, resume, output_dir, overwrite, verbose, quiet, **kw):
    """Train one network and write its run folder.

    The network comes from --preset (default: simple), --config spec.yaml,
    --from a run or tune result, and field flags that override it; a preset
    takes the dataset's input shape and number of classes.

    \b
    Examples:
      kerascnn train --preset simple --epochs 5 --output-dir runs/simple
      kerascnn train --from tune_results/kerascnn --schedule one-cycle --lr 3e-3 --output-dir runs/best
      kerascnn train --preset lenet5 --activation relu --mixed-precision --output-dir runs/lenet
      kerascnn train ... --output-dir runs/x --resume      # after an interruption
    """
    configure_logging(verbose, quiet)
    make_spec = _early_spec(kw, from_dir)
    start_tensorflow(verbose)
    from kerascnn.runs import find_spec_file
    from kerascnn.training import train as run_training

    make_spec = make_spec or spec_factory(kw, find_spec_file(from_dir, name="--from"))

    result = run_training(
        make_spec, **data_kwargs(kw), normalize=normalize, epochs=epochs,
        optimizer=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
        schedule=schedule, early_stopping=early_stopping, seed=seed,
        deterministic=deterministic, mixed_precision=mixed_precision, jit=jit,
        steps_per_execution=steps_per_execution, strategy=strategy, tensorboard=tensorboard,
        resume=resume, output_dir=output_dir, overwrite=overwrite, verbose=verbose,
        command_line=["kerascnn", *sys.argv[1:]] if sys.argv else None)
    m = result.metrics
    if not quiet:
        best = m.get("best_epoch")
        click.echo(f"Trained {m['epochs_run']} epochs in {result.seconds:.1f}s "
                   f"({result.images_per_second:,.0f} images/s)"
                   + (f"; best epoch {best + 1}" if best is not None else "")
                   + ("; stopped early" if m.get("stopped_early") else ""))
        click.echo(f"test_accuracy {m['test_accuracy']:.4f}  test_loss {m['test_loss']:.4f}")
        if result.output_dir is not None:
            click.echo(f"Run folder: {result.output_dir}")
    if result.diverged:  # the run folder stays; the rate given was too high: bad input
        raise InputError(f"The loss became NaN: the learning rate is too high for this network "
                         f"and data; try a lower --learning-rate (kerascnn lr-find suggests "
                         f"one). Received: --learning-rate={learning_rate}")


@command("lr-find")
@_network_and_data_options
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam")
@click.option("--start-lr", type=click.FloatRange(min=0, min_open=True), default=1e-7)
@click.option("--end-lr", type=click.FloatRange(min=0, min_open=True), default=10.0)
@click.option("--steps", type=click.IntRange(min=10), default=200,
              help="Batches in the range test.")
@click.option("--method", type=click.Choice(LR_FIND_METHODS), default="steepest",
              help="How the rate is suggested from the smoothed loss curve.")
@click.option("--output", type=click.Path(dir_okay=False), default="lr_find.png",
              help="Where to save the loss-vs-rate plot (PNG).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@seed_option
@verbosity_options
def lr_find(from_dir, normalize, optimizer, start_lr, end_lr, steps, method, output, overwrite,
            seed, verbose, quiet, **kw):
    """The learning-rate range test: suggests a --learning-rate for train.

    Trains for --steps batches while the rate grows exponentially from
    --start-lr to --end-lr, smooths the loss, and suggests the rate where it
    falls fastest (or the minimum's rate / 10). Saves the loss-vs-rate plot.

    \b
    Example:
      kerascnn lr-find --preset simple --output lr.png
      kerascnn train --preset simple --schedule one-cycle --lr <suggestion> --output-dir runs/a
    """
    configure_logging(verbose, quiet)
    make_spec = _early_spec(kw, from_dir)
    start_tensorflow(verbose)
    from kerascnn.runs import find_spec_file
    from kerascnn.training import lr_find as range_test

    make_spec = make_spec or spec_factory(kw, find_spec_file(from_dir, name="--from"))

    result = range_test(make_spec, **data_kwargs(kw), normalize=normalize,
                        optimizer=optimizer, start_lr=start_lr, end_lr=end_lr, steps=steps,
                        method=method, output=output, overwrite=overwrite, seed=seed)
    if quiet:
        click.echo(f"{result.suggestion:.3g}")
        return
    click.echo(f"Suggested learning rate: {result.suggestion:.3g} ({result.method}; "
               f"steepest descent {result.steepest:.3g}, minimum/10 {result.minimum / 10:.3g})")
    if result.diverged:
        click.echo(f"The loss diverged at {result.learning_rates[-1]:.3g} "
                   f"after {len(result.learning_rates)} steps.")
    click.echo(f"Plot: {result.plot_path}")
