"""`kerascnn summary`: the layer table by the formula, before anything is built."""

from __future__ import annotations

import json

import click

from kerascnn.cli._options import spec_from_options, spec_options


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _rows(analysis):
    for layer in analysis.layers:
        yield [layer.name, layer.kind, _shape(layer.output_shape), str(layer.receptive_field),
               f"{layer.params + layer.non_trainable_params:,}", f"{layer.macs:,}"]


HEADER = ["layer", "kind", "output", "RF", "params", "MACs"]


def render_table(analysis) -> str:
    rows = [HEADER] + list(_rows(analysis))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    right = {3, 4, 5}
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(_totals(analysis))
    return "\n".join(lines)


def _totals(analysis) -> list[str]:
    return [
        f"Input: {_shape(analysis.input_shape)}    Receptive field: {analysis.receptive_field}",
        f"Total params: {analysis.total_params:,}",
        f"Trainable params: {analysis.trainable_params:,}",
        f"Non-trainable params: {analysis.non_trainable_params:,}",
        f"MACs per sample: {analysis.total_macs:,}",
    ]


def render_markdown(analysis) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(analysis)]
    return "\n".join(lines + [""] + [f"- {t}" for t in _totals(analysis)])


@click.command(context_settings={"show_default": True})
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
    from kerascnn.analysis import analyze

    spec = spec_from_options(**kw)
    analysis = analyze(spec)
    if fmt == "json":
        click.echo(json.dumps({"spec": spec.to_dict(), **analysis.to_dict()}, indent=2))
    elif fmt == "markdown":
        click.echo(render_markdown(analysis))
    else:
        click.echo(render_table(analysis))
    if check_keras:
        from kerascnn.builders import build_cnn, check_against_keras

        problems = check_against_keras(build_cnn(spec), analysis)
        if problems:
            raise click.ClickException("Keras disagrees with the analysis: " + "; ".join(problems))
        click.echo(f"Keras check: {len(analysis.layers)} layers, shapes and "
                   f"{analysis.total_params:,} parameters agree.", err=True)
