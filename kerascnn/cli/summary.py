"""`kerascnn summary`: the layer table by the formula, before anything is built."""

from __future__ import annotations

import json

import click

from kerascnn.analysis import analyze
from kerascnn.cli import command
from kerascnn.cli._format import shape, table
from kerascnn.cli._options import spec_from_options, spec_options, start_tensorflow

HEADER = ["layer", "kind", "output", "RF", "params", "MACs"]
_RIGHT = (3, 4, 5)


def _rows(analysis) -> list[list[str]]:
    return [[layer.name, layer.kind, shape(layer.output_shape), str(layer.receptive_field),
             f"{layer.params + layer.non_trainable_params:,}", f"{layer.macs:,}"]
            for layer in analysis.layers]


def _totals(analysis) -> list[str]:
    return [
        f"Input: {shape(analysis.input_shape)}    Receptive field: {analysis.receptive_field}",
        f"Total params: {analysis.total_params:,}",
        f"Trainable params: {analysis.trainable_params:,}",
        f"Non-trainable params: {analysis.non_trainable_params:,}",
        f"MACs per sample: {analysis.total_macs:,}",
    ]


def render_table(analysis) -> str:
    """The layer table as aligned text, then the totals."""
    return "\n".join([table([HEADER, *_rows(analysis)], right=_RIGHT, rule=True), "",
                      *_totals(analysis)])


def render_markdown(analysis) -> str:
    """The layer table in Markdown, then the totals as a list."""
    return "\n".join([table([HEADER, *_rows(analysis)], markdown=True), "",
                      *(f"- {t}" for t in _totals(analysis))])


@command()
@spec_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]),
              default="table", help="Output format.")
@click.option("--check-keras", is_flag=True,
              help="Also build the Keras model and confirm every shape and parameter count.")
def summary(fmt: str, check_keras: bool, **kw) -> None:
    """Every layer's output size, receptive field, parameters and MACs.

    Computed by the formula, without TensorFlow: a network too deep for its
    input is refused here, before anything is built.

    \b
    Examples:
      kerascnn summary --preset vgg16
      kerascnn summary --preset simple --input-shape 32,32,3 --conv-blocks 3
      kerascnn summary --config spec.yaml --format markdown
    """
    spec = spec_from_options(**kw)
    analysis = analyze(spec)
    if fmt == "json":
        click.echo(json.dumps({"spec": spec.to_dict(), **analysis.to_dict()}, indent=2))
    elif fmt == "markdown":
        click.echo(render_markdown(analysis))
    else:
        click.echo(render_table(analysis))
    if check_keras:
        start_tensorflow()
        from kerascnn.builders import build_cnn, check_against_keras

        problems = check_against_keras(build_cnn(spec), analysis)
        if problems:
            raise click.ClickException("Keras disagrees with the analysis: " + "; ".join(problems))
        click.echo(f"Keras check: {len(analysis.layers)} layers, shapes and "
                   f"{analysis.total_params:,} parameters agree.", err=True)
