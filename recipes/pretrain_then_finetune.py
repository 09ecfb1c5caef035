"""
Title: Transfer learning with kerascnn's own networks
Author: kerascnn
Date created: 2026/11/24
Description: Pretrain a small CNN on a large source task, fine-tune it on a small target task,
and compare with training on the target alone.
Accelerator: None (about two minutes on a CPU with the bundled sample)
"""

"""
## Introduction

Transfer learning is not reserved for ImageNet backbones. Here the network is
kerascnn's `simple` preset (two blocks of two 3x3 convolutions with batch norm,
one dense layer), and the two tasks are halves of one dataset:

* **source**: classes 0-4 of the training split, all of their images;
* **target**: classes 5-9, only `--per-class` training images each (20 by
  default), tested on every test image of classes 5-9.

The same network is then trained two ways on the target:

1. **scratch**: from random initialisation, target data only;
2. **transfer**: pretrained on the source, new head trained with the body
   frozen (phase 1), then everything fine-tuned at a lower learning rate with
   BatchNorm kept in inference mode (phase 2);

and the recipe prints both test accuracies. Convolutional features learned on
shirts and trousers carry over to sandals and bags; with a few images per class
the pretrained network wins clearly, and the gap closes as `--per-class` grows.

Run it:

    python recipes/pretrain_then_finetune.py                          # bundled sample
    python recipes/pretrain_then_finetune.py fashion_mnist --per-class 50
    python recipes/pretrain_then_finetune.py mnist --preset lenet5
"""

"""
## Setup
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerascnn  # noqa: E402
from kerascnn import compile_model  # noqa: E402

DATASET = "fashion_mnist_sample"
PRESET = "simple"
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
PER_CLASS = 20  # target training images per class
PRETRAIN_EPOCHS = 5
HEAD_EPOCHS = 10  # phase 1 on the target
FINE_TUNE_EPOCHS = 10  # phase 2 on the target
LEARNING_RATE = 1e-3
FINE_TUNE_LR = 1e-4
BATCH_SIZE = 64
SEED = 0

"""
## The two tasks

`bundle.arrays(split)` gives the raw uint8 images of a split as numpy arrays.
The source task keeps every training image of its classes; the target task
keeps `per_class` of each of its classes, chosen by seed. Labels are renumbered
0..4 in both.
"""


def select(x, y, classes, per_class=None, seed=SEED):
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        index = np.flatnonzero(y == c)
        if per_class is not None:
            if len(index) < per_class:
                raise ValueError(f"class {c} has only {len(index)} images; "
                                 f"use a smaller --per-class")
            index = rng.choice(index, per_class, replace=False)
        keep.append(index)
    keep = rng.permutation(np.concatenate(keep))
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[int(v)] for v in y[keep]], dtype="int32")


def load_tasks(source: str, per_class: int):
    bundle = kerascnn.load_dataset(source, validation_split=0.0, seed=SEED)
    if bundle.num_classes < len(SOURCE_CLASSES) + len(TARGET_CLASSES):
        raise ValueError(f"{source} has {bundle.num_classes} classes; this recipe splits "
                         f"ten classes into two tasks")
    x_train, y_train = bundle.arrays("train")
    x_test, y_test = bundle.arrays("test")
    tasks = {
        "source": select(x_train, y_train, SOURCE_CLASSES),
        "target": select(x_train, y_train, TARGET_CLASSES, per_class),
        "target_test": select(x_test, y_test, TARGET_CLASSES),
    }
    for name, (x, _) in tasks.items():
        print(f"{name}: {len(x)} images of shape {x.shape[1:]}")
    return bundle, tasks


"""
## The network

`kerascnn.build_cnn` builds the preset for the data's input shape; a
`Rescaling` layer in front makes it take raw pixels. The source network and the
scratch network are built the same way.

