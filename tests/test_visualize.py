"""Pictures checked by what they show, not only by their existence.

A tiny network learns synthetic images whose class is the quadrant holding a
bright square; Grad-CAM and saliency must then point at that quadrant. The
confusion matrix drawn must carry evaluate's counts, the top losses
evaluate's worst samples, the learning curves the numbers in history.csv.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from kerascnn.checks import InputError

SIZE = 24
HALF = SIZE // 2
CLASSES = ["top-left", "top-right", "bottom-left", "bottom-right"]


def quadrant_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dim noise plus a bright 5x5 square in the quadrant named by the label."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, SIZE, SIZE, 1)).astype("uint8")
    y = np.arange(n) % 4
    for i, label in enumerate(y):
        row0 = 0 if label in (0, 1) else HALF
        col0 = 0 if label in (0, 2) else HALF
        r = row0 + rng.integers(1, HALF - 6)
        c = col0 + rng.integers(1, HALF - 6)
        x[i, r:r + 5, c:c + 5, 0] = 255
    return x, y.astype("int64")


def quadrant_mass(heatmap: np.ndarray, label: int) -> float:
    rows = slice(0, HALF) if label in (0, 1) else slice(HALF, SIZE)
    cols = slice(0, HALF) if label in (0, 2) else slice(HALF, SIZE)
    return float(heatmap[rows, cols].sum() / max(heatmap.sum(), 1e-12))


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory):
    """A small CNN trained to tell the square's quadrant (a few seconds on 2 idle cores)."""
    import keras

    import kerascnn
    from kerascnn.runs import save_model
    from kerascnn.training import compile_model

    keras.utils.set_random_seed(0)
    model = kerascnn.build_cnn(
        input_shape=(SIZE, SIZE, 1), num_classes=4, conv_blocks=2, convs_per_block=1,
        filters=(8, 16), dense_units=(16,), preprocessing=[keras.layers.Rescaling(1 / 255)])
    compile_model(model, learning_rate=5e-3)
    x, y = quadrant_images(480, seed=1)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    x_test, y_test = quadrant_images(64, seed=2)
    accuracy = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    assert accuracy > 0.9, f"the tiny network did not learn the quadrants ({accuracy:.2f})"
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_model(model, path, class_names=CLASSES)
    return model, path, (x_test, y_test)


@pytest.fixture
def image_file(tmp_path, quadrant_model):
    from PIL import Image

    _, _, (x_test, y_test) = quadrant_model
    index = int(np.flatnonzero(y_test == 3)[0])
    path = tmp_path / "square.png"
    Image.fromarray(x_test[index, ..., 0]).save(path)
    return path, x_test[index], 3


def no_conv_model(tmp_path):
    import keras

    from kerascnn.runs import save_model

    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    path = tmp_path / "dense.keras"
    save_model(keras.Model(inputs, outputs), path, class_names=CLASSES)
    return path


# ---------------------------------------------------------------------------
# Grad-CAM and saliency: where the evidence is
# ---------------------------------------------------------------------------


def test_gradcam_puts_its_mass_on_the_square(quadrant_model):
    from kerascnn.visualize import gradcam

    model, _, (x_test, y_test) = quadrant_model
    masses = []
    for label in range(4):
        for index in np.flatnonzero(y_test == label)[:3]:
            cam = gradcam(model, x_test[index])
            assert cam.heatmap.shape == (SIZE, SIZE)
            assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() == pytest.approx(1.0)
            assert cam.predicted == label
            masses.append(quadrant_mass(cam.heatmap, label))
    # chance is 0.25; the square's quadrant holds most of the map every time
    assert min(masses) > 0.5, masses
    assert np.mean(masses) > 0.7, masses


def test_hirescam_is_more_faithful_than_gradcam_behind_a_flatten_head(quadrant_model):
    """Why HiResCAM is the default: Grad-CAM's spatially averaged weights lose the square."""
    from kerascnn.visualize import gradcam

    model, _, (x_test, y_test) = quadrant_model
    hires, classic = [], []
    for label in range(4):
        index = int(np.flatnonzero(y_test == label)[0])
        hires.append(quadrant_mass(gradcam(model, x_test[index]).heatmap, label))
        classic.append(quadrant_mass(gradcam(model, x_test[index], method="gradcam").heatmap,
                                     label))
    assert np.mean(hires) > np.mean(classic) + 0.2, (hires, classic)


