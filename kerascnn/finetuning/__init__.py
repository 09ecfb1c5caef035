"""Fine-tune a pretrained backbone in two phases, fastai style, in Keras 3.

The model takes raw pixels of any size and channel count:

    Input(raw H, W, C) -> Resizing -> to RGB -> the backbone's own preprocessing
        -> backbone(include_top=False, training=False) -> GlobalAveragePooling2D
        -> Dropout -> Dense(num_classes, softmax)

Phase 1 trains the new head with the backbone frozen. Phase 2 unfreezes the
top layers or blocks of the backbone and trains them at a lower learning rate.
Every `BatchNormalization` layer of the backbone stays in inference mode in both
phases (the backbone is called with `training=False` and its BatchNorm layers
are never trainable): updating ImageNet's moving statistics with a few small
batches of a new dataset is the classic way fine-tuning quietly ruins a model.

Per-group (discriminative) learning rates are not offered: Keras 3 optimizers
have one learning rate for all variables, and the ways around that (several
optimizers in a custom `train_step`, or scaling gradients per variable) do not
survive `model.save`/`compile` cleanly. Unfreezing fewer blocks at a lower rate
is the supported alternative.

Modules, by role:

- `backbones`: which pretrained networks exist (`list_backbones`,
  `get_backbone`), building and loading them (`build_backbone`), their
  blocks and what to unfreeze (`backbone_blocks`, `layers_to_unfreeze`).
- `model`: the classifier on top (`build_model`), `freeze_backbone`,
  `unfreeze_backbone`.
- `procedure`: `finetune`, the two phases, written as a run folder by
  `kerascnn.runs.RunWriter` (the backbone description goes to
  `backbone.yaml`; a fine-tuning run has no `spec.yaml`).
"""

from kerascnn.finetuning.backbones import (BACKBONES, Backbone, backbone_blocks,
                                           build_backbone, check_image_size, check_weights,
                                           get_backbone, layers_to_unfreeze, list_backbones,
                                           parse_unfreeze)
from kerascnn.finetuning.model import build_model, freeze_backbone, unfreeze_backbone
from kerascnn.finetuning.procedure import FinetuneResult, finetune

# the name `kerascnn.build_finetune_model` has at the top of the package
build_finetune_model = build_model

__all__ = [
    "BACKBONES", "Backbone", "FinetuneResult", "backbone_blocks", "build_backbone",
    "build_finetune_model", "build_model", "check_image_size", "check_weights", "finetune", "freeze_backbone",
    "get_backbone", "layers_to_unfreeze", "list_backbones", "parse_unfreeze",
    "unfreeze_backbone",
]
