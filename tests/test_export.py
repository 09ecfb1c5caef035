"""kerascnn.exporting: every format is checked against Keras; bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerascnn.checks import InputError
from kerascnn.exporting import ExportVerificationError, export, missing_onnx_dependencies

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture
def model_path(tmp_path, tiny_model):
    """conftest's tiny CNN (28x28x1 -> 4 classes) with its class names, as a `.keras` file."""
    from kerascnn.runs import save_model

    return save_model(tiny_model, tmp_path / "model.keras", class_names=CLASSES)


def _keras_outputs(model_path, x):
    from kerascnn.runs import load_model

    return load_model(model_path, compile=False).predict(x, verbose=0)


def _sample(size=28):
    return np.random.default_rng(5).integers(0, 256, (6, size, size, 1)).astype("float32")


def test_export_keras_keeps_class_names(model_path, tmp_path):
    from kerascnn.runs import load_model

    out = tmp_path / "copy.keras"
    result = export(model_path, out, format="keras")
    assert result.max_abs_diff == 0.0 and result.path == out and result.size_bytes > 0
    reloaded = load_model(out)
    assert reloaded.kerascnn_metadata["class_names"] == CLASSES
    x = _sample()
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), _keras_outputs(model_path, x))


def test_export_saved_model(model_path, tmp_path):
    import tensorflow as tf

    out = tmp_path / "sm"
    result = export(model_path, out, format="saved_model")
    assert result.max_abs_diff < 1e-5
    x = _sample()  # a sample other than the one export checked
    loaded = tf.saved_model.load(str(out))  # keep a reference: its variables die with it
    served = loaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, _keras_outputs(model_path, x), atol=1e-5)
    assert json.loads((out / "kerascnn.json").read_text())["class_names"] == CLASSES
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_tflite(model_path, tmp_path):
    from kerascnn.exporting import _run_tflite

    out = tmp_path / "m.tflite"
    result = export(model_path, out, format="tflite")
    assert result.max_abs_diff < 1e-5
    assert out.read_bytes()[4:8] == b"TFL3"  # the flatbuffer identifier
    x = _sample()
    np.testing.assert_allclose(_run_tflite(out, x), _keras_outputs(model_path, x), atol=1e-5)


@pytest.mark.skipif(bool(missing_onnx_dependencies()),
                    reason="ONNX extra not installed: pip install 'kerascnn[onnx]'")
def test_export_onnx(model_path, tmp_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    result = export(model_path, out, format="onnx")
    assert result.max_abs_diff < 1e-5
    x = _sample()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, _keras_outputs(model_path, x), atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["kerascnn"])["class_names"] == CLASSES


def test_export_onnx_without_extra(model_path, tmp_path, monkeypatch):
    import kerascnn.exporting as ex

    monkeypatch.setattr(ex, "missing_onnx_dependencies", lambda: ["tf2onnx"])
    with pytest.raises(ImportError, match=r"pip install 'kerascnn\[onnx\]'"):
        export(model_path, tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_bad_inputs(model_path, tmp_path):
    with pytest.raises(InputError, match="Unknown export format.*Received: format='pt'"):
        export(model_path, tmp_path / "m.pt", format="pt")
    existing = tmp_path / "m.tflite"
    existing.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        export(model_path, existing, format="tflite")
    assert existing.read_bytes() == b"old"
    with pytest.raises(InputError, match="must end in '.keras'"):
        export(model_path, tmp_path / "m.h5", format="keras")
    with pytest.raises(InputError, match="Model file not found"):
        export(tmp_path / "none.keras", tmp_path / "x.keras")
    with pytest.raises(InputError, match="tolerance must be a number >= 0.0. Received: "):
        export(model_path, tmp_path / "x.keras", tolerance=-1)


def test_export_overwrite_replaces(model_path, tmp_path):
    from kerascnn.runs import load_model

    out = tmp_path / "m.keras"
    out.write_bytes(b"old")
    export(model_path, out, format="keras", overwrite=True)
    assert load_model(out).kerascnn_metadata["class_names"] == CLASSES
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "stale.txt").write_text("from before")
    export(model_path, sm, format="saved_model", overwrite=True)
    assert not (sm / "stale.txt").exists() and (sm / "saved_model.pb").is_file()


def test_export_disagreement_leaves_nothing(model_path, tmp_path, monkeypatch):
    import kerascnn.exporting as ex

    monkeypatch.setitem(ex._RUNNERS, "keras", lambda path, x: np.zeros((len(x), len(CLASSES))))
    out = tmp_path / "copy.keras"
    with pytest.raises(ExportVerificationError, match="disagrees with the Keras model"):
        export(model_path, out, format="keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_export_mixed_precision_model_as_float32(tmp_path):
    import keras

    from kerascnn.exporting import _run_tflite

    inp = keras.Input((10, 10, 1))
    x = keras.layers.Rescaling(1 / 255, dtype="mixed_bfloat16")(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu", dtype="mixed_bfloat16")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_bfloat16")(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", dtype="float32")(x))
    out = tmp_path / "mp.tflite"
    result = export(model, out, format="tflite")
    assert result.converted_from == "mixed_bfloat16"
    assert result.max_abs_diff < 1e-5  # against the float32 Keras copy
    assert 0 < result.precision_diff < 0.05  # bfloat16 rounding, reported, not hidden
    x = _sample(size=10)
    np.testing.assert_allclose(_run_tflite(out, x), model.predict(x, verbose=0), atol=0.05)
