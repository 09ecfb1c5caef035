"""`kerascnn datasets`: the built-in datasets, or a description of any source."""

from __future__ import annotations

import json

import click

from kerascnn.checks import COLOR_MODES
from kerascnn.cli import command, configure_logging
from kerascnn.cli._format import shape, size, table
from kerascnn.cli._options import IMAGE_SIZE, seed_option, square, start_tensorflow
from kerascnn.data.builtin import list_datasets

OTHER_SOURCES = ("Also: tfds:NAME[:CONFIG] (a prepared tensorflow-datasets dataset), a folder "
                 "with one subfolder of images per class, or an .npz file "
                 "(x_train, y_train, x_test, y_test, or x, y).")


@command("datasets")
@click.argument("source", required=False)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Folder searched first for dataset files (also KERASCNN_DATA_DIR).")
@click.option("--image-size", type=IMAGE_SIZE, default=None,
              help="With SOURCE: resize images to H,W (needed for mixed sizes).")
@click.option("--color-mode", type=click.Choice(COLOR_MODES), default=None,
              help="With SOURCE: colour mode of the images.")
@click.option("--validation-split", type=click.FloatRange(0.0, 0.9, max_open=True), default=0.1,
              help="With SOURCE: fraction of training data held out for validation.")
@click.option("--download", is_flag=True, help="With SOURCE: allow downloading it.")
@seed_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def datasets(source, data_dir, image_size, color_mode, validation_split, download, seed, fmt):
    """List the built-in datasets, or describe SOURCE.

    Without SOURCE: each built-in name, where it would be read from on this
    machine, whether it is available offline now, its size and classes.

    With SOURCE (a built-in name, tfds:NAME[:CONFIG], a folder of class
    subfolders or an .npz file): load it as `--dataset SOURCE` would and print
    its splits, shapes, classes and fingerprint.
    """
    configure_logging(quiet=True)
    if source is None:
        rows = list_datasets(data_dir)
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
            return
        lines = [["name", "available", "train", "test", "shape", "classes", "size", "read from"]]
        lines += [[r["name"], "yes" if r["available"] else "no", f"{r['num_train']:,}",
                   f"{r['num_test']:,}", shape(r["input_shape"]), r["num_classes"],
                   size(r["size_bytes"]), r["location"]] for r in rows]
        click.echo(table(lines))
        click.echo("")
        for r in rows:
            click.echo(f"{r['name']}: {r['description']}. Classes: {', '.join(r['class_names'])}")
        click.echo("\n" + OTHER_SOURCES)
        return

    start_tensorflow()
    from kerascnn.data import load_dataset

    bundle = load_dataset(source, validation_split=validation_split, image_size=square(image_size),
                          color_mode=color_mode, data_dir=data_dir, download=download, seed=seed)
    if fmt == "json":
        click.echo(json.dumps(bundle.describe(), indent=2))
        return
    sees = f" (network sees {shape(bundle.image_size)})" if bundle.image_size else ""
    click.echo(f"source       {bundle.source}")
    click.echo(f"read from    {bundle.location}")
    click.echo(f"kind         {bundle.kind}, {bundle.dtype}, {shape(bundle.input_shape)}{sees}")
    click.echo(f"splits       train {bundle.num_train:,}, validation {bundle.num_validation:,}, "
               f"test {bundle.num_test:,}")
    click.echo(f"classes      {bundle.num_classes}: {', '.join(bundle.class_names)}")
    click.echo(f"fingerprint  {bundle.fingerprint}")
