"""`kerascnn finetune`: two-phase fine-tuning of a pretrained backbone."""

from __future__ import annotations

import sys

import click

from kerascnn.checks import BACKBONES, OPTIMIZERS
from kerascnn.cli import command, configure_logging
from kerascnn.cli._options import (config_option, data_kwargs, dataset_options, output_options,
                                   seed_option, start_tensorflow, verbosity_options)


@command("finetune")
@config_option()
@click.option("--backbone", default="mobilenet_v2",
              help=f"{', '.join(BACKBONES)}, or any keras.applications model by "
                   f"name (e.g. densenet121).")
@click.option("--weights", default="imagenet",
              help="'imagenet' (downloaded by Keras; needs a network), 'none', or the path of "
                   "a weights file of the backbone without its top.")
@dataset_options
@click.option("--epochs", type=click.IntRange(min=0), default=3,
              help="Phase 1: epochs training the new head, backbone frozen.")
@click.option("--fine-tune-epochs", type=click.IntRange(min=0), default=3,
              help="Phase 2: epochs training the unfrozen top of the backbone.")
@click.option("--unfreeze", default="all",
              help="What phase 2 trains: 'all', N (top N layers with weights) or 'N blocks'. "
                   "BatchNorm layers always stay frozen, in inference mode.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              help="Phase 1 learning rate.")
@click.option("--fine-tune-lr", type=click.FloatRange(min=0, min_open=True), default=1e-4,
              help="Phase 2 learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2,
              help="Dropout before the new classifier.")
@seed_option
@output_options()
@verbosity_options
def finetune(config, backbone, weights, dataset, data_dir, image_size, color_mode,
             validation_split, batch_size, download, epochs, fine_tune_epochs, unfreeze,
             learning_rate, fine_tune_lr, optimizer, dropout, seed, output_dir, overwrite,
             verbose, quiet) -> None:
    """Fine-tune a pretrained backbone on a dataset, in two phases.

    \b
    Phase 1: the backbone is frozen and the new head (global average pooling,
    dropout, softmax) is trained at --learning-rate for --epochs.
    Phase 2: the top of the backbone (--unfreeze) is trained too, at
    --fine-tune-lr for --fine-tune-epochs; BatchNorm stays in inference mode.

    Images of any size and channel count are resized to --image-size and
    converted to RGB inside the model, so the saved model takes raw pixels.
    Writes a run folder (kerascnn.runs): backbone.yaml (the backbone and head),
    config.yaml, history.csv, model.keras, metrics.json, manifest.json.

    \b
    Example (offline, with a local ImageNet checkpoint):
      kerascnn finetune --backbone mobilenet_v2 --image-size 96 \\
        --weights mobilenet_v2_imagenet_notop.weights.h5 --output-dir runs/ft
    """
    configure_logging(verbose, quiet)
    start_tensorflow(verbose)
    from kerascnn.finetuning import finetune as run_finetune

    unfreeze_value = int(unfreeze) if str(unfreeze).strip().isdigit() else unfreeze
    data = data_kwargs(dict(dataset=dataset, data_dir=data_dir, image_size=image_size,
                            color_mode=color_mode, validation_split=validation_split,
                            batch_size=batch_size, download=download))
    result = run_finetune(
        backbone, **data, weights=weights, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
        unfreeze=unfreeze_value, learning_rate=learning_rate, fine_tune_lr=fine_tune_lr,
        optimizer=optimizer, dropout=dropout, output_dir=output_dir, overwrite=overwrite, seed=seed,
        verbose=1 if verbose else 0, command_line=["kerascnn", *sys.argv[1:]],
    )
    if not quiet:
        m = result.metrics
        click.echo(f"test accuracy {m['test_accuracy']:.4f}  test loss {m['test_loss']:.4f}")
        click.echo(f"run folder: {result.output_dir}")