With a hundred target images there are only a few dozen training steps, too few
for BatchNorm's moving statistics to settle at Keras's default momentum of 0.99
(after 40 steps they are still two thirds of their initial values, and the
network evaluates badly in inference mode). Momentum 0.9 lets them settle in a
few dozen steps, which is fair to the network trained from scratch.
"""


def make_cnn(input_shape, num_classes, preset=PRESET):
    spec = kerascnn.get_preset(preset, input_shape=input_shape, num_classes=num_classes)
    model = kerascnn.build_cnn(spec, preprocessing=[keras.layers.Rescaling(1 / 255)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


"""
## Pretrain on the source task
"""


def pretrain(tasks, input_shape, epochs, preset):
    x, y = tasks["source"]
    model = make_cnn(input_shape, len(SOURCE_CLASSES), preset)
    compile_model(model, learning_rate=LEARNING_RATE)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, validation_split=0.1, verbose=2)
    return model


"""
## Transfer to the target task

The body is everything up to the input of the `predictions` layer; a new
`predictions` layer with one unit per target class replaces the old one.
Phase 1 trains only that layer. Phase 2 unfreezes the body but not its
BatchNormalization layers: in Keras 3 a non-trainable BatchNormalization layer
runs in inference mode, so twenty images per class cannot overwrite the
statistics learned on thousands.
"""


def transfer(source_model, tasks, head_epochs, fine_tune_epochs):
    x, y = tasks["target"]
    features = source_model.get_layer("predictions").input
    outputs = keras.layers.Dense(len(TARGET_CLASSES), activation="softmax",
                                 name="predictions")(features)
    model = keras.Model(source_model.input, outputs, name="transfer")

    for layer in model.layers[:-1]:
        layer.trainable = False
    compile_model(model, learning_rate=LEARNING_RATE)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=head_epochs, verbose=0)

    for layer in model.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    compile_model(model, learning_rate=FINE_TUNE_LR)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=head_epochs + fine_tune_epochs,
              initial_epoch=head_epochs, verbose=0)
    return model


"""
## Train on the target alone

The same network from random initialisation, every layer trained, for as many
epochs as the two transfer phases together.
"""


def scratch(tasks, input_shape, epochs, preset):
    x, y = tasks["target"]
    model = make_cnn(input_shape, len(TARGET_CLASSES), preset)
    compile_model(model, learning_rate=LEARNING_RATE)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model


"""
## Run it
"""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Pretrain on classes 0-4, fine-tune on 5-9.")
    parser.add_argument("dataset", nargs="?", default=DATASET,
                        help="A kerascnn dataset with ten classes (name, folder or .npz).")
    parser.add_argument("--per-class", type=int, default=PER_CLASS,
                        help="Target training images per class.")
    parser.add_argument("--preset", default=PRESET, help="The kerascnn preset to use.")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS)
    parser.add_argument("--epochs", type=int, default=HEAD_EPOCHS,
                        help="Phase 1 epochs on the target (head only).")
    parser.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    bundle, tasks = load_tasks(args.dataset, args.per_class)
    x_test, y_test = tasks["target_test"]

    source_model = pretrain(tasks, bundle.input_shape, args.pretrain_epochs, args.preset)
    transferred = transfer(source_model, tasks, args.epochs, args.fine_tune_epochs)
    _, transfer_accuracy = transferred.evaluate(x_test, y_test, verbose=0)

    keras.utils.set_random_seed(SEED)
    baseline = scratch(tasks, bundle.input_shape, args.epochs + args.fine_tune_epochs,
                       args.preset)
    _, scratch_accuracy = baseline.evaluate(x_test, y_test, verbose=0)

    print(f"\nTarget task, {args.per_class} training images per class, "
          f"{len(x_test)} test images:")
    print(f"  trained on the target alone:               {scratch_accuracy:.4f}")
    print(f"  pretrained on the source, then fine-tuned: {transfer_accuracy:.4f}")
    return {"scratch": float(scratch_accuracy), "transfer": float(transfer_accuracy)}


if __name__ == "__main__":
    main()
