"""`finetune`: the two-phase procedure (head first, then the top of the backbone)."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import keras

from kerascnn import runtime
from kerascnn.checks import InputError, check_float, check_int, check_seed, received
from kerascnn.data import as_bundle
from kerascnn.finetuning.backbones import (check_image_size, check_weights, get_backbone,
                                           layers_to_unfreeze, parse_unfreeze)
from kerascnn.finetuning.model import build_model, freeze_backbone, unfreeze_backbone
from kerascnn.runs import RunWriter, prepare_output_dir
from kerascnn.training import History, check_optimizer, compile_model, fit_model

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune()` returns.

    Attributes:
        model: the trained `keras.Model` (raw pixels in, class probabilities out).
        history: list of dicts, one per epoch of both phases (`epoch`, `phase`,
            the metrics, `learning_rate`, `seconds`).
        metrics: dict with `test_accuracy` and `test_loss` (and `val_accuracy`,
            `diverged`).
        output_dir: Path or None. The run folder, when one was written.
        config: dict. The resolved configuration.
        backbone: dict. What `backbone.yaml` holds: the backbone, its weights,
            the head, how much phase 2 unfroze.
    """

    model: Any
    history: list[dict]
    metrics: dict
    output_dir: Path | None
    config: dict
    backbone: dict = dataclasses.field(default_factory=dict)


