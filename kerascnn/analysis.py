"""Static analysis of a `CNNSpec`: the one source of truth for shapes.

Pure Python, no TensorFlow. For every layer the builder will create, in order,
`analyze` gives its output shape by the formula

    out = floor((n + 2p - d(k - 1) - 1) / s) + 1

(padding p, dilation d, kernel k, stride s; `"same"` padding is the p for which
out = ceil(n / s), as in Keras), its receptive field and jump, its parameters
and its multiply-accumulates (MACs) per sample. The builder walks the same
plan, so a network that `analyze` accepts is exactly the one Keras builds,
and one it refuses never reaches Keras.

    r_out = r_in + d(k - 1) * j_in        j_out = j_in * s
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from kerascnn.checks import InputError
from kerascnn.spec import CNNSpec


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the plan.

    Attributes:
        name: Keras layer name (`block1_conv1`, `block1_pool`, `fc1`, ...).
        kind: `conv`, `batch_norm`, `activation`, `max_pool`, `avg_pool`,
            `spatial_dropout`, `add`, `flatten`, `global_avg_pool`, `dense`,
            `dropout`.
        output_shape: shape of one sample's output (channels last).
        receptive_field: input pixels (along each spatial axis) that one
            output position sees.
        jump: distance in input pixels between adjacent output positions.
        params: trainable parameters.
        non_trainable_params: e.g. BatchNorm's moving mean and variance.
        macs: multiply-accumulates per sample.
        activation_size: number of values in the output per sample.
        config: what the builder needs (filters, kernel_size, ...).
        inputs: names of the layers feeding this one; empty means the layer
            just before it.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    receptive_field: int
    jump: int
    params: int = 0
    non_trainable_params: int = 0
    macs: int = 0
    activation_size: int = 0
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    inputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "output_shape": list(self.output_shape),
            "receptive_field": self.receptive_field, "jump": self.jump,
            "params": self.params, "non_trainable_params": self.non_trainable_params,
            "macs": self.macs, "activation_size": self.activation_size,
        }


@dataclass(frozen=True)
class Analysis:
    """What `analyze` returns: the layer table and its totals."""

    spec: CNNSpec
    layers: tuple[LayerInfo, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.spec.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].output_shape

    @property
    def trainable_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(layer.non_trainable_params for layer in self.layers)

    @property
    def total_params(self) -> int:
        """All weights, as Keras's `model.count_params()` counts them."""
        return self.trainable_params + self.non_trainable_params

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def receptive_field(self) -> int:
        """Receptive field of the last convolutional feature map."""
        spatial = [layer for layer in self.layers if len(layer.output_shape) > 1
                   and layer.kind not in ("flatten",)]
        return spatial[-1].receptive_field if spatial else 1

    @property
    def feature_map_shape(self) -> tuple[int, ...]:
        """Shape after the last block, before the head."""
        blocks = [layer for layer in self.layers if layer.name.startswith("block")]
        return blocks[-1].output_shape if blocks else self.input_shape

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "receptive_field": self.receptive_field,
            "output_shape": list(self.output_shape),
        }


# ---------------------------------------------------------------------------
# The formula
# ---------------------------------------------------------------------------


def conv_output_size(n: int, kernel_size: int, strides: int = 1, padding: str = "valid",
                     dilation_rate: int = 1) -> int:
    """Output length along one axis: `floor((n + 2p - d(k-1) - 1) / s) + 1`.

    For `"same"` the padding is whatever makes the output `ceil(n / s)`
    (Keras's rule). The result may be < 1: callers decide what that means.
    """
    effective = dilation_rate * (kernel_size - 1) + 1
    if padding == "same":
        total_pad = max((math.ceil(n / strides) - 1) * strides + effective - n, 0)
        return (n + total_pad - effective) // strides + 1
    return (n - effective) // strides + 1


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


