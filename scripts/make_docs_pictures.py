"""Make the pictures the README shows: one of each kind, small PNGs under `docs/`.

Trains the `simple` preset (without batch norm) for a few epochs on the bundled
Fashion-MNIST sample, then draws with the public kerascnn API:

    docs/filters.png            first-layer kernels
    docs/feature_maps.png       each block's activations for one test image
    docs/gradcam.png            class activation map (HiResCAM) for that image
    docs/saliency.png           input gradients for that image
    docs/learning_curves.png    from the run folder's history.csv
    docs/confusion_matrix.png   test split, the numbers `kerascnn evaluate` prints
    docs/top_losses.png         the worst-classified test images
    docs/report_score_vs_cost.png   from `kerascnn report` of a small real search

Run from the repository root (about 3-5 minutes on 2 CPU cores):

    python scripts/make_docs_pictures.py
    python scripts/make_docs_pictures.py --search runs/tune   # reuse a search
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

DOCS = Path(__file__).resolve().parent.parent / "docs"
EPOCHS = 4
SEED = 0
IMAGE_CLASS = "Ankle boot"
MAX_BYTES = 150_000


def log(message: str) -> None:
    click.echo(message, err=True)


def pick_image(bundle, model, wanted: str):
    """The first test image of class `wanted` that the model classifies right."""
    import numpy as np

    target = bundle.class_names.index(wanted) if wanted in bundle.class_names else 0
    for x, y in bundle.test:
        x, y = np.asarray(x), np.asarray(y)
        predicted = np.asarray(model(x, training=False)).argmax(axis=1)
        hits = np.flatnonzero((y == target) & (predicted == target))
        if hits.size:
            return x[hits[0]]
    raise RuntimeError(f"No correctly classified test image of class {wanted!r}")


@click.command()
@click.option("--output", type=click.Path(file_okay=False), default=str(DOCS),
              show_default=True, help="Folder for the PNGs.")
@click.option("--search", type=click.Path(file_okay=False), default=None,
              help="An existing tune folder for the report picture (default: run a small "
                   "search, about a minute).")
@click.option("--epochs", type=click.IntRange(min=1), default=EPOCHS, show_default=True)
def main(output: str, search: str | None, epochs: int) -> None:
    import keras

    import kerascnn
    from kerascnn import visualize as V
    from kerascnn.report import load_search, plot_score_vs_cost
    from kerascnn.runs import load_model

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kerascnn-docs-"))
    start = time.time()
    try:
        # Train a small network on the bundled sample
        keras.utils.set_random_seed(SEED)
        run = work / "run"
        # without batch norm: with it, a few epochs leave the moving statistics far
        # from the data's (4 epochs: 0.86 train accuracy, 0.38 test accuracy)
        kerascnn.train("simple", dataset="fashion_mnist_sample", epochs=epochs,
                       output_dir=str(run), seed=SEED, batch_norm=False)
        model = load_model(run)
        bundle = kerascnn.load_dataset("fashion_mnist_sample", seed=SEED)
        log(f"trained in {time.time() - start:.0f} s")

        # What the network sees, for one test image
        image = pick_image(bundle, model, IMAGE_CLASS)
        pictures = [
            V.plot_filters(model, output=out / "filters.png"),
            V.plot_feature_maps(model, image, max_channels=8, output=out / "feature_maps.png"),
            V.plot_gradcam(model, image, output=out / "gradcam.png"),
            V.plot_saliency(model, image, output=out / "saliency.png"),
            V.plot_learning_curves(run, output=out / "learning_curves.png",
                                   title=f"Learning curves: simple preset, {epochs} epochs"),
        ]

        # Evaluation pictures, from the numbers `evaluate` reports
        result = kerascnn.evaluate(model, bundle)
        for name, plot in V.evaluation_figures(model, bundle, result).items():
            plot.path = V.save_figure(plot.figure, out / f"{name}.png")
            pictures.append(plot)

        # A search report
        if search is None:
            search = str(work / "tuning" / "docs")
            kerascnn.tune("fashion_mnist_sample", tuner="random", max_trials=6, epochs=2,
                          time_budget=None,
                          directory=str(work / "tuning"), project_name="docs", seed=SEED,
                          space={"conv_blocks": [1, 2, 3], "convs_per_block": [1, 2],
                                 "filters": [8, 16, 32], "dense_layers": [0, 1]})
        pictures.append(plot_score_vs_cost(load_search(search),
                                           output=out / "report_score_vs_cost.png"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for plot in pictures:
        size = plot.path.stat().st_size
        flag = "" if size <= MAX_BYTES else f"  (over {MAX_BYTES // 1000} KB!)"
        log(f"{plot.path}  {size / 1000:.0f} KB  {plot.title}{flag}")
    log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
