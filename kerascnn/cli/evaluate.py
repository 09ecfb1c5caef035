"""`kerascnn evaluate`, `kerascnn predict` and `kerascnn export`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
from click.core import ParameterSource

from kerascnn.checks import EXPORT_FORMATS, SPLITS
from kerascnn.cli import BadInput, command, configure_logging
from kerascnn.cli._format import csv_text, decimal, size, table
from kerascnn.cli._options import (SEED, data_kwargs, dataset_options, start_tensorflow,
                                   verbosity_options)
from kerascnn.images import check_image, find_images

OUTPUT_FORMATS = ("table", "json", "csv")


def _model_argument(f):
    return click.argument("model", type=click.Path(path_type=str))(f)


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def _evaluation_table(result) -> str:
    d = result.to_dict()
    out = [f"{result.split} samples: {result.num_samples}   accuracy: {result.accuracy:.4f}   "
           f"loss: {result.loss:.4f}", ""]
    rows = [["class", "precision", "recall", "f1", "support", "loss"]]
    for c in d["per_class"]:
        rows.append([c["class"], decimal(c["precision"]), decimal(c["recall"]), decimal(c["f1"]),
                     str(c["support"]), decimal(c["loss"])])
    for name, avg in (("macro avg", d["macro_avg"]), ("weighted avg", d["weighted_avg"])):
        rows.append([name, decimal(avg["precision"]), decimal(avg["recall"]), decimal(avg["f1"]),
                     str(result.num_samples), ""])
    out.append(table(rows, right={1, 2, 3, 4, 5}))
    out += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    short = [n if len(n) <= 12 else n[:11] + "." for n in result.class_names]
    cm_rows = [[""] + short]
    for name, row in zip(short, result.confusion_matrix):
        cm_rows.append([name] + [str(int(v)) for v in row])
    out.append(table(cm_rows, right=set(range(1, len(short) + 1))))
    return "\n".join(out)


def _evaluation_csv(result) -> str:
    rows = [["class", "precision", "recall", "f1", "support", "accuracy", "loss"]]
    for c in result.per_class():
        rows.append([c["class"], c["precision"], c["recall"], c["f1"], c["support"],
                     c["recall"], "" if c["loss"] is None else c["loss"]])
    m = result.macro
    rows.append(["all", m["precision"], m["recall"], m["f1"], result.num_samples,
                 result.accuracy, result.loss])
    return csv_text(rows)


@command("evaluate")
@_model_argument
@dataset_options
@click.option("--split", type=click.Choice(SPLITS), default="test",
              help="Which split of the dataset to evaluate on.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="table",
              help="How to print the results.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Folder for the confusion-matrix and top-losses pictures.")
@click.option("--overwrite", is_flag=True, help="Replace pictures already in the --plots folder.")
@click.option("--seed", type=SEED, default=0, help="Seed of the train/validation split.")
@verbosity_options
def evaluate(model, split, output_format, plots, overwrite, seed, verbose, quiet, **data_kw):
    """Accuracy, loss, per-class precision/recall/F1 and confusion matrix of MODEL.

    MODEL is a .keras file, a run folder (model.keras) or a tune folder
    (best/model.keras). Dataset options not given (--dataset, --image-size,
    --color-mode, --validation-split, --seed) default to those the model was
    trained with, when `kerascnn train` saved them in the model. The CSV has
    one row per class and a final row "all" (macro precision/recall/F1,
    overall accuracy and loss).
    """
    configure_logging(verbose, quiet)
    start_tensorflow(verbose)
    from kerascnn.charts import evaluation_plots
    from kerascnn.data import load_dataset
    from kerascnn.evaluation import evaluate as run_evaluate
    from kerascnn.evaluation import training_data_options
    from kerascnn.inspection import resolve_model
    from kerascnn.runs import prepare_output_dir

    ctx = click.get_current_context()
    for name, value in training_data_options(model).items():
        if ctx.get_parameter_source(name) is ParameterSource.DEFAULT:  # not given: as trained
            if name == "seed":
                seed = value
            else:
                data_kw[name] = value
    if plots:
        prepare_output_dir(plots, overwrite=overwrite)
    keras_model = resolve_model(model)
    data = data_kwargs(data_kw)
    bundle = load_dataset(data.pop("dataset"), **data, seed=seed)
    result = run_evaluate(keras_model, bundle, split=split, batch_size=data["batch_size"])
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif output_format == "csv":
        click.echo(_evaluation_csv(result), nl=False)
    else:
        click.echo(_evaluation_table(result))
    if plots:
        Path(plots).mkdir(parents=True, exist_ok=True)
        written = evaluation_plots(keras_model, bundle, result, plots)
        if not quiet:
            for path in written or []:
                click.echo(f"Wrote {path}", err=True)


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


@command("predict")
@_model_argument
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str),
                metavar="FILES_OR_DIRS...")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Classes shown per image, at most the number of classes.  "
                   "[default: 5, or the number of classes if fewer]")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="table",
              help="How to print the predictions.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Images per batch.")
@verbosity_options
def predict(model, inputs, top_k, output_format, batch_size, verbose, quiet):
    """Most likely classes of images, with their probabilities.

    MODEL is a .keras file, a run folder or a tune folder. FILES_OR_DIRS are
    image files, or folders searched recursively for images. Images are
    converted to the model's colour mode and resized to its input size.
    """
    configure_logging(verbose, quiet)
    start_tensorflow(verbose)
    from kerascnn.evaluation import predict as run_predict
    from kerascnn.runs import check_model_path

    # a bad model, a missing path, an empty folder or a file that is not an
    # image is refused before the model is loaded
    check_model_path(model)
    files = find_images(list(inputs))
    for path in files:
        check_image(path)
    result = run_predict(model, [str(f) for f in files], top_k=top_k, batch_size=batch_size)
    rows = result.rows()
    top_k = result.top_k
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output_format == "csv":
        header = ["file"]
        for k in range(1, top_k + 1):
            header += [f"class_{k}", f"probability_{k}"]
        lines = [header]
        for r in rows:
            line = [r["file"]]
            for p in r["predictions"]:
                line += [p["class"], f"{p['probability']:.6g}"]
            lines.append(line)
        click.echo(csv_text(lines), nl=False)
        return
    lines = [["file"] + [f"top-{k}" for k in range(1, top_k + 1)]]
    lines += [[r["file"]] + [f"{p['class']} {p['probability']:.3f}" for p in r["predictions"]]
              for r in rows]
    click.echo(table(lines))


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------


@command("export")
@_model_argument
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="keras",
              help="Export format (onnx needs `pip install 'kerascnn[onnx]'`).")
@click.option("--output", "-o", type=click.Path(path_type=str), required=True,
              help="File to write (a folder for saved_model).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--tolerance", type=click.FloatRange(min=0.0), default=1e-4,
              help="Largest allowed difference between the export's outputs and Keras's.")
@verbosity_options
def export(model, export_format, output, overwrite, tolerance, verbose, quiet):
    """Export MODEL and check it against Keras on a sample batch.

    The export is loaded with its own runtime and run on random images; the
    largest difference from the Keras model's outputs is reported, and an
    export above --tolerance is deleted and reported as an error (exit 1).
    """
    configure_logging(verbose, quiet)
    if not verbose:  # the converter's own chatter; the export is checked whatever it says
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)
    start_tensorflow(verbose)
    from kerascnn.exporting import ExportVerificationError
    from kerascnn.exporting import export as run_export

    try:
        result = run_export(model, output, format=export_format, overwrite=overwrite,
                            tolerance=tolerance)
    except ImportError as e:  # the onnx extra is not installed
        raise BadInput(str(e)) from None
    except ExportVerificationError as e:
        raise click.ClickException(str(e)) from None
    reference = "keras" if result.converted_from is None else "keras float32"
    click.echo(f"Exported {result.format} to {result.path} "
               f"({size(result.size_bytes, binary=True)}); "
               f"max |{result.format} - {reference}| = {result.max_abs_diff:.3g} on "
               f"{result.num_samples} samples (tolerance {result.tolerance:g}).")
    if result.converted_from is not None:
        click.echo(f"The model computes in {result.converted_from}; {result.format} runs its "
                   f"float32 copy (max |float32 - {result.converted_from}| = "
                   f"{result.precision_diff:.3g}).")