class _Planner:
    """Walks a spec layer by layer, tracking shape, receptive field and jump."""

    def __init__(self, spec: CNNSpec):
        self.spec = spec
        self.rank = spec.rank
        self.layers: list[LayerInfo] = []
        self.spatial = tuple(spec.input_shape[:-1])
        self.channels = spec.input_shape[-1]
        self.rf = 1
        self.jump = 1

    # state helpers -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.spatial, self.channels)

    def state(self) -> tuple:
        return (self.spatial, self.channels, self.rf, self.jump)

    def restore(self, state: tuple) -> None:
        self.spatial, self.channels, self.rf, self.jump = state

    def add(self, name: str, kind: str, *, params: int = 0, non_trainable: int = 0,
            macs: int = 0, config: Optional[dict] = None, inputs: tuple[str, ...] = ()) -> None:
        shape = self.shape if self.spatial is not None else (self.channels,)
        self.layers.append(LayerInfo(
            name=name, kind=kind, output_shape=shape, receptive_field=self.rf,
            jump=self.jump, params=params, non_trainable_params=non_trainable, macs=macs,
            activation_size=_prod(shape), config=config or {}, inputs=inputs))

    def _shrink(self, name: str, kernel_size: int, strides: int, padding: str,
                dilation_rate: int = 1) -> None:
        new = tuple(conv_output_size(n, kernel_size, strides, padding, dilation_rate)
                    for n in self.spatial)
        if min(new) < 1:
            self._too_small(name, new, kernel_size, strides, padding, dilation_rate)
        self.rf += dilation_rate * (kernel_size - 1) * self.jump
        self.jump *= strides
        self.spatial = new

    def _too_small(self, name, new, kernel_size, strides, padding, dilation_rate) -> None:
        spec = self.spec
        size = "x".join(str(n) for n in spec.input_shape[:-1])
        before = "x".join(str(n) for n in self.spatial)
        after = "x".join(str(max(n, 0)) for n in new)
        raise InputError(
            f"Input {size} is too small for this network: layer {name} (kernel_size="
            f"{kernel_size}, strides={strides}, padding={padding!r}, dilation_rate="
            f"{dilation_rate}) would turn the {before} feature map into {after}. Use fewer "
            f"blocks, 'same' padding, smaller kernels or pools, or a larger input. "
            f"Received: input_shape={spec.input_shape}, conv_blocks={spec.conv_blocks}, "
            f"convs_per_block={spec.convs_per_block}, padding={spec.padding!r}, "
            f"pooling={spec.pooling!r}")

    # layers --------------------------------------------------------------
    def conv(self, name: str, filters: int, kernel_size: int, strides: int, padding: str,
             dilation_rate: int, *, use_bias: bool, activation: Optional[str],
             inputs: tuple[str, ...] = ()) -> None:
        cin = self.channels
        self._shrink(name, kernel_size, strides, padding, dilation_rate)
        self.channels = filters
        weights = kernel_size ** self.rank * cin * filters
        self.add(name, "conv", params=weights + (filters if use_bias else 0),
                 macs=weights * _prod(self.spatial),
                 config=dict(filters=filters, kernel_size=kernel_size, strides=strides,
                             padding=padding, dilation_rate=dilation_rate, use_bias=use_bias,
                             activation=activation),
                 inputs=inputs)

    def batch_norm(self, name: str) -> None:
        self.add(name, "batch_norm", params=2 * self.channels, non_trainable=2 * self.channels)

    def activation(self, name: str, activation: str, inputs: tuple[str, ...] = ()) -> None:
        self.add(name, "activation", config=dict(activation=activation), inputs=inputs)

    def pool(self, name: str, kind: str, pool_size: int, strides: int, padding: str) -> None:
        self._shrink(name, pool_size, strides, padding)
        self.add(name, f"{kind}_pool",
                 config=dict(pool_size=pool_size, strides=strides, padding=padding))


