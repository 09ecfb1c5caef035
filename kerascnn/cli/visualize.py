"""`kerascnn visualize` and `kerascnn report`: pictures of a model and of a search."""

from __future__ import annotations

import click

from kerascnn.checks import CAM_METHODS, VISUALIZE_KINDS
from kerascnn.cli import command, configure_logging
from kerascnn.cli._options import start_tensorflow, verbosity_options
from kerascnn.images import check_image


@command()
@click.argument("model", type=click.Path())
@click.option("--kind", type=click.Choice(VISUALIZE_KINDS), required=True,
              help="filters: first-layer kernels; feature-maps: each block's activations; "
                   "gradcam: class activation heat map; saliency: input gradients; "
                   "learning-curves: MODEL is a run folder (or history.csv), no image.")
@click.option("--image", type=click.Path(dir_okay=False),
              help="The image to explain (feature-maps, gradcam, saliency).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True,
              help="Picture file to write (.png, .svg, .pdf, .jpg).")
@click.option("--class", "class_index", type=int, default=None,
              help="Class index to explain (gradcam, saliency). [default: the predicted class]")
@click.option("--layer", default=None,
              help="Layer to draw (filters: a convolution; gradcam: a 2D feature map). "
                   "[default: first convolution / last convolution's activation]")
@click.option("--cam-method", type=click.Choice(CAM_METHODS), default="hirescam",
              help="gradcam: channels weighted by their mean gradient (Grad-CAM); hirescam: "
                   "each position by its own gradient (HiResCAM), the same as Grad-CAM for "
                   "global-pooling heads and faithful for flatten heads.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@verbosity_options
def visualize(model, kind, image, output, class_index, layer, cam_method, overwrite, verbose,
              quiet):
    """Draw what MODEL sees: filters, feature maps, Grad-CAM or saliency.

    MODEL is a .keras file, a run folder or a tune folder (loaded in Keras
    safe mode). The image is resized and converted to what the model takes.

    \b
    Examples:
        kerascnn visualize runs/simple --kind filters -o filters.png
        kerascnn visualize runs/simple --image shoe.png --kind gradcam -o cam.png
        kerascnn visualize runs/simple --kind learning-curves -o curves.png
    """
    configure_logging(verbose, quiet)
    if kind == "learning-curves" and (image is not None or class_index is not None):
        raise click.UsageError("--kind learning-curves takes a run folder only; "
                               "--image and --class do not apply. "
                               f"Received: image={image!r}, class={class_index!r}")
    if image is not None:  # a file that is not an image: refused before TensorFlow loads
        check_image(image)
    start_tensorflow(verbose)
    from kerascnn.visualize import visualize as draw

    plot = draw(model, kind, output, image=image, class_index=class_index, layer=layer,
                cam_method=cam_method, overwrite=overwrite)
    if not quiet:
        click.echo(f"{plot.title}: {plot.path}")


@command()
@click.argument("search_dir", type=click.Path())
@click.option("--output", "-o", type=click.Path(file_okay=False), required=True,
              help="Folder for index.html, report.md and the pictures.")
@click.option("--top", type=click.IntRange(min=1), default=5,
              help="Draw the learning curves of this many best trials.")
@click.option("--overwrite", is_flag=True, help="Replace a report already in the folder.")
@verbosity_options
def report(search_dir, output, top, overwrite, verbose, quiet):
    """Write an HTML and Markdown report of a search in SEARCH_DIR.

    SEARCH_DIR is the folder `kerascnn tune` wrote (<directory>/<project-name>),
    or its --directory when that holds one project. The report has the
    leaderboard, score against parameters and MACs with the Pareto front,
    score by N, M and K, and the learning curves of the best trials.
    """
    configure_logging(verbose, quiet)
    start_tensorflow(verbose)
    from kerascnn.report import write_report

    paths = write_report(search_dir, output, top=top, overwrite=overwrite)
    if not quiet:
        click.echo(f"Report: {paths['html']}")
        click.echo(f"        {paths['markdown']}")
