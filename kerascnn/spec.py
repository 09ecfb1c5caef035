"""`CNNSpec`: one frozen description of a network of the classic pattern.

    INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

The field names are public API: the search space (`CNNHyperModel`), the YAML
files and the command-line flags use the same names.

Per-block fields (`convs_per_block`, `filters`, `kernel_size`, `strides`,
`padding`, `dilation_rate`, `pooling`, `pool_size`, `pool_strides`,
`pool_padding`, `block_type`) take one value for every block or a tuple with
one value per block. The convolution fields (`filters`, `kernel_size`,
`strides`, `padding`, `dilation_rate`) also accept, for one block, a tuple
with one value per convolution of that block, so that the classic networks are
expressed exactly::

    # AlexNet's third block: three 3x3 convolutions of 384, 384 and 256 filters
    filters=(96, 256, (384, 384, 256))

Kernel sizes, strides, dilation and pool sizes are the same along every
spatial axis (square, cubic). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from kerascnn.augment import validate_augmentation
from kerascnn.checks import InputError, is_int, received
from kerascnn.files import atomic_write_text, read_yaml

PADDINGS = ("same", "valid")
POOLINGS = ("max", "avg", "none", "conv")
BLOCK_TYPES = ("plain", "residual")
HEADS = ("flatten", "gap", "conv")
ACTIVATIONS = ("relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid",
               "leaky_relu", "mish", "softplus", "hard_swish", "linear")
CLASSIFIER_ACTIVATIONS = ("softmax", None)
# the deepest published CNNs have about a thousand layers; the spec is expanded
# layer by layer, so an absurd depth must be refused before it is expanded
MAX_CONV_LAYERS = 10_000

IntOrPerBlock = Union[int, Sequence[Union[int, Sequence[int]]]]

# fields that accept a value per block, and of those, the ones that accept a value per conv
PER_BLOCK_FIELDS = ("convs_per_block", "filters", "kernel_size", "strides", "padding",
                    "dilation_rate", "pooling", "pool_size", "pool_strides", "pool_padding",
                    "block_type")
PER_CONV_FIELDS = ("filters", "kernel_size", "strides", "padding", "dilation_rate")


@dataclass(frozen=True)
class ConvSpec:
    """One resolved convolution of a block."""

    filters: int
    kernel_size: int
    strides: int
    padding: str
    dilation_rate: int


@dataclass(frozen=True)
class BlockSpec:
    """One resolved block: its convolutions and what follows them."""

    index: int  # 1-based
    convs: tuple[ConvSpec, ...]
    block_type: str
    pooling: str
    pool_size: int
    pool_strides: int
    pool_padding: str


def _tuplify(value: Any) -> Any:
    """Lists (from YAML/JSON) to tuples and numpy integers to ints, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    if is_int(value):
        return int(value)
    return value


def _listify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value


