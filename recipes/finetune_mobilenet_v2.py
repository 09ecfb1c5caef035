"""
Title: Fine-tuning an ImageNet MobileNetV2 on small gray images
Author: kerascnn
Date created: 2026/11/24
Description: Two-phase transfer learning, raw 28x28 gray pixels in, BatchNorm kept frozen.
Accelerator: None (runs on a CPU in a few minutes)
"""

"""
## Introduction

With a few thousand images, a network trained from scratch disappoints; one
pretrained on ImageNet and fine-tuned does much better. This recipe fine-tunes
MobileNetV2 on Fashion-MNIST (the sample bundled with kerascnn by default, or
any dataset named on the command line) in the two phases that fastai's
`fine_tune` made popular:

1. freeze the pretrained backbone and train a new head (global average pooling,
   dropout, softmax) at a normal learning rate;
2. unfreeze the top blocks of the backbone and train them too, at a learning
   rate ten times lower.

Three Keras pitfalls are handled by `kerascnn.build_finetune_model`:

* **the wrong preprocessing**: MobileNetV2 wants pixels in [-1, 1]; the model
  does that itself, so it takes raw [0, 255] pixels, in training and after saving;
* **the wrong input**: 28x28 gray images are resized to 96x96 and copied to
  three channels inside the model;
* **BatchNorm left in training mode when unfreezing**: the backbone is called
  with `training=False` and its BatchNorm layers are never trainable, so a few
  small batches of a new dataset cannot overwrite ImageNet's statistics.

Run it:

    python recipes/finetune_mobilenet_v2.py                       # bundled sample
    python recipes/finetune_mobilenet_v2.py fashion_mnist --epochs 5
    python recipes/finetune_mobilenet_v2.py my_images/ --weights imagenet

The ImageNet weights come from a local file (`--weights`, by default the one in
`../shared/weights/` beside the repository), because `weights="imagenet"` needs
a connection to Keras's weight store. `--weights none` trains from random
initialisation, for comparison.
"""

"""
## Setup
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerascnn  # noqa: E402
from kerascnn import (build_finetune_model, compile_model, freeze_backbone,  # noqa: E402
                      save_model, unfreeze_backbone)

BACKBONE = "mobilenet_v2"
LOCAL_WEIGHTS = (Path(__file__).resolve().parents[1].parent / "shared" / "weights"
                 / "mobilenet_v2_imagenet_notop.weights.h5")
DATASET = "fashion_mnist_sample"
IMAGE_SIZE = 96  # the smallest size Keras publishes MobileNetV2 ImageNet weights for
BATCH_SIZE = 32
EPOCHS = 3  # phase 1: the head
FINE_TUNE_EPOCHS = 3  # phase 2: the top of the backbone
UNFREEZE = "4 blocks"  # block_14 .. block_16 and the last 1x1 convolution
LEARNING_RATE = 1e-3
FINE_TUNE_LR = 1e-4
SEED = 0

"""
## The data

`kerascnn.load_dataset` returns batched `tf.data` pipelines of raw uint8
pixels. Nothing is resized or normalised here: that happens inside the model.
"""


def load_data(source: str, batch_size: int = BATCH_SIZE):
    bundle = kerascnn.load_dataset(source, validation_split=0.1, batch_size=batch_size,
                                   seed=SEED)
    print(f"{bundle.num_train} training, {bundle.num_validation} validation and "
          f"{bundle.num_test} test images of shape {bundle.input_shape}, "
          f"{bundle.num_classes} classes")
    return bundle


"""
## The model

Raw pixels in: resize to 96x96, gray to RGB, MobileNetV2's own scaling, the
backbone (`include_top=False`, called with `training=False`), global average
pooling, dropout, and a new softmax layer.
"""


def make_model(bundle, weights, image_size: int = IMAGE_SIZE):
    model = build_finetune_model(BACKBONE, input_shape=bundle.input_shape,
                        num_classes=bundle.num_classes, weights=weights,
                        image_size=image_size, dropout=0.2)
    freeze_backbone(model)  # so that the summary counts what phase 1 trains
    model.summary(line_length=90)
    return model


def count_trainable(model) -> int:
    return sum(int(keras.ops.size(w)) for w in model.trainable_weights)


"""
## Phase 1: train the new head

Only the new `predictions` layer learns; the backbone is a fixed feature
extractor. A normal learning rate is fine here.
"""


def train_head(model, bundle, epochs: int):
    freeze_backbone(model)
    compile_model(model, learning_rate=LEARNING_RATE)
    print(f"Phase 1: {count_trainable(model):,} trainable parameters")
    return model.fit(bundle.train, validation_data=bundle.validation, epochs=epochs, verbose=2)


"""
## Phase 2: fine-tune the top of the backbone

`unfreeze_backbone` makes the top blocks trainable, but never their
BatchNormalization layers. Recompiling is required for the change to take
effect, and the lower learning rate keeps the pretrained features from being
destroyed by the first large gradients of the (still imperfect) head.
"""


def fine_tune(model, bundle, epochs: int, initial_epoch: int, unfreeze=UNFREEZE):
    unfrozen = unfreeze_backbone(model, unfreeze)
    compile_model(model, learning_rate=FINE_TUNE_LR)
    print(f"Phase 2: {len(unfrozen)} backbone layers unfrozen ({unfrozen[0]} .. "
          f"{unfrozen[-1]}), {count_trainable(model):,} trainable parameters")
    return model.fit(bundle.train, validation_data=bundle.validation,
                     epochs=initial_epoch + epochs, initial_epoch=initial_epoch, verbose=2)


"""
## Evaluate and save

The test split is used once, at the end. The saved model carries the class
names and takes raw pixels of the original size.
"""


def evaluate_and_save(model, bundle, output: str | None):
    loss, accuracy = model.evaluate(bundle.test, verbose=0)
    print(f"Test accuracy {accuracy:.4f}, test loss {loss:.4f}")
    if output:
        save_model(model, output, class_names=bundle.class_names)
        print(f"Saved {output}")
    return accuracy


"""
## Run it
"""


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description="Fine-tune MobileNetV2 on a dataset.")
    parser.add_argument("dataset", nargs="?", default=DATASET,
                        help="A kerascnn dataset: name, folder of class folders or .npz.")
    parser.add_argument("--weights", default=str(LOCAL_WEIGHTS) if LOCAL_WEIGHTS.is_file()
                        else "imagenet", help="A weights file, 'imagenet' or 'none'.")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--output", help="Where to save the model (.keras).")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    bundle = load_data(args.dataset, args.batch_size)
    model = make_model(bundle, args.weights, args.image_size)
    train_head(model, bundle, args.epochs)
    fine_tune(model, bundle, args.fine_tune_epochs, initial_epoch=args.epochs)
    return evaluate_and_save(model, bundle, args.output)


"""
## In one call

`kerascnn.finetune` runs both phases and writes a run folder (backbone, config,
history, model, metrics, manifest); the command line does the same:

    kerascnn finetune --backbone mobilenet_v2 --weights PATH --image-size 96 \\
        --epochs 3 --fine-tune-epochs 3 --unfreeze "4 blocks" --fine-tune-lr 1e-4 \\
        --output-dir runs/mobilenet_v2
"""

if __name__ == "__main__":
    main()
