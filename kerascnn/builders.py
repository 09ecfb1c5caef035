"""Build an uncompiled `keras.Model` from a `CNNSpec`.

The builder does not derive a single shape itself: it walks the plan that
`kerascnn.analysis.analyze` returns and creates one Keras layer per entry, with
the entry's name. Whatever `analyze` says about a layer is therefore what
Keras builds (a property test checks it over hundreds of random specs).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras

from kerascnn import runtime
from kerascnn.analysis import Analysis, LayerInfo, analyze
from kerascnn.batchnorm import fuse_batch_norm
from kerascnn.checks import InputError
from kerascnn.presets import get_preset
from kerascnn.spec import CNNSpec, field_names


def _spec_from(spec: Optional[CNNSpec], fields: dict[str, Any]) -> CNNSpec:
    unknown = sorted(set(fields) - set(field_names()))
    if unknown:
        raise InputError(f"Unrecognized arguments for build_cnn: {unknown}. Allowed: "
                         f"preprocessing, raw_input_shape, name and the CNNSpec fields "
                         f"{', '.join(field_names())}. Received: {unknown}")
    if spec is None:
        return CNNSpec(**fields)
    if isinstance(spec, str):
        return get_preset(spec, **{k: fields.pop(k) for k in ("input_shape", "num_classes")
                                   if k in fields}).replace(**fields)
    if isinstance(spec, dict):
        return CNNSpec.from_dict({**spec, **fields})
    if not isinstance(spec, CNNSpec):
        raise InputError("build_cnn expects a CNNSpec, a preset name, a dict or keyword fields. "
                        f"Received: {type(spec).__name__}")
    return spec.replace(**fields) if fields else spec


def check_fits_in_memory(plan: Analysis) -> None:
    """Refuse a network whose float32 weights alone exceed this machine's memory
    (TensorFlow would fail, or the system kill the process, while making them)."""
    memory = runtime.physical_memory()
    needed = 4 * plan.total_params
    if memory is None or needed <= memory:
        return
    biggest = max(plan.layers, key=lambda layer: layer.params + layer.non_trainable_params)
    raise InputError(
        f"The network has {plan.total_params:,} parameters: their float32 weights alone take "
        f"{needed / 2**30:,.1f} GiB, more than this machine's {memory / 2**30:,.1f} GiB of "
        f"memory (training needs about four times the weights). Use fewer filters or dense "
        f"units, or smaller kernels (kerascnn summary shows each layer). Received: "
        f"{biggest.name} with {biggest.params + biggest.non_trainable_params:,} parameters")


def build_cnn(spec: CNNSpec | str | dict | None = None, *,
              preprocessing: Optional[Sequence[Any]] = None,
              raw_input_shape: Optional[Sequence[int]] = None,
              name: Optional[str] = None, **fields: Any):
    """Build the network a spec describes.

    Args:
        spec: CNNSpec, preset name or dict. Defaults to `None`: the spec is
            made from `fields` (`input_shape`, `num_classes`, ...).
        preprocessing: list of Keras layers applied right after the `Input`
            (rescaling, normalization, resizing, augmentation). Their output
            must have `spec.input_shape`. Defaults to `None`.
        raw_input_shape: tuple of int. Shape of the `Input` when
            `preprocessing` changes it (e.g. resizing). Defaults to
            `spec.input_shape`.
        name: str. Model name. Defaults to `"kerascnn"`.
        **fields: CNNSpec fields, overriding those of `spec`.

    Returns:
        An uncompiled `keras.Model`. Layer names: `block{b}_conv{c}`,
        `block{b}_bn{c}`, `block{b}_act{c}`, `block{b}_pool`, `fc{k}`,
        `predictions`. The classifier runs in float32 under a mixed
        precision policy. Batch norm trains on TensorFlow's fused kernel
        (`kerascnn.batchnorm`; the layers are Keras's own).

    Raises:
        InputError: the spec is invalid, a feature map would shrink below 1
            (raised by the analysis, before any layer exists), or the
            preprocessing layers do not produce the spec's input shape.

    Example:

    >>> model = build_cnn(input_shape=(28, 28, 1), num_classes=10)
    >>> model.get_layer("block2_pool").output.shape
    (None, 7, 7, 64)
    """
    spec = _spec_from(spec, dict(fields))
    plan = analyze(spec)  # raises before any layer is made
    check_fits_in_memory(plan)
    inputs = keras.Input(shape=tuple(raw_input_shape or spec.input_shape), name="input")
    x = inputs
    for layer in preprocessing or ():
        x = layer(x)
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise InputError(
            "The preprocessing layers must produce the spec's input_shape. "
            f"Received: preprocessing output {tuple(x.shape[1:])}, "
            f"input_shape={spec.input_shape}")
    tensors = {"input": x}
    for info in plan.layers:
        layer = _make_layer(info, spec)
        if info.inputs:
            args = [tensors[n] for n in info.inputs]
            x = layer(args if len(args) > 1 else args[0])
        else:
            x = layer(x)
        tensors[info.name] = x
    model = keras.Model(inputs, x, name=name or "kerascnn")
    fuse_batch_norm(model)
    return model


BATCH_NORM_MOMENTUM = 0.9

_CONV = {1: "Conv1D", 2: "Conv2D", 3: "Conv3D"}
_POOL = {"max": {1: "MaxPooling1D", 2: "MaxPooling2D", 3: "MaxPooling3D"},
         "avg": {1: "AveragePooling1D", 2: "AveragePooling2D", 3: "AveragePooling3D"}}
_SPATIAL_DROPOUT = {1: "SpatialDropout1D", 2: "SpatialDropout2D", 3: "SpatialDropout3D"}
_GAP = {1: "GlobalAveragePooling1D", 2: "GlobalAveragePooling2D", 3: "GlobalAveragePooling3D"}


def _make_layer(info: LayerInfo, spec: CNNSpec):
    rank = spec.rank
    cfg = info.config
    L = keras.layers
    # the classifier stays float32 under mixed precision (numerically stable softmax)
    dtype = {"dtype": "float32"} if info.name.startswith("predictions") else {}
    if info.kind == "conv":
        return getattr(L, _CONV[rank])(
            cfg["filters"], cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
            dilation_rate=cfg["dilation_rate"], use_bias=cfg["use_bias"],
            activation=cfg["activation"], name=info.name, **dtype)
    if info.kind == "batch_norm":
        # momentum 0.9 (Keras: 0.99) so the moving statistics catch up within the
        # few hundred steps of a search trial: with 0.99 the simple preset scored
        # 0.28 validation accuracy after 3 epochs on the sample, with 0.9 0.84.
        return L.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=info.name)
    if info.kind == "activation":
        return L.Activation(cfg["activation"], name=info.name, **dtype)
    if info.kind in ("max_pool", "avg_pool"):
        return getattr(L, _POOL[info.kind[:3]][rank])(
            pool_size=cfg["pool_size"], strides=cfg["strides"], padding=cfg["padding"],
            name=info.name)
    if info.kind == "spatial_dropout":
        return getattr(L, _SPATIAL_DROPOUT[rank])(cfg["rate"], name=info.name)
    if info.kind == "dropout":
        return L.Dropout(cfg["rate"], name=info.name)
    if info.kind == "add":
        return L.Add(name=info.name)
    if info.kind == "flatten":
        return L.Flatten(name=info.name)
    if info.kind == "global_avg_pool":
        return getattr(L, _GAP[rank])(name=info.name)
    if info.kind == "dense":
        return L.Dense(cfg["units"], activation=cfg["activation"], name=info.name, **dtype)
    raise AssertionError(f"unknown layer kind {info.kind!r}")  # a bug in analysis, not input


def check_against_keras(model, plan: Analysis) -> list[str]:
    """Differences between the plan and a built model (empty when they agree)."""
    problems = []
    for info in plan.layers:
        try:
            layer = model.get_layer(info.name)
        except ValueError:
            problems.append(f"{info.name}: missing in the Keras model")
            continue
        shape = tuple(layer.output.shape[1:])
        if shape != info.output_shape:
            problems.append(f"{info.name}: analysis {info.output_shape}, Keras {shape}")
        params = layer.count_params()
        if params != info.params + info.non_trainable_params:
            problems.append(f"{info.name}: analysis {info.params + info.non_trainable_params} "
                            f"params, Keras {params}")
    names = {info.name for info in plan.layers}
    keras_total = sum(layer.count_params() for layer in model.layers if layer.name in names)
    if keras_total != plan.total_params:
        problems.append(f"total: analysis {plan.total_params} params, Keras {keras_total}")
    return problems