def test_gradcam_explains_the_requested_class(quadrant_model):
    from kerascnn.visualize import gradcam

    model, _, (x_test, y_test) = quadrant_model
    index = int(np.flatnonzero(y_test == 0)[0])
    chosen = gradcam(model, x_test[index], class_index=2)
    assert chosen.class_index == 2 and chosen.predicted == 0
    assert chosen.probability < 0.5
    assert chosen.layer == "block2_conv1"  # its ReLU is inside the layer


def test_gradcam_and_hirescam_agree_behind_global_pooling():
    """Behind global average pooling the gradient is the same at every position."""
    import keras

    from kerascnn.visualize import gradcam

    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    image, _ = quadrant_images(1, seed=5)
    for class_index in range(4):
        classic = gradcam(model, image[0], class_index, method="gradcam")
        hires = gradcam(model, image[0], class_index, method="hirescam")
        np.testing.assert_allclose(classic.coarse, hires.coarse, atol=1e-5)
    with pytest.raises(InputError, match="allowed: hirescam, gradcam"):
        gradcam(model, image[0], method="scorecam")


def test_saliency_is_highest_on_the_square(quadrant_model):
    from kerascnn.visualize import saliency

    model, _, (x_test, y_test) = quadrant_model
    for label in range(4):
        index = int(np.flatnonzero(y_test == label)[0])
        smooth, chosen = saliency(model, x_test[index])
        plain, _ = saliency(model, x_test[index], samples=1, noise=0.0)
        assert chosen == label
        assert smooth.shape == (SIZE, SIZE) and smooth.max() == pytest.approx(1.0)
        for smap in (plain, smooth):  # the square's quadrant is the most salient one
            masses = [quadrant_mass(smap, q) for q in range(4)]
            assert int(np.argmax(masses)) == label, masses
    with pytest.raises(InputError, match="samples must be an integer >= 1. Received: samples=0"):
        saliency(model, x_test[0], samples=0)
    with pytest.raises(InputError, match="noise is a fraction"):
        saliency(model, x_test[0], noise=3.0)


def test_plot_gradcam_draws_the_map_it_computed(quadrant_model, tmp_path):
    from PIL import Image

    from kerascnn.visualize import gradcam, plot_gradcam

    model, _, (x_test, y_test) = quadrant_model
    index = int(np.flatnonzero(y_test == 1)[0])
    plot = plot_gradcam(model, x_test[index], output=tmp_path / "cam.png")
    drawn = plot.figure.axes[1].images[-1].get_array()
    np.testing.assert_allclose(np.asarray(drawn), gradcam(model, x_test[index]).heatmap,
                               atol=1e-5)
    assert plot.title.startswith("HiResCAM for class '1'")
    classic = plot_gradcam(model, x_test[index], method="gradcam")
    assert classic.title.startswith("Grad-CAM for class '1'")
    with Image.open(plot.path) as img:
        assert img.size == (600, 330)


# ---------------------------------------------------------------------------
# Filters and feature maps
# ---------------------------------------------------------------------------


def test_filters_grid_shows_the_first_layer_kernels(quadrant_model):
    from kerascnn.visualize import plot_filters

    model, _, _ = quadrant_model
    plot = plot_filters(model)
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    assert plot.data["layer"] == "block1_conv1"
    np.testing.assert_array_equal(plot.data["kernel"], kernel)
    cells = [ax for ax in plot.figure.axes if ax.images]
    assert len(cells) == kernel.shape[-1] == 8
    for i, ax in enumerate(cells):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), kernel[..., 0, i])
        assert ax.get_title() == f"#{i}"
    assert plot.figure._suptitle.get_text() == plot.title


