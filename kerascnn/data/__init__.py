"""Datasets by name, folder, array or tensorflow-datasets; splits; the input pipeline.

Public API:

* `load_dataset(source, ...)` -> `DatasetBundle` (train / validation / test
  `tf.data` pipelines of raw `(x, y)` batches, shapes, class names, fingerprint,
  and `bundle.arrays(split)` for numpy access); `as_bundle(dataset)` accepts a
  source or a bundle;
* `preprocessing_layers(bundle, ...)` -> Keras layers that go right after the
  model's `Input` (rescaling, resizing, augmentation, normalization);
  `augmentation_layers(config, strength)` -> the augmentation layers alone;
  `network_input_shape(bundle, image_size)`, the shape the CNN body sees;
* `list_datasets(data_dir)` -> the built-in datasets and where each would be read
  from on this machine; `stratified_split(labels, fraction, seed)`.

Submodules, light (numpy at most): `builtin` (the built-in datasets and where
they are), `idx` (the MNIST file format), `bundle` (`DatasetBundle`, the
split, the network's input shape). Heavy (TensorFlow at import): `pools`
(examples as `tf.data`), `sources` (loaders), `pipeline` (`load_dataset`),
`preprocessing` (layers in the model).

`import kerascnn.data` imports only the light submodules; the names of the
heavy ones are imported on first use (a module `__getattr__`), so listing the
datasets or describing a bundle never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kerascnn.data.builtin import BUILTINS, list_datasets
from kerascnn.data.bundle import DatasetBundle, network_input_shape, stratified_split

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports them
    from kerascnn.data.pipeline import as_bundle, load_dataset
    from kerascnn.data.preprocessing import augmentation_layers, preprocessing_layers

# public name -> the heavy module that defines it
_LAZY = {
    "load_dataset": "kerascnn.data.pipeline",
    "as_bundle": "kerascnn.data.pipeline",
    "preprocessing_layers": "kerascnn.data.preprocessing",
    "augmentation_layers": "kerascnn.data.preprocessing",
}

__all__ = ["BUILTINS", "DatasetBundle", "as_bundle", "augmentation_layers", "list_datasets",
           "load_dataset", "network_input_shape", "preprocessing_layers", "stratified_split"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerascnn.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