def analyze(spec: CNNSpec) -> Analysis:
    """Every layer's output shape, receptive field, parameters and MACs.

    Args:
        spec: CNNSpec. The network to analyse.

    Returns:
        An `Analysis` with `.layers` (`LayerInfo` in build order) and the
        totals `.total_params`, `.trainable_params`, `.total_macs`.

    Raises:
        InputError: a feature map would shrink below 1 somewhere; the message
            names the first such layer with the numbers.

    Example:

    >>> a = analyze(CNNSpec(input_shape=(28, 28, 1), num_classes=10))
    >>> a.layer("block2_pool").output_shape
    (7, 7, 64)
    """
    if not isinstance(spec, CNNSpec):
        raise InputError(f"analyze expects a CNNSpec. Received: {type(spec).__name__}")
    p = _Planner(spec)
    act = spec.activation
    bn = spec.batch_norm
    for block in spec.blocks():
        b = block.index
        if block.block_type == "plain":
            for c, conv in enumerate(block.convs, start=1):
                name = f"block{b}_conv{c}"
                p.conv(name, conv.filters, conv.kernel_size, conv.strides, conv.padding,
                       conv.dilation_rate, use_bias=not bn, activation=None if bn else act)
                if bn:
                    p.batch_norm(f"block{b}_bn{c}")
                    p.activation(f"block{b}_act{c}", act)
        else:
            for u in range(len(block.convs) // 2):
                first, second = block.convs[2 * u], block.convs[2 * u + 1]
                c1, c2 = 2 * u + 1, 2 * u + 2
                unit_input = p.layers[-1].name if p.layers else None
                start = p.state()
                p.conv(f"block{b}_conv{c1}", first.filters, first.kernel_size, first.strides,
                       "same", first.dilation_rate, use_bias=not bn,
                       activation=None if bn else act)
                if bn:
                    p.batch_norm(f"block{b}_bn{c1}")
                    p.activation(f"block{b}_act{c1}", act)
                p.conv(f"block{b}_conv{c2}", second.filters, second.kernel_size,
                       second.strides, "same", second.dilation_rate, use_bias=not bn,
                       activation=None)
                if bn:
                    p.batch_norm(f"block{b}_bn{c2}")
                main = p.layers[-1].name
                main_state = p.state()
                stride = first.strides * second.strides
                shortcut = unit_input
                if stride != 1 or start[1] != second.filters:
                    p.restore(start)
                    p.conv(f"block{b}_proj{u + 1}", second.filters, 1, stride, "same", 1,
                           use_bias=not bn, activation=None,
                           inputs=(unit_input,) if unit_input else ("input",))
                    if bn:
                        p.batch_norm(f"block{b}_proj{u + 1}_bn")
                    shortcut = p.layers[-1].name
                    if p.spatial != main_state[0]:  # cannot happen with 'same' padding
                        raise AssertionError("shortcut and main path disagree")
                p.restore(main_state)
                p.rf = max(p.rf, main_state[2])
                p.add(f"block{b}_add{u + 1}", "add",
                      inputs=(main, shortcut if shortcut else "input"))
                p.activation(f"block{b}_out{u + 1}", act)
        if block.pooling in ("max", "avg"):
            p.pool(f"block{b}_pool", block.pooling, block.pool_size, block.pool_strides,
                   block.pool_padding)
        elif block.pooling == "conv":
            filters = block.convs[-1].filters
            p.conv(f"block{b}_pool", filters, block.pool_size, block.pool_strides,
                   block.pool_padding, 1, use_bias=not bn, activation=None if bn else act)
            if bn:
                p.batch_norm(f"block{b}_pool_bn")
                p.activation(f"block{b}_pool_act", act)
        if spec.spatial_dropout > 0:
            p.add(f"block{b}_dropout", "spatial_dropout",
                  config=dict(rate=spec.spatial_dropout))

    # head ------------------------------------------------------------------
    def global_pool(name: str) -> None:
        p.rf += (max(p.spatial) - 1) * p.jump
        p.spatial = None
        p.add(name, "global_avg_pool")

    def dense(name: str, units: int, activation: Optional[str]) -> None:
        cin = p.channels
        p.channels = units
        p.add(name, "dense", params=cin * units + units, macs=cin * units,
              config=dict(units=units, activation=activation))

    if spec.head == "conv":
        for k, units in enumerate(spec.dense_units, start=1):
            p.conv(f"fc{k}", units, 1, 1, "same", 1, use_bias=True, activation=act)
            if spec.dropout > 0:
                p.add(f"fc{k}_dropout", "dropout", config=dict(rate=spec.dropout))
        if not spec.dense_units and spec.dropout > 0:
            p.add("head_dropout", "dropout", config=dict(rate=spec.dropout))
        p.conv("predictions_conv", spec.num_classes, 1, 1, "same", 1, use_bias=True,
               activation=None)
        global_pool("gap")
        p.add("predictions", "activation",
              config=dict(activation=spec.classifier_activation or "linear"))
    else:
        if spec.head == "flatten":
            p.rf += (max(p.spatial) - 1) * p.jump
            p.channels = _prod(p.shape)
            p.spatial = None
            p.add("flatten", "flatten")
        else:
            global_pool("gap")
        for k, units in enumerate(spec.dense_units, start=1):
            dense(f"fc{k}", units, act)
            if spec.dropout > 0:
                p.add(f"fc{k}_dropout", "dropout", config=dict(rate=spec.dropout))
        if not spec.dense_units and spec.dropout > 0:
            p.add("head_dropout", "dropout", config=dict(rate=spec.dropout))
        dense("predictions", spec.num_classes, spec.classifier_activation)
    return Analysis(spec=spec, layers=tuple(p.layers))


def is_valid(spec: CNNSpec) -> bool:
    """Whether every feature map of `spec` keeps a size of at least 1."""
    try:
        analyze(spec)
    except ValueError:
        return False
    return True


def max_conv_blocks(input_shape: Sequence[int], *, convs_per_block: int = 2,
                    kernel_size: int = 3, strides: int = 1, padding: str = "same",
                    dilation_rate: int = 1, pooling: str = "max", pool_size: int = 2,
                    pool_strides: Optional[int] = None, pool_padding: str = "valid",
                    limit: int = 32) -> int:
    """The deepest `conv_blocks` an input allows, all blocks alike.

    The search uses this to sample only depths that exist. With `"same"`
    padding and no pooling the depth is not bounded by the input; `limit`
    caps the answer.

    Args:
        input_shape: tuple of int. Input shape, channels last.
        convs_per_block, kernel_size, strides, padding, dilation_rate,
        pooling, pool_size, pool_strides, pool_padding: as in `CNNSpec`,
            one value for every block.
        limit: int. The largest answer. Defaults to 32.

    Returns:
        int, 0 if not even one block fits.
    """
    spatial = list(input_shape[:-1])
    if not spatial or min(spatial) < 1:
        raise InputError(f"input_shape must be positive sizes then channels. "
                         f"Received: input_shape={tuple(input_shape)}")
    pool_strides = pool_strides or pool_size
    depth = 0
    while depth < limit:
        sizes = spatial
        for _ in range(convs_per_block):
            sizes = [conv_output_size(n, kernel_size, strides, padding, dilation_rate)
                     for n in sizes]
        if pooling != "none":
            sizes = [conv_output_size(n, pool_size, pool_strides, pool_padding) for n in sizes]
        if min(sizes) < 1:
            break
        depth += 1
        spatial = sizes
    return depth
