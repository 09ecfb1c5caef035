"""kerascnn.augment: validation (pure Python), and the Keras layers kerascnn.data makes from it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kerascnn.augment import AUGMENTATIONS, validate_augmentation
from kerascnn.checks import InputError
from kerascnn.data import augmentation_layers


def test_validate_normalizes_names_and_defaults():
    entries = validate_augmentation(["flip", {"name": "Translation", "factor": 0.2}, "crop"])
    assert entries == ({"name": "flip", "mode": "horizontal"},
                       {"name": "translation", "factor": 0.2},
                       {"name": "crop", "factor": 0.125})
    assert validate_augmentation(None) == ()
    assert validate_augmentation([]) == ()
    assert validate_augmentation("zoom") == ({"name": "zoom", "factor": 0.1},)
    # idempotent: a validated tuple validates to itself (the spec stores it)
    assert validate_augmentation(entries) == entries


def test_every_name_has_defaults_that_validate():
    for name in AUGMENTATIONS:
        (entry,) = validate_augmentation([name])
        assert entry["name"] == name


@pytest.mark.parametrize("config, match", [
    (["flipp"], r"Unknown augmentation 'flipp'.*Did you mean 'flip'"),
    (["blur"], r"Unknown augmentation 'blur'; allowed: flip, translation"),
    ([{"factor": 0.1}], r"has no 'name'"),
    ([3], r"must be a name or a mapping"),
    ([{"name": 3}], r"names are strings"),
    ([{"name": "zoom", "strength": 2}], r"Unknown parameter\(s\) strength for augmentation 'zoom'"),
    ([{"name": "zoom", "factor": 0}], r"factor in \(0, 0.9\]. Received: factor=0"),
    ([{"name": "rotation", "factor": 1.5}], r"factor in \(0, 1.0\]"),
    ([{"name": "contrast", "factor": "big"}], r"Received: factor='big'"),
    ([{"name": "crop", "factor": float("nan")}], r"factor in \(0, 0.5\]"),
    ([{"name": "flip", "mode": "diagonal"}], r"mode one of horizontal, vertical"),
    (["flip", "flip"], r"may appear once; repeated: flip"),
    (42, r"must be a list of names or mappings"),
])
def test_validate_rejects_bad_config(config, match):
    with pytest.raises(InputError, match=match):
        validate_augmentation(config)


@pytest.mark.parametrize("strength", [-0.5, float("inf"), "x", True])
def test_bad_strength(strength):
    with pytest.raises(InputError, match="strength must be a number >= 0"):
        augmentation_layers(["flip"], strength)


def test_import_is_light():
    code = ("import sys, kerascnn.augment; "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_layers_scale_with_strength_and_cap():
    layers = augmentation_layers(["flip", {"name": "zoom", "factor": 0.2}, "contrast", "crop"],
                                 strength=2.0)
    assert [layer.name for layer in layers] == ["augment_flip", "augment_zoom", "augment_contrast",
                                                "augment_crop"]
    zoom = layers[1]
    assert zoom.height_factor == pytest.approx(0.4)
    assert augmentation_layers([{"name": "zoom", "factor": 0.8}], 3.0)[0].height_factor == \
        pytest.approx(0.9)  # capped at the largest factor RandomZoom accepts here
    assert augmentation_layers(["flip", "zoom"], strength=0) == []
    assert augmentation_layers([], strength=1) == []


def test_layers_are_identity_at_inference_and_random_in_training():
    import keras

    x = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 1)).astype("float32")
    layers = augmentation_layers(["flip", "translation", "rotation", "zoom", "contrast", "crop"],
                                 seed=1)
    model = keras.Sequential([keras.Input((16, 16, 1)), *layers])
    np.testing.assert_allclose(model(x, training=False), x, atol=1e-6)
    augmented = np.asarray(model(x, training=True))
    assert augmented.shape == x.shape
    assert not np.allclose(augmented, x)


def test_crop_is_a_zero_padded_shift():
    import keras

    x = np.ones((8, 10, 10, 1), "float32")
    (crop,) = augmentation_layers([{"name": "crop", "factor": 0.3}], seed=3)
    out = np.asarray(crop(x, training=True))
    assert out.shape == x.shape
    values = set(np.unique(out).tolist())
    assert values <= {0.0, 1.0}  # nearest: pixels move whole, padding is zeros
    assert 0.0 in values
    assert isinstance(crop, keras.layers.RandomTranslation)
