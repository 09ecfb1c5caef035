"""kerascnn.evaluation: evaluate() metrics and predict() on image files."""

from __future__ import annotations

import types

import numpy as np
import pytest

from kerascnn.checks import InputError

from kerascnn.evaluation import (
    classification_metrics,
    evaluate,
    find_images,
    load_image,
    predict,
    to_probabilities,
)

CLASSES = ["cat", "dog", "bird"]


def tiny_model(input_shape=(12, 12, 1), num_classes=3, softmax=True, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(num_classes, activation="softmax" if softmax else None,
                             kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
                             name="predictions")(x)
    return keras.Model(inp, out)


@pytest.fixture
def model_path(tmp_path):
    from kerascnn.runs import save_model

    return str(save_model(tiny_model(), tmp_path / "m.keras", class_names=CLASSES))


def write_images(folder, n, size=(20, 24), mode="RGB", seed=0, ext="png"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
        path = folder / f"img{i:04d}.{ext}"
        img.save(path)
        paths.append(path)
    return paths


def data(n=40, shape=(12, 12, 1), classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape)).astype(np.uint8), rng.integers(0, classes, n)


# -- metrics -------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    y_pred[y_pred == 3] = 2  # class 3 never predicted: zero precision, not NaN
    cm, p, r, f, s = classification_metrics(y_true, y_pred, 4)
    np.testing.assert_array_equal(cm, confusion_matrix(y_true, y_pred, labels=range(4)))
    ref = precision_recall_fscore_support(y_true, y_pred, labels=range(4), zero_division=0)
    for mine, theirs in zip((p, r, f, s), ref):
        np.testing.assert_allclose(mine, theirs)


def test_evaluate_matches_keras_and_sklearn(model_path):
    import keras
    from sklearn.metrics import log_loss

    x, y = data()
    result = evaluate(model_path, (x, y), batch_size=16, top_losses=5)
    model = keras.saving.load_model(model_path)
    probs = model.predict(x.astype("float32"), verbose=0)
    assert result.num_samples == 40
    assert result.accuracy == pytest.approx(float((probs.argmax(1) == y).mean()))
    assert result.loss == pytest.approx(log_loss(y, probs, labels=range(3)), rel=1e-5)
    np.testing.assert_allclose(result.probabilities, probs, atol=1e-6)
    assert result.confusion_matrix.sum() == 40
    # the kept worst samples are the true top losses, with their images
    worst = np.argsort(-result.losses)[:5]
    np.testing.assert_array_equal(result.top_loss_indices, worst)
    np.testing.assert_array_equal(result.top_loss_images, x[worst])
    d = result.to_dict()
    assert [c["class"] for c in d["per_class"]] == CLASSES
    assert d["top_losses"][0]["loss"] == pytest.approx(result.losses.max())
    assert sum(c["support"] for c in d["per_class"]) == 40


def test_evaluate_logits_model_same_as_softmax_model(tmp_path):
    import keras

    x, y = data()
    logits = tiny_model(softmax=False)
    soft = keras.Model(logits.inputs, keras.layers.Softmax()(logits.outputs[0]))
    a = evaluate(logits, (x, y), top_losses=0)
    b = evaluate(soft, (x, y), top_losses=0)
    assert a.loss == pytest.approx(b.loss, rel=1e-4)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    np.testing.assert_allclose(a.probabilities.sum(1), 1.0, atol=1e-5)


def test_evaluate_bundle_split_and_checks(model_path):
    import tensorflow as tf

    x, y = data(30)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    bundle = types.SimpleNamespace(train=ds, validation=None, test=ds, num_classes=3,
                                   class_names=CLASSES, input_shape=(12, 12, 1))
    assert evaluate(model_path, bundle, split="train").num_samples == 30
    with pytest.raises(InputError, match="no 'validation' split"):
        evaluate(model_path, bundle, split="validation")
    with pytest.raises(InputError, match="Unknown split.*Received: split='dev'"):
        evaluate(model_path, bundle, split="dev")
    with pytest.raises(InputError, match="model predicts 3 classes but the dataset has 5"):
        evaluate(model_path, types.SimpleNamespace(**{**vars(bundle), "num_classes": 5}))
    with pytest.raises(InputError, match="do not fit the model's input"):
        evaluate(model_path, types.SimpleNamespace(**{**vars(bundle),
                                                      "input_shape": (28, 28, 1)}))
    with pytest.raises(InputError, match=r"Labels must be class ids in \[0, 2\]"):
        evaluate(model_path, (x, y + 3))


def test_evaluate_bad_model(tmp_path):
    with pytest.raises(InputError, match="Model file not found"):
        evaluate(tmp_path / "nope.keras", data())
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(InputError, match="Not a Keras model file"):
        evaluate(bad, data())
    with pytest.raises(InputError, match="Expected a keras.Model"):
        evaluate(42, data())


# -- images and predict --------------------------------------------------------------------


def test_load_image_converts_and_resizes(tmp_path):
    (rgb,) = write_images(tmp_path, 1, size=(20, 24), mode="RGB")
    gray = load_image(rgb, (12, 10), 1)
    assert gray.shape == (12, 10, 1) and gray.dtype == np.uint8
    assert load_image(rgb, (8, 8), 3).shape == (8, 8, 3)
    assert load_image(rgb, (None, None), 4).shape == (20, 24, 4)
    (g,) = write_images(tmp_path / "g", 1, size=(12, 12), mode="L")
    from PIL import Image

    np.testing.assert_array_equal(load_image(g, (12, 12), 1)[..., 0], np.asarray(Image.open(g)))
    # gray -> RGB repeats the channel
    rgb3 = load_image(g, (12, 12), 3)
    np.testing.assert_array_equal(rgb3[..., 0], rgb3[..., 2])


def test_load_image_unreadable_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="Could not read image .*broken.png"):
        load_image(bad, (12, 12), 1)


