"""
Title: Fine-tuning ResNet50 without ruining its BatchNorm statistics
Author: kerascnn
Date created: 2026/11/24
Description: Two-phase transfer learning with ResNet50: the last stage unfrozen, BatchNorm not.
Accelerator: None (runs on a CPU in a few minutes)
"""

"""
## Introduction

ResNet50 has 53 BatchNormalization layers. The classic way to ruin its
fine-tuning in Keras is to set `base.trainable = True` and call `fit`: the
BatchNorm layers switch to training mode, normalise with the statistics of each
small batch of the new dataset and overwrite the moving averages learned on
ImageNet, and accuracy collapses for reasons that are hard to see. kerascnn's
model calls the backbone with `training=False` and never makes a BatchNorm layer
trainable, in either phase:

1. freeze the backbone and train a new head (global average pooling, dropout,
   softmax);
2. unfreeze the last stage (`conv5_block1..3`, 9 convolutions) and train it
   too, at a ten times lower learning rate.

The model also takes raw pixels: 28x28 gray images are resized (here to 64x64),
copied to three channels, converted to BGR with the ImageNet mean subtracted, as
`keras.applications.resnet50.preprocess_input` does.

Run it:

    python recipes/finetune_resnet50.py                     # bundled sample
    python recipes/finetune_resnet50.py fashion_mnist --unfreeze "6 blocks"
    python recipes/finetune_resnet50.py --weights resnet50_notop.weights.h5

`--weights imagenet` downloads the weights when the machine is online; offline,
pass a file saved with
`keras.applications.ResNet50(include_top=False, weights="imagenet").save_weights(PATH)`
on a machine that is, or `--weights none` to see what training from scratch gives.
"""

"""
## Setup
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerascnn  # noqa: E402
from kerascnn import (build_finetune_model, compile_model, freeze_backbone,  # noqa: E402
                      save_model, unfreeze_backbone)

BACKBONE = "resnet50"
DATASET = "fashion_mnist_sample"
IMAGE_SIZE = 64  # the last stage sees 2x2 feature maps; 224 is ResNet50's own size
BATCH_SIZE = 32
EPOCHS = 3  # phase 1: the head
FINE_TUNE_EPOCHS = 3  # phase 2: the top of the backbone
UNFREEZE = "3 blocks"  # conv5_block1 .. conv5_block3, BatchNorm excluded
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

Raw pixels in: resize to 64x64, gray to RGB (and RGB to BGR), subtract the
ImageNet mean, the backbone (`include_top=False`, called with `training=False`),
global average pooling, dropout, and a new softmax layer.
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

`unfreeze_backbone(model, "3 blocks")` makes the convolutions of the last
stage trainable, but none of its BatchNormalization layers. Recompiling is
required for the change to take effect, and the lower learning rate keeps the
pretrained features from being destroyed by the first large gradients of the
(still imperfect) head.
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
    parser = argparse.ArgumentParser(description="Fine-tune ResNet50 on a dataset.")
    parser.add_argument("dataset", nargs="?", default=DATASET,
                        help="A kerascnn dataset: name, folder of class folders or .npz.")
    parser.add_argument("--weights", default="imagenet",
                        help="A weights file, 'imagenet' (needs a network) or 'none'.")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--unfreeze", default=UNFREEZE, help="'all', N layers or 'N blocks'.")
    parser.add_argument("--output", help="Where to save the model (.keras).")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(SEED)
    bundle = load_data(args.dataset, args.batch_size)
    model = make_model(bundle, args.weights, args.image_size)
    train_head(model, bundle, args.epochs)
    fine_tune(model, bundle, args.fine_tune_epochs, initial_epoch=args.epochs,
              unfreeze=args.unfreeze)
    return evaluate_and_save(model, bundle, args.output)


"""
## In one call

`kerascnn.finetune` runs both phases and writes a run folder (backbone, config,
history, model, metrics, manifest); the command line does the same:

    kerascnn finetune --backbone resnet50 --weights imagenet --image-size 64 \\
        --epochs 3 --fine-tune-epochs 3 --unfreeze "3 blocks" --fine-tune-lr 1e-4 \\
        --output-dir runs/resnet50
"""

if __name__ == "__main__":
    main()