def finetune(
    backbone: str = "mobilenet_v2",
    *,
    dataset: Any = "fashion_mnist_sample",
    weights: str | None = "imagenet",
    image_size=None,
    epochs: int = 3,
    fine_tune_epochs: int = 3,
    unfreeze: int | str = "all",
    learning_rate: float = 1e-3,
    fine_tune_lr: float = 1e-4,
    optimizer: str = "adam",
    dropout: float = 0.2,
    batch_size: int = 32,
    validation_split: float = 0.1,
    data_dir: str | None = None,
    color_mode: str | None = None,
    download: bool = False,
    output_dir: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    verbose: int | str = 0,
    command_line: Sequence[str] | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on a dataset in two phases.

    Phase 1 trains the new head for `epochs` at `learning_rate` with the
    backbone frozen. Phase 2 unfreezes the top of the backbone (`unfreeze`),
    keeps every BatchNormalization layer in inference mode, recompiles at
    `fine_tune_lr` and trains `fine_tune_epochs` more (skipped if phase 1
    diverged). Then the model is evaluated once on the test split. Both
    phases train with `kerascnn.training.fit_model` and its callbacks.

    Args:
        backbone: str. A name from `list_backbones()`. Defaults to `"mobilenet_v2"`.
        dataset: str or DatasetBundle. Anything `kerascnn.load_dataset` takes, or
            a loaded bundle. Defaults to `"fashion_mnist_sample"`.
        weights: str or None. `"imagenet"` (downloaded by Keras: needs a network
            or Keras's cache), `None`/`"none"`, or a local weights file of the
            backbone without its top. Defaults to `"imagenet"`.
        image_size: int or (int, int). The backbone's input size; images are
            resized inside the model. Defaults to the backbone's default (96).
        epochs: int. Phase 1 epochs (head only). Defaults to 3.
        fine_tune_epochs: int. Phase 2 epochs. Defaults to 3.
        unfreeze: int or str. What phase 2 trains: `"all"`, N (the top N
            layers with weights) or `"N blocks"`. Defaults to `"all"`, as fastai does.
        learning_rate: float. Phase 1 learning rate. Defaults to 1e-3.
        fine_tune_lr: float. Phase 2 learning rate, ten times lower than phase 1's.
            Defaults to 1e-4.
        optimizer: str. `adam`, `adamw`, `sgd`, `rmsprop` or `nadam`. Defaults to `"adam"`.
        dropout: float. Dropout before the classifier. Defaults to 0.2.
        batch_size, validation_split, data_dir, color_mode, download: passed to
            `kerascnn.load_dataset` when `dataset` is a name.
        output_dir: str or None. The run folder to write (`backbone.yaml`,
            `config.yaml`, `history.csv`, `model.keras`, `metrics.json`,
            `manifest.json`; see `kerascnn.runs`). Defaults to `None`
            (nothing written).
        overwrite: bool. Replace results in `output_dir`. Defaults to `False`.
        seed: int. Random seed. Defaults to 0.
        verbose: int. 0: one log line per epoch; 1: Keras progress bars.
            Defaults to 0.
        command_line: list of str. Recorded in the manifest. Defaults to `sys.argv`.

    Returns:
        A `FinetuneResult`.

    Raises:
        InputError: any bad argument, before anything is trained or written.

    Example:
        >>> result = finetune("mobilenet_v2", weights="mobilenet_v2_notop.weights.h5",
        ...                   epochs=2, fine_tune_epochs=2, unfreeze="2 blocks")  # doctest: +SKIP
        >>> result.metrics["test_accuracy"]  # doctest: +SKIP
    """
    runtime.start()
    spec = get_backbone(backbone)
    weights = check_weights(weights)
    size = check_image_size(image_size, spec)
    parse_unfreeze(unfreeze)
    epochs = check_int("epochs", epochs, minimum=0)
    fine_tune_epochs = check_int("fine_tune_epochs", fine_tune_epochs, minimum=0)
    learning_rate = check_float("learning_rate", learning_rate)
    fine_tune_lr = check_float("fine_tune_lr", fine_tune_lr)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= float(dropout) < 1.0:
        raise InputError(f"dropout must be in [0, 1). {received('dropout', dropout)}")
    verbose = 1 if isinstance(verbose, str) else int(verbose)  # Keras's "auto": progress bars
    optimizer = check_optimizer(optimizer)
    check_seed(seed)
    out = prepare_output_dir(output_dir, overwrite=overwrite) if output_dir else None

    keras.utils.set_random_seed(seed)
    # images of one size keep their raw size (resized inside the model);
    # a folder of mixed sizes is resized to `size` while loading
    bundle = as_bundle(dataset, validation_split=validation_split, batch_size=batch_size,
                       image_size=size, data_dir=data_dir, color_mode=color_mode,
                       download=download, seed=seed)
    kind = bundle.kind
    if kind != "image":
        raise InputError(f"Fine-tuning an ImageNet backbone needs images; this dataset holds "
                         f"{kind} data of shape {tuple(bundle.input_shape)}. "
                         f"{received('dataset', bundle.source)}")
    value_range = bundle.value_range
    input_scale = 255.0 if value_range is not None and max(value_range) <= 1.0 else 1.0
    model = build_model(spec.name, input_shape=bundle.input_shape,
                        num_classes=bundle.num_classes, weights=weights, image_size=size,
                        dropout=dropout, input_scale=input_scale)
    base = model.get_layer("backbone")
    unfrozen = [layer.name for layer in layers_to_unfreeze(base, unfreeze)]  # validates count

    config = {
        "backbone": spec.name, "weights": weights or "none", "image_size": list(size),
        "epochs": epochs, "fine_tune_epochs": fine_tune_epochs, "unfreeze": unfreeze,
        "learning_rate": learning_rate, "fine_tune_lr": fine_tune_lr, "optimizer": optimizer,
        "dropout": dropout, "batch_size": batch_size, "validation_split": validation_split,
        "dataset": dataset if isinstance(dataset, str) else bundle.source,
        "seed": seed,
    }
    backbone_config = {
        "backbone": spec.name, "application": spec.application, "weights": weights or "none",
        "input_shape": list(bundle.input_shape), "image_size": list(size),
        "num_classes": int(bundle.num_classes), "dropout": dropout,
        "preprocessing": spec.preprocessing, "unfreeze": unfreeze,
        "unfrozen_layers": len(unfrozen), "batch_norm": "inference",
    }

    validation = bundle.validation
    if validation is not None and bundle.num_validation == 0:
        validation = None
    history = History(fields={"phase": "head"})
    diverged = False

    def run_phase(phase: str, n_epochs: int, lr: float, initial_epoch: int) -> bool:
        history.fields = {"phase": phase}
        trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
        logger.info("%s: %d epochs at learning rate %g, %d trainable parameters",
                    phase, n_epochs, lr, trainable)
        fit = fit_model(model, bundle.train, validation_data=validation,
                        epochs=initial_epoch + n_epochs, initial_epoch=initial_epoch,
                        optimizer=optimizer, learning_rate=lr, history=history,
                        restore_best=False, log_prefix=phase, verbose=verbose)
        return fit.diverged

    freeze_backbone(model)
    if epochs:
        diverged = run_phase("head", epochs, learning_rate, 0)
    unfreeze_backbone(model, unfreeze)
    if fine_tune_epochs and unfrozen and not diverged:
        diverged = run_phase("fine_tune", fine_tune_epochs, fine_tune_lr, epochs)
    elif fine_tune_epochs and not diverged:
        logger.warning("unfreeze=%r leaves nothing to fine-tune; phase 2 skipped", unfreeze)
    if not history.rows:  # nothing trained: compile for the evaluation
        compile_model(model, optimizer=optimizer, learning_rate=fine_tune_lr)

    test = model.evaluate(bundle.test, verbose=0, return_dict=True)
    metrics: dict[str, Any] = {"test_accuracy": float(test["accuracy"]),
                               "test_loss": float(test["loss"])}
    for row in history.rows[::-1]:
        if "val_accuracy" in row:
            metrics.setdefault("val_accuracy", row["val_accuracy"])
    if diverged:
        metrics["diverged"] = True
        logger.warning("The loss became NaN and training stopped early; try a lower "
                       "learning rate or fine_tune_lr")
    logger.debug("test accuracy %.4f, test loss %.4f", metrics["test_accuracy"],
                 metrics["test_loss"])

    if out is not None:
        writer = RunWriter(out)
        writer.remove_run_files()
        writer.write_backbone(backbone_config)
        writer.write_config(config)
        writer.write_history(history.rows)
        writer.write_model(model, class_names=bundle.class_names, finetune=backbone_config)
        writer.write_metrics(metrics)
        writer.write_manifest(
            seed=seed, dataset_fingerprint=bundle.fingerprint, command_line=command_line,
            kind="finetune", command="finetune", finetune=backbone_config,
            dataset=bundle.describe())
    return FinetuneResult(model=model, history=history.rows, metrics=metrics, output_dir=out,
                          config=config, backbone=backbone_config)