def test_feature_maps_one_grid_per_block(quadrant_model):
    import keras

    from kerascnn.visualize import plot_feature_maps

    model, _, (x_test, _) = quadrant_model
    plot = plot_feature_maps(model, x_test[0])
    assert [b["label"] for b in plot.data["blocks"]] == ["block1", "block2"]
    assert [b["layer"] for b in plot.data["blocks"]] == ["block1_conv1", "block2_conv1"]
    probe = keras.Model(model.inputs[0], model.get_layer("block2_conv1").output)
    expected = np.asarray(probe(x_test[:1].astype("float32")))[0]
    np.testing.assert_allclose(plot.data["activations"][1], expected, rtol=1e-5, atol=1e-5)
    # the channels shown are the most active ones, most active first
    means = expected.mean(axis=(0, 1))
    shown = plot.data["blocks"][1]["channels"]
    assert shown == [int(c) for c in np.argsort(-means, kind="stable")[:16]]
    assert len(plot.figure.subfigs) == 3  # the input and one grid per block


def test_models_with_a_nested_backbone():
    """Fine-tuning models hold their backbone as a nested model after a 1x1 gray-to-RGB conv."""
    import keras

    from kerascnn.visualize import feature_maps, filters, gradcam, saliency

    inner_in = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 5, padding="same", activation="relu", name="Conv1")(inner_in)
    backbone = keras.Model(inner_in, keras.layers.Conv2D(6, 3, padding="same",
                                                         activation="relu")(h), name="backbone")
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(3, 1, name="to_rgb")(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax",
                                                   name="predictions")(x))
    image, _ = quadrant_images(1, seed=3)
    name, kernel = filters(model)
    assert name == "Conv1" and kernel.shape == (5, 5, 3, 4)  # not the 1x1 to_rgb
    cam = gradcam(model, image[0])
    assert cam.layer == "backbone" and cam.heatmap.shape == (SIZE, SIZE)
    maps = feature_maps(model, image[0])
    assert [(label, a.shape) for label, _, a in maps] == [("to_rgb", (SIZE, SIZE, 3)),
                                                        ("backbone", (SIZE, SIZE, 6))]
    assert saliency(model, image[0])[0].shape == (SIZE, SIZE)


# ---------------------------------------------------------------------------
# Training and evaluation pictures
# ---------------------------------------------------------------------------


