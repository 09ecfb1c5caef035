"""Datasets by name, folder, array or tensorflow-datasets; splits; the input pipeline.

Public API:

* `load_dataset(source, ...)` -> `DatasetBundle` (train / validation / test
  `tf.data` pipelines of raw `(x, y)` batches, shapes, class names, fingerprint,
  and `bundle.arrays(split)` for numpy access);
* `preprocessing_layers(bundle, ...)` -> Keras layers that go right after the
  model's `Input` (rescaling, resizing, augmentation, normalization), and
  `network_input_shape(bundle, image_size)`, the shape the CNN body sees;
* `list_datasets(data_dir)` -> the built-in datasets and where each would be read
  from on this machine.

Submodules: `builtin` (the built-in datasets), `sources` (loaders), `idx` (the
MNIST file format), `pipeline` (splits, tf.data, `load_dataset`),
`preprocessing` (layers in the model). TensorFlow is imported only when a
dataset is loaded.
"""

from __future__ import annotations

from kerascnn.data.builtin import BUILTINS, list_datasets
from kerascnn.data.pipeline import DatasetBundle, as_bundle, load_dataset, stratified_split
from kerascnn.data.preprocessing import network_input_shape, preprocessing_layers

__all__ = ["BUILTINS", "DatasetBundle", "as_bundle", "list_datasets", "load_dataset", "network_input_shape",
           "preprocessing_layers", "stratified_split"]
