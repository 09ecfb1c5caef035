"""
Title: Fine-tuning VGG16, the course's transfer-learning example
Author: kerascnn
Date created: 2026/11/24
Description: Freeze VGG16's convolutional base, train a new head, then fine-tune block 5.
Accelerator: None (runs on a CPU in a few minutes)
"""

"""
## Introduction

VGG16 is the network the course uses to show transfer learning: thirteen 3x3
convolutions in five blocks, trained on ImageNet, reused as a feature extractor
for a new task. This recipe fine-tunes it on Fashion-MNIST (the bundled sample
by default, or any dataset named on the command line) in two phases:

1. freeze the whole convolutional base and train a new head (global average
   pooling, dropout, softmax);
2. unfreeze the last block (`block5_conv1..3`) and train it too, at a ten
   times lower learning rate.

VGG16 has no BatchNormalization, so the frozen-BatchNorm rule that matters for
ResNet50 and MobileNetV2 does not come up; the other two pitfalls do, and
`kerascnn.build_finetune_model` handles them inside the model:

* **preprocessing**: VGG16 was trained on BGR images with the ImageNet mean
  subtracted ("caffe" mode); the model converts raw [0, 255] RGB or gray pixels;
* **input shape**: 28x28 gray images are resized (here to 64x64) and copied to
  three channels.

Run it:

    python recipes/finetune_vgg16.py                        # bundled sample
    python recipes/finetune_vgg16.py fashion_mnist --image-size 96
    python recipes/finetune_vgg16.py --weights vgg16_notop.weights.h5

VGG16 is heavy (14.7 million parameters in its base, 15 GFLOPs per 224x224
image): at 64x64 one phase-1 epoch on the 5,400-image sample takes a few
minutes on a laptop CPU. `--weights imagenet` downloads the weights when the
machine is online; offline, pass a file saved with
`keras.applications.VGG16(include_top=False, weights="imagenet").save_weights(PATH)`
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

BACKBONE = "vgg16"
DATASET = "fashion_mnist_sample"
IMAGE_SIZE = 64  # block 5 still sees 4x4 feature maps; 224 is VGG16's own size
BATCH_SIZE = 32
EPOCHS = 3  # phase 1: the head
FINE_TUNE_EPOCHS = 3  # phase 2: the top of the backbone
UNFREEZE = "1 block"  # block5_conv1 .. block5_conv3
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
ImageNet mean, the convolutional base (`include_top=False`), global average
pooling, dropout, and a new softmax layer. The two 4096-unit dense layers of the
original VGG16 are not kept: on a small dataset they would only overfit.
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

`unfreeze_backbone(model, "1 block")` makes block 5 trainable. Recompiling is
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
    parser = argparse.ArgumentParser(description="Fine-tune VGG16 on a dataset.")
    parser.add_argument("dataset", nargs="?", default=DATASET,
                        help="A kerascnn dataset: name, folder of class folders or .npz.")
    parser.add_argument("--weights", default="imagenet",
                        help="A weights file, 'imagenet' (needs a network) or 'none'.")
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

    kerascnn finetune --backbone vgg16 --weights imagenet --image-size 64 \\
        --epochs 3 --fine-tune-epochs 3 --unfreeze "1 block" --fine-tune-lr 1e-4 \\
        --output-dir runs/vgg16
"""

if __name__ == "__main__":
    main()
