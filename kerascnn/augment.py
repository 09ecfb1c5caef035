"""Named augmentation: the list a spec or a config file holds, checked.

An augmentation entry is a name or a mapping with a ``name`` and the
parameters of that augmentation::

    ["flip", {"name": "translation", "factor": 0.1}, {"name": "contrast", "factor": 0.2}]

=============  ==========================================================  ====================
name           what it does (Keras layer)                                  parameters (default)
=============  ==========================================================  ====================
``flip``       mirror images (``RandomFlip``)                              ``mode`` ("horizontal")
``translation``  shift by up to ``factor`` of the size, reflected border     ``factor`` (0.1)
               (``RandomTranslation``)
``rotation``   rotate by up to ``factor`` of a full turn (``RandomRotation``)  ``factor`` (0.05)
``zoom``       zoom in or out by up to ``factor`` (``RandomZoom``)          ``factor`` (0.1)
``contrast``   scale contrast by up to ``factor`` (``RandomContrast``)      ``factor`` (0.2)
``crop``       pad-and-crop: a random window of the image padded by          ``factor`` (0.125)
               ``factor`` of its size with zeros, as in the CIFAR ResNet
               recipe (``RandomTranslation`` with constant fill, nearest)
=============  ==========================================================  ====================

Keras augmentation layers are active only in training (``model.fit``); at
inference (``predict``, ``evaluate``) they pass images through unchanged.
That is why ``crop`` is a zero-filled shift and not Keras's ``RandomCrop``:
Keras 3's ``RandomCrop`` changes the image size in training but returns its
input unchanged at inference, so the layers after it would see two sizes.

``strength`` scales every ``factor`` (the search tunes it, 0 turns augmentation
off); a scaled factor is capped at the largest value its layer accepts.

This module is pure Python (`kerascnn.spec` validates its ``augmentation``
field with :func:`validate_augmentation`); the Keras layers are made by
`kerascnn.data.augmentation_layers` (module `kerascnn.data.preprocessing`).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Mapping

from kerascnn.checks import InputError, check_float

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

# name -> (default parameters, largest factor the layer accepts)
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "flip": {"mode": "horizontal"},
    "translation": {"factor": 0.1},
    "rotation": {"factor": 0.05},
    "zoom": {"factor": 0.1},
    "contrast": {"factor": 0.2},
    "crop": {"factor": 0.125},
}
# the largest factor (after strength scaling) each layer accepts
MAX_FACTOR = {"translation": 1.0, "rotation": 1.0, "zoom": 0.9, "contrast": 1.0, "crop": 0.5}


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _entry(item: Any, position: int) -> dict[str, Any]:
    allowed = ", ".join(AUGMENTATIONS)
    if isinstance(item, str):
        name, params = item, {}
    elif isinstance(item, Mapping):
        if "name" not in item:
            raise InputError(
                f"Augmentation entry {position} has no 'name'; each entry is a name or a "
                f"mapping such as {{'name': 'translation', 'factor': 0.1}}. Received: {item!r}")
        params = {str(k): v for k, v in item.items() if k != "name"}
        name = item["name"]
    else:
        raise InputError(
            f"Augmentation entry {position} must be a name or a mapping with a 'name'; "
            f"allowed names: {allowed}. Received: {item!r}")
    if not isinstance(name, str):
        raise InputError(f"Augmentation names are strings; allowed: {allowed}. "
                         f"Received: name={name!r}")
    name = name.strip().lower()
    if name not in AUGMENTATIONS:
        raise InputError(f"Unknown augmentation {name!r}; allowed: {allowed}."
                         f"{_suggest(name, AUGMENTATIONS)} Received: {item!r}")
    defaults = AUGMENTATIONS[name]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise InputError(
            f"Unknown parameter(s) {', '.join(unknown)} for augmentation {name!r}; allowed: "
            f"{', '.join(defaults)}. Received: {item!r}")
    entry = {"name": name, **defaults, **params}
    if name == "flip":
        if entry["mode"] not in FLIP_MODES:
            raise InputError(f"Augmentation 'flip' takes mode one of {', '.join(FLIP_MODES)}. "
                             f"Received: mode={entry['mode']!r}")
    else:
        factor = entry["factor"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                or not math.isfinite(factor) or not 0 < factor <= MAX_FACTOR[name]:
            raise InputError(
                f"Augmentation {name!r} takes a factor in (0, {MAX_FACTOR[name]}]. "
                f"Received: factor={factor!r}")
        entry["factor"] = float(factor)
    return entry


def validate_augmentation(config: Any) -> tuple[dict[str, Any], ...]:
    """Check an augmentation list and return it in normal form.

    Args:
        config: `None`, one entry, or a list of entries; an entry is a name
            (`"flip"`) or a mapping with a `name` and parameters
            (`{"name": "zoom", "factor": 0.2}`). Names: flip, translation,
            rotation, zoom, contrast, crop.

    Returns:
        A tuple of dicts, each with `name` and every parameter filled in with
        its default, in the given order. Each name may appear once.

    Raises:
        InputError: for an unknown name (close names are suggested), an
            unknown parameter, a factor outside its range, or a repeated name.

    Example:
        >>> validate_augmentation(["flip", {"name": "zoom", "factor": 0.2}])
        ({'name': 'flip', 'mode': 'horizontal'}, {'name': 'zoom', 'factor': 0.2})
    """
    if config is None:
        return ()
    if isinstance(config, (str, Mapping)):
        config = [config]
    if not isinstance(config, (list, tuple)):
        raise InputError(
            "augmentation must be a list of names or mappings such as "
            f"['flip', {{'name': 'zoom', 'factor': 0.1}}]. Received: {config!r}")
    entries = tuple(_entry(item, i) for i, item in enumerate(config))
    names = [e["name"] for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"Each augmentation may appear once; repeated: {', '.join(repeated)}. "
                         f"Received: {list(config)!r}")
    return entries


def check_strength(strength: Any) -> float:
    """The augmentation strength as a float >= 0 (0 turns augmentation off).

    Raises:
        InputError: not a finite number >= 0.
    """
    return check_float("strength", strength, minimum=0, inclusive=True)


def scaled_factor(entry: Mapping[str, Any], strength: float) -> float:
    """`entry["factor"] * strength`, capped at the largest factor its layer accepts."""
    return min(entry["factor"] * strength, MAX_FACTOR[entry["name"]])