def test_confusion_matrix_and_top_losses_carry_evaluates_numbers(quadrant_model, tmp_path):
    from kerascnn.evaluation import evaluate
    from kerascnn.visualize import evaluation_figures, evaluation_plots

    model, model_path, (x_test, y_test) = quadrant_model
    # flip some labels so there are mistakes to show
    y_noisy = y_test.copy()
    y_noisy[:6] = (y_noisy[:6] + 1) % 4
    result = evaluate(model_path, (x_test, y_noisy), batch_size=16)  # class names from the file
    figures = evaluation_figures(model, None, result)
    matrix = figures["confusion_matrix"]
    drawn = [[int(t) for t in row] for row in matrix.data["annotations"]]
    assert drawn == result.confusion_matrix.tolist()
    assert sum(map(sum, drawn)) == 64
    assert f"accuracy {result.accuracy:.3f}" in matrix.title
    assert [t.get_text() for t in matrix.figure.axes[0].get_xticklabels()] == CLASSES

    top = figures["top_losses"]
    assert top.data["indices"] == [int(i) for i in result.top_loss_indices[:9]]
    np.testing.assert_allclose(top.data["losses"], result.losses[top.data["indices"]])
    assert set(range(6)) <= set(top.data["indices"])  # the flipped labels are the worst
    first = top.data["indices"][0]
    assert top.data["titles"][0].startswith(
        f"true: {CLASSES[y_noisy[first]]}\npred: {CLASSES[result.y_pred[first]]}")
    drawn_image = np.asarray(top.figure.axes[0].images[0].get_array())
    np.testing.assert_allclose(drawn_image, x_test[first, ..., 0] / 255.0, atol=1e-6)

    written = evaluation_plots(model, None, result, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["confusion_matrix.png", "top_losses.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_cli_evaluate_plots(runner, quadrant_model, tmp_path):
    """`kerascnn evaluate --plots DIR` draws through `evaluation_plots`."""
    from PIL import Image

    from kerascnn.cli import main

    _, model_path, (x_test, y_test) = quadrant_model
    x_train, y_train = quadrant_images(40, seed=4)
    data = tmp_path / "quadrants.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    plots = tmp_path / "plots"
    result = runner.invoke(main, ["evaluate", str(model_path), "--dataset", str(data),
                                  "--plots", str(plots), "--format", "json"])
    assert result.exit_code == 0, result.output
    for name in ("confusion_matrix.png", "top_losses.png"):
        with Image.open(plots / name) as img:
            assert img.format == "PNG" and min(img.size) >= 300


def test_learning_curves_draw_history_csv(tmp_path):
    from kerascnn.visualize import plot_learning_curves, read_history

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"epoch": e, "accuracy": 0.5 + 0.1 * e, "learning_rate": 0.001 / (e + 1),
             "loss": 1.0 / (e + 1), "val_accuracy": 0.45 + 0.1 * e - 0.05 * (e == 3),
             "val_loss": 1.1 / (e + 1) + 0.2 * (e == 3)} for e in range(4)]
    with open(run / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    history = read_history(run)
    assert history["epoch"] == [1, 2, 3, 4]
    plot = plot_learning_curves(run, output=tmp_path / "curves.png")
    assert plot.data["loss"]["val_loss"] == pytest.approx([r["val_loss"] for r in rows])
    assert plot.data["accuracy"]["accuracy"] == pytest.approx([r["accuracy"] for r in rows])
    loss_ax, acc_ax, lr_ax = plot.figure.axes
    assert loss_ax.get_xlabel() == "epoch" and loss_ax.get_ylabel() == "loss"
    train_line = loss_ax.get_lines()[0]
    assert list(train_line.get_xdata()) == [1, 2, 3, 4]
    assert list(train_line.get_ydata()) == pytest.approx([r["loss"] for r in rows])
    assert "best epoch 3" in [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert lr_ax.get_yscale() == "log"
    assert plot.path.is_file() and plot.title == "Learning curves (run)"


def test_plot_functions_refuse_bad_numbers():
    from kerascnn.visualize import plot_confusion_matrix, plot_top_losses, read_history

    with pytest.raises(InputError, match="must be square"):
        plot_confusion_matrix([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(InputError, match="one class name per row"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a"])
    with pytest.raises(InputError, match="non-negative integer"):
        plot_confusion_matrix([[1, -1], [0, 1]])
    with pytest.raises(InputError, match="one entry per sample"):
        plot_top_losses(np.zeros((3, 4, 4, 1)), [0, 1], [0, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="No training history"):
        read_history("/nonexistent/run")


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["filters", "feature-maps", "gradcam", "saliency"])
def test_cli_visualize_writes_each_kind(runner, quadrant_model, image_file, tmp_path, kind):
    from PIL import Image

    from kerascnn.cli import main

    _, model_path, _ = quadrant_model
    image, _, _ = image_file
    out = tmp_path / f"{kind}.png"
    args = [str(model_path), "--kind", kind, "--output", str(out)]
    if kind != "filters":
        args += ["--image", str(image)]
    result = runner.invoke(main, ["visualize", *args])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    with Image.open(out) as img:
        assert img.format == "PNG" and min(img.size) >= 300
    if kind == "gradcam":
        assert "HiResCAM for class 'bottom-right'" in result.output


def test_cli_learning_curves_from_run_folder(runner, tmp_path):
    from kerascnn.cli import main

    (tmp_path / "history.csv").write_text("epoch,accuracy,loss\n0,0.5,1.2\n1,0.7,0.8\n")
    out = tmp_path / "curves.png"
    result = runner.invoke(main, ["visualize", str(tmp_path), "--kind", "learning-curves",
                                  "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_cli_bad_inputs_are_one_line_exit_2(runner, quadrant_model, image_file, tmp_path):
    from kerascnn.cli import main

    _, model_path, _ = quadrant_model
    image, _, _ = image_file
    out = tmp_path / "out.png"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dense = no_conv_model(tmp_path)
    cases = [
        (["--image", str(corrupt), "--kind", "gradcam"], ["corrupt.png"]),
        (["--image", str(tmp_path / "missing.png"), "--kind", "saliency"], ["missing.png"]),
        (["--image", str(image), "--kind", "gradcam", "--class", "4"],
         ["from 0 to 3", "class=4"]),
        (["--image", str(image), "--kind", "saliency", "--class", "-1"], ["class=-1"]),
        (["--kind", "gradcam"], ["needs an image"]),
        (["--kind", "filters", "--layer", "fc1"], ["No 2D convolution layer named 'fc1'"]),
        (["--kind", "drawings"], ["drawings"]),
        (["--kind", "filters", "--output", str(tmp_path / "out.txt")], ["out.txt"]),
    ]
    for extra, needles in cases:
        args = ["visualize", str(model_path), "--output", str(out), *extra]
        if "--output" in extra:
            args = ["visualize", str(model_path), *extra]
        _one_line_error(runner.invoke(main, args), *needles)
    for kind in ("filters", "gradcam", "feature-maps"):
        result = runner.invoke(main, ["visualize", str(dense), "--kind", kind, "--image",
                                      str(image), "-o", str(out)])
        _one_line_error(result, "convolution")
    _one_line_error(runner.invoke(main, ["visualize", str(tmp_path / "nope.keras"), "--kind",
                                         "filters", "-o", str(out)]), "nope.keras")
    assert not out.exists()  # nothing written by any failure
    out.write_bytes(b"keep")
    _one_line_error(runner.invoke(main, ["visualize", str(model_path), "--kind", "filters",
                                         "-o", str(out)]), "--overwrite")
    assert out.read_bytes() == b"keep"


def test_signal_models_are_refused_before_drawing(tmp_path):
    import keras

    from kerascnn import visualize as V

    inputs = keras.Input((64, 2))
    x = keras.layers.Conv1D(4, 5, name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(InputError, match="2D convolution layer"):
        V.visualize(model, "filters", tmp_path / "f.png")
    with pytest.raises(InputError, match=r"2D images .*Received: input_shape=\(64, 2\)"):
        V.visualize(model, "gradcam", tmp_path / "g.png", image=np.zeros((64, 2)))
    assert not list(tmp_path.iterdir())


def test_library_input_checks(quadrant_model, tmp_path):
    from kerascnn import visualize as V

    model, _, (x_test, _) = quadrant_model
    with pytest.raises(InputError, match=r"from 0 to 3 .*Received: class=9"):
        V.gradcam(model, x_test[0], class_index=9)
    with pytest.raises(InputError, match="integer index"):
        V.saliency(model, x_test[0], class_index=1.5)
    with pytest.raises(InputError, match=r"input shape \(24, 24, 1\)"):
        V.gradcam(model, np.zeros((20, 20, 1)))
    with pytest.raises(InputError, match="Unknown picture kind"):
        V.visualize(model, "histogram", tmp_path / "x.png")
    with pytest.raises(InputError, match="No layer named 'nope'"):
        V.gradcam(model, x_test[0], layer="nope")
    with pytest.raises(InputError, match="2D feature map"):
        V.gradcam(model, x_test[0], layer="fc1")
    with pytest.raises(InputError, match="convolution layers"):
        V.plot_filters(no_conv_model(tmp_path))


def test_top_losses_read_the_split_again_when_the_result_kept_too_few(tiny_model, tiny_bundle):
    from kerascnn.evaluation import evaluate
    from kerascnn.visualize import evaluation_figures

    result = evaluate(tiny_model, tiny_bundle, split="validation", top_losses=2)
    assert len(result.top_loss_images) == 2
    with pytest.raises(InputError, match="kept 2 top-loss images and no dataset"):
        evaluation_figures(tiny_model, None, result, k=4)
    top = evaluation_figures(tiny_model, tiny_bundle, result, k=4)["top_losses"]
    assert top.data["indices"] == [int(i) for i in np.argsort(-result.losses,
                                                              kind="stable")[:4]]
    images = np.concatenate([np.asarray(x) for x, _ in tiny_bundle.validation])
    for ax, index in zip(top.figure.axes, top.data["indices"]):  # the validation images
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()),
                                   images[index, ..., 0] / 255.0, atol=1e-6)