@dataclass(frozen=True)
class CNNSpec:
    """A convolutional network `INPUT -> [[CONV -> ACT]*N -> POOL?]*M -> [FC -> ACT]*K -> FC`.

    Where a name exists in Keras, the field has Keras's name. Defaults differ
    from Keras's `Conv2D` in one place: `padding="same"`, as VGG16 uses, so
    that depth is limited by pooling, not by the kernel eating the border.

    Args:
        input_shape: tuple of int. Shape of one input without the batch
            axis, channels last: length 2 (length, channels) builds 1D
            convolutions, 3 (height, width, channels) 2D, 4 (depth, height,
            width, channels) 3D.
        num_classes: int. Number of classes, at least 2.
        conv_blocks: int. M, the number of convolution blocks. Defaults to 2.
        convs_per_block: int or tuple. N, convolutions per block.
            Defaults to 2.
        filters: int or tuple. Output channels, per block (and per conv).
            Defaults to `None`: 32 doubling at each block, at most 512.
        kernel_size: int or tuple. Defaults to 3.
        strides: int or tuple. Convolution strides. Defaults to 1.
        padding: `"same"` or `"valid"`, or a tuple. Defaults to `"same"`.
        dilation_rate: int or tuple. Defaults to 1. A convolution cannot
            have both strides > 1 and dilation_rate > 1 (as in Keras).
        activation: str. Activation after every hidden layer. Defaults to
            `"relu"`.
        batch_norm: bool. BatchNormalization after each convolution (which
            then has no bias), with momentum 0.9 rather than Keras's 0.99 so
            that short trainings end with usable moving statistics.
            Defaults to `False`.
        spatial_dropout: float. Rate of a SpatialDropout layer at the end of
            each block. Defaults to 0.
        pooling: `"max"`, `"avg"`, `"none"` or `"conv"` (a strided
            convolution in place of the pool: the all-convolutional net), or
            a tuple. Defaults to `"max"`.
        pool_size: int or tuple. Defaults to 2.
        pool_strides: int, tuple or None. Defaults to `None` (= pool_size).
        pool_padding: `"valid"` or `"same"`, or a tuple. Defaults to
            `"valid"` as in Keras's pooling layers.
        block_type: `"plain"` or `"residual"` (basic residual blocks of two
            convolutions with a projection shortcut where the shape changes;
            needs an even `convs_per_block` and `"same"` padding), or a tuple.
            Defaults to `"plain"`.
        head: `"flatten"`, `"gap"` (global average pooling) or `"conv"`
            (1x1 convolutions, then global average pooling: the
            fully-convolutional net). Defaults to `"flatten"`.
        dense_units: tuple of int. K, the widths of the hidden dense layers
            (1x1 convolutions with `head="conv"`). Defaults to `(128,)`.
        dropout: float. Dropout after each hidden dense layer (before the
            classifier when K=0). Defaults to 0.
        classifier_activation: `"softmax"` or `None` (logits). Defaults to
            `"softmax"`.
        augmentation: tuple. Named augmentation layers (see
            `kerascnn.augment`), active only in training. Defaults to `()`.

    Raises:
        InputError: (a `ValueError`) a value has the wrong type or is out of
            range, or a per-block tuple has the wrong length.

    Example:

    >>> spec = CNNSpec(input_shape=(28, 28, 1), num_classes=10, conv_blocks=2)
    >>> [conv.filters for block in spec.blocks() for conv in block.convs]
    [32, 32, 64, 64]
    """

    input_shape: tuple[int, ...]
    num_classes: int
    conv_blocks: int = 2
    convs_per_block: IntOrPerBlock = 2
    filters: Optional[IntOrPerBlock] = None
    kernel_size: IntOrPerBlock = 3
    strides: IntOrPerBlock = 1
    padding: Union[str, Sequence[Any]] = "same"
    dilation_rate: IntOrPerBlock = 1
    activation: str = "relu"
    batch_norm: bool = False
    spatial_dropout: float = 0.0
    pooling: Union[str, Sequence[str]] = "max"
    pool_size: IntOrPerBlock = 2
    pool_strides: Optional[IntOrPerBlock] = None
    pool_padding: Union[str, Sequence[str]] = "valid"
    block_type: Union[str, Sequence[str]] = "plain"
    head: str = "flatten"
    dense_units: tuple[int, ...] = (128,)
    dropout: float = 0.0
    classifier_activation: Optional[str] = "softmax"
    augmentation: tuple = field(default=())

    # ------------------------------------------------------------------ checks

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for f in dataclasses.fields(self):
            set_(f.name, _tuplify(getattr(self, f.name)))

        shape = self.input_shape
        if isinstance(shape, int) or not isinstance(shape, tuple):
            raise InputError("input_shape must be a tuple of 2, 3 or 4 positive integers "
                             f"(spatial sizes then channels). {received('input_shape', shape)}")
        if len(shape) not in (2, 3, 4) or not all(is_int(d) and d >= 1 for d in shape):
            raise InputError("input_shape must be 2, 3 or 4 positive integers (spatial sizes, "
                             "then channels: (length, channels) for 1D, (height, width, "
                             "channels) for 2D, (depth, height, width, channels) for 3D). "
                             f"{received('input_shape', shape)}")
        self._check_int("num_classes", minimum=2)
        self._check_int("conv_blocks", minimum=1)
        self._check_per_block("convs_per_block", self._int_check(1), per_conv=False)
        per_block = self.convs_per_block
        depth = sum(per_block) if isinstance(per_block, tuple) else self.conv_blocks * per_block
        if depth > MAX_CONV_LAYERS:
            raise InputError(
                f"The network would have {depth:,} convolution layers (conv_blocks x "
                f"convs_per_block); kerascnn builds at most {MAX_CONV_LAYERS:,}. Received: "
                f"conv_blocks={self.conv_blocks}, convs_per_block={per_block!r}")
        self._check_per_block("filters", self._int_check(1), per_conv=True)
        self._check_per_block("kernel_size", self._int_check(1), per_conv=True)
        self._check_per_block("strides", self._int_check(1), per_conv=True)
        self._check_per_block("padding", self._choice_check(PADDINGS), per_conv=True)
        self._check_per_block("dilation_rate", self._int_check(1), per_conv=True)
        self._check_per_block("pooling", self._choice_check(POOLINGS), per_conv=False)
        self._check_per_block("pool_size", self._int_check(1), per_conv=False)
        self._check_per_block("pool_strides", self._int_check(1), per_conv=False)
        self._check_per_block("pool_padding", self._choice_check(PADDINGS), per_conv=False)
        self._check_per_block("block_type", self._choice_check(BLOCK_TYPES), per_conv=False)

        if self.activation not in ACTIVATIONS:
            raise InputError(f"Unknown activation; allowed: {', '.join(ACTIVATIONS)}. "
                             f"{received('activation', self.activation)}")
        if not isinstance(self.batch_norm, bool):
            raise InputError(f"batch_norm must be True or False. "
                             f"{received('batch_norm', self.batch_norm)}")
        for name in ("spatial_dropout", "dropout"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)):
                raise InputError(f"{name} must be a number in [0, 1). {received(name, rate)}")
            if not 0.0 <= rate < 1.0:
                raise InputError(f"{name} must be in [0, 1). {received(name, rate)}")
            set_(name, float(rate))
        if self.head not in HEADS:
            raise InputError(f"Unknown head; allowed: {', '.join(HEADS)}. "
                             f"{received('head', self.head)}")
        units = self.dense_units
        if is_int(units):
            units = (units,)
        if units is None:
            units = ()
        if not isinstance(units, tuple) or not all(is_int(u) and u >= 1 for u in units):
            raise InputError("dense_units must be a tuple of positive integers (the K hidden "
                             f"widths; () for none). {received('dense_units', self.dense_units)}")
        set_("dense_units", units)
        if self.classifier_activation not in CLASSIFIER_ACTIVATIONS:
            raise InputError("classifier_activation must be 'softmax' or None (logits). "
                             f"{received('classifier_activation', self.classifier_activation)}")
        aug = self.augmentation
        if aug is None:
            aug = ()
        if aug:
            aug = tuple(validate_augmentation(aug))
        set_("augmentation", aug)

        # cross-field rules, per block and per conv
        for b in self.blocks():
            for c, conv in enumerate(b.convs, start=1):
                if conv.strides > 1 and conv.dilation_rate > 1:
                    raise InputError(
                        f"block {b.index} conv {c}: a convolution cannot have both strides > 1 "
                        "and dilation_rate > 1 (Keras refuses it). Received: "
                        f"strides={conv.strides}, dilation_rate={conv.dilation_rate}")
            if b.block_type == "residual":
                if len(b.convs) % 2:
                    raise InputError(
                        f"block {b.index} is residual: its convolutions come in pairs (basic "
                        f"residual blocks), so convs_per_block must be even. "
                        f"Received: convs_per_block={len(b.convs)} for block {b.index}")
                if any(conv.padding != "same" for conv in b.convs):
                    raise InputError(
                        f"block {b.index} is residual: its convolutions need padding='same' so "
                        f"that the shortcut and the main path keep the same size. "
                        f"{received('padding', self.padding)}")

    def _int_check(self, minimum: int):
        def check(name: str, value: Any) -> None:
            if not is_int(value) or value < minimum:
                raise InputError(f"{name} values must be integers >= {minimum}. "
                                 f"{received(name, getattr(self, name))}")
        return check

    def _choice_check(self, choices: Sequence[str]):
        def check(name: str, value: Any) -> None:
            if value not in choices:
                raise InputError(f"Unknown {name} {value!r}; allowed: {', '.join(choices)}. "
                                 f"{received(name, getattr(self, name))}")
        return check

    def _check_int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if not is_int(value):
            raise InputError(f"{name} must be an integer. {received(name, value)}")
        if value < minimum:
            raise InputError(f"{name} must be >= {minimum}. {received(name, value)}")

    def _check_per_block(self, name: str, check, *, per_conv: bool) -> None:
        value = getattr(self, name)
        if value is None and name in ("filters", "pool_strides"):
            return  # resolved per block: 32 doubling / pool_size
        if not isinstance(value, tuple):
            check(name, value)
            return
        if len(value) != self.conv_blocks:
            raise InputError(
                f"{name} has one value per block, so its length must equal conv_blocks="
                f"{self.conv_blocks} (or give one value for all blocks). "
                f"{received(name, value)}")
        for i, entry in enumerate(value):
            if isinstance(entry, tuple):
                if not per_conv:
                    raise InputError(f"{name} takes one value per block, not per convolution. "
                                     f"{received(name, value)}")
                n = self._per_block_value("convs_per_block", i)
                if len(entry) != n:
                    raise InputError(
                        f"{name} for block {i + 1} lists {len(entry)} values but the block has "
                        f"{n} convolutions. {received(name, value)}")
                for v in entry:
                    check(name, v)
            else:
                check(name, entry)

    # ------------------------------------------------------------- resolution

    def _per_block_value(self, name: str, i: int) -> Any:
        value = getattr(self, name)
        if value is None and name == "filters":
            return min(32 * 2 ** i, 512)
        if value is None and name == "pool_strides":
            return self._per_block_value("pool_size", i)
        return value[i] if isinstance(value, tuple) else value

    @property
    def rank(self) -> int:
        """Number of spatial axes: 1, 2 or 3."""
        return len(self.input_shape) - 1

    def block(self, index: int) -> BlockSpec:
        """The resolved block `index` (1-based)."""
        if not 1 <= index <= self.conv_blocks:
            raise InputError(f"block index must be in 1..{self.conv_blocks}. "
                             f"{received('index', index)}")
        i = index - 1
        n = self._per_block_value("convs_per_block", i)

        def per_conv(name: str) -> tuple:
            v = self._per_block_value(name, i)
            return tuple(v) if isinstance(v, tuple) else (v,) * n

        convs = tuple(ConvSpec(*vals) for vals in zip(*(per_conv(f) for f in PER_CONV_FIELDS)))
        return BlockSpec(
            index=index,
            convs=convs,
            block_type=self._per_block_value("block_type", i),
            pooling=self._per_block_value("pooling", i),
            pool_size=self._per_block_value("pool_size", i),
            pool_strides=self._per_block_value("pool_strides", i),
            pool_padding=self._per_block_value("pool_padding", i),
        )

    def blocks(self) -> list[BlockSpec]:
        return [self.block(b) for b in range(1, self.conv_blocks + 1)]

    # -------------------------------------------------------------- round trip

    def replace(self, **changes: Any) -> "CNNSpec":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InputError(f"Unrecognized arguments for CNNSpec: {unknown}. "
                             f"Allowed: {', '.join(field_names())}. Received: {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples become lists)."""
        return {f.name: _listify(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "CNNSpec":
        """Build from a dict; unknown keys are refused."""
        if not isinstance(config, dict):
            raise InputError("A spec must be a mapping of field names to values. "
                             f"Received: {type(config).__name__}")
        unknown = sorted(set(config) - set(field_names()))
        if unknown:
            raise InputError(f"Unrecognized arguments for CNNSpec: {unknown}. "
                             f"Allowed: {', '.join(field_names())}. Received: {unknown}")
        missing = [k for k in ("input_shape", "num_classes") if k not in config]
        if missing:
            raise InputError(f"A spec needs {' and '.join(missing)}. "
                             f"Received: keys {sorted(config)}")
        return cls(**{k: _tuplify(v) for k, v in config.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML (`.yaml`/`.yml`) or JSON (`.json`), atomically."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            return atomic_write_text(path, self.to_json() + "\n")
        if path.suffix.lower() in (".yaml", ".yml"):
            return atomic_write_text(path, self.to_yaml())
        raise InputError(f"Spec files end in .yaml, .yml or .json. Received: path={str(path)!r}")

    @classmethod
    def load(cls, path: str | Path) -> "CNNSpec":
        """Read a spec from YAML or JSON (YAML is a superset; `safe_load`)."""
        data = read_yaml(path)
        if isinstance(data, dict) and "spec" in data and isinstance(data["spec"], dict) \
                and "input_shape" not in data:
            data = data["spec"]
        try:
            return cls.from_dict(data)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(CNNSpec)]