def test_find_images(tmp_path):
    write_images(tmp_path / "a" / "x", 2)
    write_images(tmp_path / "a" / "y", 1, ext="jpg")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    found = find_images([tmp_path / "a"])
    assert [p.suffix for p in found] == [".png", ".png", ".jpg"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    with pytest.raises(InputError, match="holds no images.*empty"):
        find_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="not found.*missing.png"):
        find_images([tmp_path / "missing.png"])


def test_predict_files_match_model_and_class_names(model_path, tmp_path):
    import keras

    paths = write_images(tmp_path / "imgs", 7, size=(12, 12), mode="L")
    result = predict(model_path, [str(tmp_path / "imgs")], top_k=2, batch_size=3)
    assert result.files == [str(p) for p in paths]
    model = keras.saving.load_model(model_path)
    x = np.stack([load_image(p, (12, 12), 1) for p in paths]).astype("float32")
    np.testing.assert_allclose(result.probabilities, model.predict(x, verbose=0), atol=1e-6)
    rows = result.rows()
    assert len(rows) == 7 and len(rows[0]["predictions"]) == 2
    best = rows[0]["predictions"][0]
    assert best["class"] == CLASSES[int(result.probabilities[0].argmax())]
    assert best["probability"] >= rows[0]["predictions"][1]["probability"]


def test_predict_array_and_logits(tmp_path):
    x, _ = data(10)
    logits = tiny_model(softmax=False)
    result = predict(logits, x, top_k=3)
    expected = to_probabilities(logits.predict(x.astype("float32"), verbose=0), False)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, atol=1e-5)
    assert result.class_names == ["0", "1", "2"]  # no names stored: class ids


def test_predict_model_taking_any_size(tmp_path):
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    write_images(tmp_path / "a", 2, size=(10, 14))
    write_images(tmp_path / "b", 2, size=(16, 9), seed=3)
    result = predict(model, [tmp_path / "a", tmp_path / "b"], top_k=1, batch_size=4)
    img = load_image(tmp_path / "b" / "img0001.png", (None, None), 3)[None].astype("float32")
    np.testing.assert_allclose(result.probabilities[3], model.predict(img, verbose=0)[0],
                               atol=1e-6)


def test_predict_bad_inputs(model_path, tmp_path):
    write_images(tmp_path / "imgs", 1)
    with pytest.raises(InputError, match="top_k cannot be larger than the number of classes"):
        predict(model_path, [tmp_path / "imgs"], top_k=4)
    with pytest.raises(InputError, match="top_k must be an integer >= 1"):
        predict(model_path, [tmp_path / "imgs"], top_k=0)
    bad = tmp_path / "imgs" / "zz_bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="Could not read image .*zz_bad.jpg"):
        predict(model_path, [tmp_path / "imgs"])
    with pytest.raises(InputError, match="must have the model's input shape"):
        predict(model_path, np.zeros((2, 5, 5, 1)))


def test_model_with_code_is_refused_in_safe_mode(tmp_path):
    import keras

    from kerascnn.runs import save_model

    inp = keras.Input((12, 12, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    path = save_model(model, tmp_path / "lambda.keras", class_names=CLASSES)
    write_images(tmp_path / "imgs", 1, size=(12, 12), mode="L")
    with pytest.raises(InputError, match="Could not load .*lambda.keras.*(safe|Lambda)"):
        predict(path, [tmp_path / "imgs"])


def test_training_data_options(tmp_path):
    from kerascnn.evaluation import training_data_options
    from kerascnn.runs import save_model

    config = {"dataset": "digits.npz", "image_size": [20, 20], "seed": 3, "epochs": 9}
    path = save_model(tiny_model(), tmp_path / "run" / "model.keras", config=config)
    expected = {"dataset": "digits.npz", "image_size": (20, 20), "seed": 3}
    assert training_data_options(path) == expected
    assert training_data_options(tmp_path / "run") == expected  # a run folder
    bare = save_model(tiny_model(), tmp_path / "bare.keras")
    assert training_data_options(bare) == {}
    with pytest.raises(InputError, match="Model file not found"):
        training_data_options(tmp_path / "none.keras")
