"""The CNN search space: which hyperparameters, their values, which candidates exist.

    INPUT -> [[CONV -> ACT]*N -> POOL?]*M -> [FC -> ACT]*K -> FC

Pure Python (the analysis decides validity, nothing is built): the command line
parses `--space` with this module without importing TensorFlow, and
`kerascnn.tuning.CNNHyperModel` declares it on keras-tuner's `HyperParameters`.

The hyperparameters carry `CNNSpec`'s field names (`conv_blocks` is M,
`convs_per_block` is N, `dense_layers` is K), plus the few that are not spec
fields (`filters_growth`, `dense_units_<k>`, `learning_rate`, `optimizer`,
`augmentation_strength`). Each one is given as

- a fixed value (`padding="valid"`): not searched, not a hyperparameter;
- a list of choices (`kernel_size=[3, 5]`): a `Choice` (`Boolean` for
  `[False, True]`);
- a `(min, max)` tuple (`conv_blocks=(1, 4)`): an `Int` or `Float` range;
  in YAML, where there are no tuples, a mapping `{min: 1, max: 4}` (with
  optional `step` and `sampling`: `linear` or `log`);
- `None`: the documented default below (pinned by `tests/test_hypermodel.py`).

Per-block and per-layer hyperparameters (`filters_<b>` with
`per_block_filters=True`, `dense_units_<k>`) are declared under
`hp.conditional_scope`, so a 2-block network has no `filters_3` and a network
without dense layers has no `dense_units_1`.

Validity is decided by `kerascnn.analysis`, never by building a model and
catching an error: `SearchSpace.check(values)` says why a candidate cannot
exist (a feature map below 1x1, a spec rule, `max_params`, `max_macs`), and
the oracles of `kerascnn.tuning` resample such candidates instead of training
them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

from kerascnn.analysis import analyze
from kerascnn.augment import MAX_FACTOR, validate_augmentation
from kerascnn.checks import OPTIMIZERS, InputError, received

from kerascnn.spec import ACTIVATIONS, BLOCK_TYPES, HEADS, PADDINGS, POOLINGS, CNNSpec

logger = logging.getLogger(__name__)


# The documented default of every hyperparameter (what `None` means), pinned by
# tests/test_hypermodel.py. A fast recipe inside every trial (issue 12), as
# bench/recipe_ablation.py measured it on 8x8 digits and the Fashion-MNIST
# sample at equal CPU time: batch norm in every trial (+1.6 and +0.4 points)
# and label smoothing 0.1 (+0.7, +0.5); no flip (-1.8, -1.3) and no
# shift by default (+0.5 on digits but -3.7 on the sample in ~10 epochs; give
# `augmentation_strength: 1.0` for a shift by a tenth of the image); the rate
# decays by a cosine to zero at the trial's last step, from a searched peak
# (no warm-up: a first-rung trial is a few dozen steps; the final training
# runs one-cycle). Dropout before the classifier is 0.25 or 0.5, never 0: the
# final training runs ten times a trial's epochs or more, and an unregularized
# winner of short trials then overfits (full Fashion-MNIST, 15 minutes: a 3x1
# block net without batch norm or dropout won the search at 0.916 and scored
# 0.909 on held-out images after 40 epochs, worse than its 4-epoch checkpoint).
# The architecture and the peak rate are searched; the successive-halving
# tuner trains each candidate for one or two epochs on a subset first, so a
# wide space costs little.
DEFAULT_SPACE: dict[str, Any] = {
    "conv_blocks": (1, 3),
    "convs_per_block": (1, 2),
    "filters": [16, 32, 64],
    "filters_growth": 2,
    "kernel_size": 3,
    "strides": 1,
    "padding": "same",
    "dilation_rate": 1,
    "activation": "relu",
    "batch_norm": True,
    "spatial_dropout": 0.0,
    "pooling": "max",
    "pool_size": 2,
    "block_type": "plain",
    "head": "flatten",
    "dense_layers": (0, 1),
    "dense_units": [64, 128],
    "dropout": [0.25, 0.5],
    "learning_rate": (1e-3, 1e-2),
    "optimizer": "adam",
    "label_smoothing": 0.1,
    "schedule": "cosine",
    "augmentation_strength": 0.0,
}
# the augmentation that `augmentation_strength` scales when none is given
DEFAULT_AUGMENTATION = ({"name": "translation", "factor": 0.1},)
# learning-rate schedules of a trial (kerascnn.schedules; each ends with the trial)
TRIAL_SCHEDULES = ("one-cycle", "cosine", "constant")
HYPERPARAMETERS = tuple(DEFAULT_SPACE)

_INT_MIN = {"conv_blocks": 1, "convs_per_block": 1, "filters": 1, "kernel_size": 1,
            "strides": 1, "dilation_rate": 1, "pool_size": 1, "dense_layers": 0,
            "dense_units": 1}
_FLOAT_RANGE = {  # name -> (low, high, high inclusive)
    "spatial_dropout": (0.0, 1.0, False), "dropout": (0.0, 1.0, False),
    "learning_rate": (0.0, 10.0, True), "augmentation_strength": (0.0, 10.0, True),
    "filters_growth": (0.0, 8.0, True), "label_smoothing": (0.0, 1.0, False),
}
_STR_CHOICES = {"padding": PADDINGS, "pooling": POOLINGS, "activation": ACTIVATIONS,
                "block_type": BLOCK_TYPES, "head": HEADS, "optimizer": OPTIMIZERS,
                "schedule": TRIAL_SCHEDULES}
_LOG_BY_DEFAULT = ("learning_rate",)
# hyperparameters that decide whether an architecture exists and how big it is;
# widths are monotone (more filters/units = more params and MACs)
_STRUCTURAL = ("conv_blocks", "convs_per_block", "kernel_size", "strides", "padding",
               "dilation_rate", "batch_norm", "pooling", "pool_size", "block_type", "head",
               "dense_layers")
_WIDTHS = ("filters", "filters_growth", "dense_units")


@dataclass(frozen=True)
class Param:
    """One entry of the search space: fixed, a choice, or a range."""

    name: str
    kind: str  # "fixed" | "choice" | "int" | "float"
    value: Any = None
    values: tuple = ()
    min_value: Any = None
    max_value: Any = None
    step: Any = None
    sampling: str = "linear"

    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and len(self.all_values(strict=False) or (0, 1)) > 1

    @property
    def default(self) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return self.values[0]
        return self.min_value

    def all_values(self, strict: bool = True) -> Optional[list]:
        """Every value the entry can take; None for a continuous range."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            step = self.step or 1
            if self.sampling == "log" and self.step:
                out, v = [], self.min_value
                while v <= self.max_value:
                    out.append(v)
                    v *= step
                return out
            return list(range(self.min_value, self.max_value + 1, step))
        if self.step is None:
            if strict:
                return None
            return [self.min_value, self.max_value]
        n = int(math.floor((self.max_value - self.min_value) / self.step + 1e-9))
        return [round(self.min_value + i * self.step, 12) for i in range(n + 1)]

    def lowest(self) -> Any:
        values = self.all_values(strict=False)
        return min(values)

    def declare(self, hp, name: Optional[str] = None):
        """Register on a `keras_tuner.HyperParameters`; returns the value (None if inactive)."""
        name = name or self.name
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            if len(self.values) == 2 and all(isinstance(v, bool) for v in self.values) \
                    and set(self.values) == {False, True}:
                return hp.Boolean(name, default=self.values[0])
            return hp.Choice(name, list(self.values), default=self.values[0])
        if self.kind == "int":
            return hp.Int(name, self.min_value, self.max_value, step=self.step,
                          sampling=self.sampling)
        return hp.Float(name, self.min_value, self.max_value, step=self.step,
                        sampling=self.sampling)

    def to_config(self) -> Any:
        """The YAML/JSON form (a scalar, a list, or a {min, max} mapping)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return list(self.values)
        config = {"min": self.min_value, "max": self.max_value}
        if self.step is not None:
            config["step"] = self.step
        if self.sampling != "linear":
            config["sampling"] = self.sampling
        return config


def _check_scalar(name: str, value: Any, raw: Any) -> Any:
    """Validate one candidate value of `name`; returns it normalised."""
    if name in _INT_MIN:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InputError(f"{name} takes integers. {received(name, raw)}")
        if value < _INT_MIN[name]:
            raise InputError(f"{name} values must be >= {_INT_MIN[name]}. {received(name, raw)}")
        return value
    if name in _FLOAT_RANGE:
        low, high, inclusive = _FLOAT_RANGE[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise InputError(f"{name} takes numbers. {received(name, raw)}")
        ok = value >= low and (value <= high if inclusive else value < high)
        if name in ("learning_rate", "filters_growth"):
            ok = ok and value > 0
        if not ok:
            interval = f"({low}, {high}]" if name in ("learning_rate", "filters_growth") \
                else f"[{low}, {high}{']' if inclusive else ')'}"
            raise InputError(f"{name} must be in {interval}. {received(name, raw)}")
        return float(value)
    if name in _STR_CHOICES:
        choices = _STR_CHOICES[name]
        if not isinstance(value, str) or value not in choices:
            raise InputError(f"Unknown {name} {value!r}; allowed: {', '.join(choices)}. "
                             f"{received(name, raw)}")
        return value
    if name == "batch_norm":
        if not isinstance(value, bool):
            raise InputError(f"batch_norm takes True or False. {received(name, raw)}")
        return value
    raise AssertionError(name)  # pragma: no cover - names are checked before


def parse_param(name: str, raw: Any) -> Param:
    """Turn a user's entry (fixed, list, (min, max), mapping or None) into a `Param`.

    Raises:
        ValueError, TypeError: an unknown name, a bad value, or min > max.
    """
    if name not in DEFAULT_SPACE:
        raise InputError(f"Unrecognized search-space arguments: [{name!r}]. Allowed: "
                         f"{', '.join(HYPERPARAMETERS)}. {received(name, raw)}")
    if raw is None:
        raw = DEFAULT_SPACE[name]
    value = raw
    if isinstance(value, Mapping):
        keys = set(value)
        if keys <= {"value"} and keys:
            value = value["value"]
        elif keys <= {"values", "choices"} and len(keys) == 1:
            value = list(value.get("values", value.get("choices")) or [])
        elif {"min", "max"} <= keys and keys <= {"min", "max", "step", "sampling"}:
            return _parse_range(name, value.get("min"), value.get("max"), value.get("step"),
                                value.get("sampling"), raw)
        else:
            raise InputError(
                f"A search-space mapping for {name} takes min and max (with optional step and "
                f"sampling), or values, or value. {received(name, raw)}")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InputError(f"A range is a (min, max) tuple; use a list for choices. "
                             f"{received(name, raw)}")
        return _parse_range(name, value[0], value[1], None, None, raw)
    if isinstance(value, list):
        if not value:
            raise InputError(f"A list of choices for {name} needs at least one value. "
                             f"{received(name, raw)}")
        values = []
        for v in value:
            v = _check_scalar(name, v, raw)
            if v not in values:
                values.append(v)
        if len(values) == 1:
            return Param(name, "fixed", value=values[0])
        return Param(name, "choice", values=tuple(values))
    return Param(name, "fixed", value=_check_scalar(name, value, raw))


def _parse_range(name: str, low: Any, high: Any, step: Any, sampling: Any, raw: Any) -> Param:
    if name in _STR_CHOICES or name == "batch_norm":
        raise InputError(f"{name} takes a value or a list of choices, not a range. "
                         f"{received(name, raw)}")
    if low is None or high is None:
        raise InputError(f"A range needs both min and max. {received(name, raw)}")
    low, high = _check_scalar(name, low, raw), _check_scalar(name, high, raw)
    if low > high:
        raise InputError(f"The range for {name} has min > max; give (min, max) with "
                         f"min <= max. {received(name, raw)}")
    sampling = sampling or ("log" if name in _LOG_BY_DEFAULT else "linear")
    if sampling not in ("linear", "log"):
        raise InputError(f"sampling is 'linear' or 'log'. {received(name, raw)}")
    if sampling == "log" and low <= 0:
        raise InputError(f"log sampling needs min > 0. {received(name, raw)}")
    if low == high:
        return Param(name, "fixed", value=low)
    if name in _INT_MIN:
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)
                                 or step < 1):
            raise InputError(f"An integer range takes an integer step >= 1. "
                             f"{received(name, raw)}")
        return Param(name, "int", min_value=int(low), max_value=int(high), step=step,
                     sampling=sampling)
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise InputError(f"step must be a positive number. {received(name, raw)}")
        step = float(step)
    return Param(name, "float", min_value=float(low), max_value=float(high), step=step,
                 sampling=sampling)


class SearchSpace:
    """A resolved search space over `CNNSpec`s for one input shape.

    Args:
        input_shape: tuple of int. The network's input shape (after any
            resizing), channels last.
        num_classes: int. Number of classes.
        per_block_filters: bool. Search the filters of each block separately
            (`filters_1`, `filters_2`, ... under conditional scopes) instead
            of a base `filters` and a `filters_growth` factor per block.
            Defaults to `False`.
        augmentation: list. Augmentation entries (see `kerascnn.augment`)
            whose factors `augmentation_strength` scales; 0 turns them off.
            Defaults to `None`: `DEFAULT_AUGMENTATION` (a shift by up to a
            tenth of the image) when the strength is searched or positive,
            else none.
        max_params: int. Candidates with more parameters are resampled.
        max_macs: int. Candidates with more multiply-accumulates per image
            are resampled.
        **space: hyperparameter entries (see the module docstring).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *,
                 per_block_filters: bool = False, augmentation: Any = None,
                 max_params: Optional[int] = None, max_macs: Optional[int] = None,
                 **space: Any):
        unknown = sorted(set(space) - set(DEFAULT_SPACE))
        if unknown:
            raise InputError(f"Unrecognized search-space arguments: {unknown}. Allowed: "
                             f"{', '.join(HYPERPARAMETERS)}. Received: {unknown}")
        # validates input_shape and num_classes with the spec's own messages
        CNNSpec(input_shape=tuple(input_shape), num_classes=num_classes, conv_blocks=1)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        if not isinstance(per_block_filters, bool):
            raise InputError(f"per_block_filters takes True or False. "
                            f"{received('per_block_filters', per_block_filters)}")
        self.per_block_filters = per_block_filters
        for name, limit in (("max_params", max_params), ("max_macs", max_macs)):
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                      or limit < 1):
                raise InputError(f"{name} must be a positive integer. {received(name, limit)}")
        self.max_params = max_params
        self.max_macs = max_macs
        self.params: dict[str, Param] = {n: parse_param(n, space.get(n)) for n in DEFAULT_SPACE}
        strength = self.params["augmentation_strength"]
        # augmentation the user chose (a list, or a strength): the final training
        # then trains exactly as the trials did (kerascnn.tuning.final)
        self.augmentation_chosen = augmentation is not None or "augmentation_strength" in space
        if augmentation is None:
            augmentation = [dict(e) for e in DEFAULT_AUGMENTATION] \
                if strength.searched or strength.default else []
        self.augmentation = validate_augmentation(augmentation)
        self._cache: dict[str, Optional[str]] = {}

    # ----------------------------------------------------------------- values

    def declare(self, hp) -> dict[str, Any]:
        """Declare every hyperparameter on `hp`; return all active values (fixed included)."""
        p = self.params
        values: dict[str, Any] = {}
        for name in ("conv_blocks", "convs_per_block"):
            values[name] = p[name].declare(hp)
        blocks = p["conv_blocks"]
        max_blocks = max(blocks.all_values())
        if self.per_block_filters:
            for b in range(1, max_blocks + 1):
                values[f"filters_{b}"] = self._conditional(hp, p["filters"], f"filters_{b}",
                                                           "conv_blocks", b)
        else:
            values["filters"] = p["filters"].declare(hp)
            values["filters_growth"] = p["filters_growth"].declare(hp)
        for name in ("kernel_size", "strides", "padding", "dilation_rate", "activation",
                     "batch_norm", "spatial_dropout", "pooling", "pool_size", "block_type",
                     "head", "dense_layers"):
            values[name] = p[name].declare(hp)
        max_dense = max(p["dense_layers"].all_values())
        for k in range(1, max_dense + 1):
            values[f"dense_units_{k}"] = self._conditional(hp, p["dense_units"],
                                                           f"dense_units_{k}", "dense_layers", k)
        for name in ("dropout", "learning_rate", "optimizer", "label_smoothing", "schedule",
                     "augmentation_strength"):
            values[name] = p[name].declare(hp)
        return {k: v for k, v in values.items() if v is not None}

    def _conditional(self, hp, param: Param, name: str, parent: str, index: int):
        parent_param = self.params[parent]
        if parent_param.kind == "fixed":
            return param.declare(hp, name) if parent_param.value >= index else None
        active = [v for v in parent_param.all_values() if v >= index]
        with hp.conditional_scope(parent, active):
            return param.declare(hp, name)

    def values_from(self, hp_values: Mapping[str, Any]) -> dict[str, Any]:
        """All active values (fixed ones included) for keras-tuner's `hp.values`."""
        return self.declare(_Values(hp_values))

    def spec(self, values: Mapping[str, Any]) -> CNNSpec:
        """The `CNNSpec` a set of values describes (raises ValueError/TypeError if none)."""
        m = int(values["conv_blocks"])
        if self.per_block_filters:
            filters = tuple(int(values[f"filters_{b}"]) for b in range(1, m + 1))
        else:
            base, growth = values["filters"], values["filters_growth"]
            filters = tuple(max(1, int(round(base * growth ** b))) for b in range(m))
        k = int(values["dense_layers"])
        dense = tuple(int(values[f"dense_units_{i}"]) for i in range(1, k + 1))
        strength = float(values.get("augmentation_strength") or 0.0)
        return CNNSpec(
            input_shape=self.input_shape, num_classes=self.num_classes, conv_blocks=m,
            convs_per_block=int(values["convs_per_block"]), filters=filters,
            kernel_size=values["kernel_size"], strides=values["strides"],
            padding=values["padding"], dilation_rate=values["dilation_rate"],
            activation=values["activation"], batch_norm=bool(values["batch_norm"]),
            spatial_dropout=values["spatial_dropout"], pooling=values["pooling"],
            pool_size=values["pool_size"], block_type=values["block_type"],
            head=values["head"], dense_units=dense, dropout=values["dropout"],
            augmentation=scale_augmentation(self.augmentation, strength),
        )

    def check(self, values: Mapping[str, Any]) -> Optional[str]:
        """Why these values describe no acceptable network, or None if they do.

        Decided by `kerascnn.analysis` (shapes, params, MACs), never by building.
        """
        key = values_key(values)
        if key not in self._cache:
            self._cache[key] = self._check(values)
        return self._cache[key]

    def _check(self, values: Mapping[str, Any]) -> Optional[str]:
        try:
            analysis = analyze(self.spec(values))
        except (ValueError, TypeError) as e:
            return str(e)
        if self.max_params is not None and analysis.total_params > self.max_params:
            return (f"{analysis.total_params:,} parameters exceed max_params="
                    f"{self.max_params:,}")
        if self.max_macs is not None and analysis.total_macs > self.max_macs:
            return f"{analysis.total_macs:,} MACs exceed max_macs={self.max_macs:,}"
        return None

    # ------------------------------------------------------------- enumeration

    def is_finite(self) -> bool:
        return all(p.all_values() is not None for p in self.params.values())

    def enumerate(self, *, structural: bool = False) -> Iterator[dict[str, Any]]:
        """Every combination of active values, defaults first (for grid search).

        With `structural=True`, widths take only their smallest value and
        training settings their default: the smallest network of every shape,
        which is what a feasibility check needs (params and MACs grow with
        widths).
        """
        p = self.params

        def options(name: str) -> list:
            param = p[name]
            if structural and name in _WIDTHS:
                return [param.lowest()]
            if structural and name not in _STRUCTURAL:
                return [param.default]
            values = param.all_values()
            if values is None:
                raise InputError(
                    f"Grid search needs a finite set of values, but {name} is a continuous "
                    f"range; give a list of values or a range with a step. "
                    f"{received(name, param.to_config())}")
            default = param.default
            return [default] + [v for v in values if v != default]

        head = ["conv_blocks"]
        flat = [n for n in ("convs_per_block", "kernel_size", "strides", "padding",
                            "dilation_rate", "activation", "batch_norm", "spatial_dropout",
                            "pooling", "pool_size", "block_type", "head", "dense_layers",
                            "dropout", "learning_rate", "optimizer", "label_smoothing",
                            "schedule", "augmentation_strength")]
        widths = [] if self.per_block_filters else ["filters", "filters_growth"]
        names = head + flat + widths
        for combo in itertools.product(*(options(n) for n in names)):
            base = dict(zip(names, combo))
            per_block = []
            if self.per_block_filters:
                per_block += [[(f"filters_{b}", v) for v in options("filters")]
                              for b in range(1, base["conv_blocks"] + 1)]
            per_block += [[(f"dense_units_{k}", v) for v in options("dense_units")]
                          for k in range(1, base["dense_layers"] + 1)]
            for extra in itertools.product(*per_block):
                values = dict(base)
                values.update(dict(extra))
                yield values

    def hp_names(self, values: Mapping[str, Any]) -> list[str]:
        """The names in `values` that are searched (not fixed), in space order."""
        searched = {n for n, prm in self.params.items() if prm.searched}
        out = []
        for name in values:
            root = name.rsplit("_", 1)[0] if name.startswith(("filters_", "dense_units_")) \
                and name[-1].isdigit() else name
            if root in searched:
                out.append(name)
        return out

    def assert_feasible(self, limit: int = 200_000) -> None:
        """Raise ValueError before any training if no candidate can ever be accepted."""
        smallest: Optional[tuple[int, int]] = None
        reasons: dict[str, int] = {}
        for n, values in enumerate(self.enumerate(structural=True)):
            if n >= limit:
                return  # too many shapes to prove anything; the oracle will report
            reason = self.check(values)
            if reason is None:
                return
            try:
                a = analyze(self.spec(values))
                size = (a.total_params, a.total_macs)
                smallest = size if smallest is None else min(smallest, size)
            except (ValueError, TypeError):
                first = reason.split(". ")[0]
                reasons[first] = reasons.get(first, 0) + 1
        limits = []
        if self.max_params is not None:
            limits.append(f"max_params={self.max_params:,}")
        if self.max_macs is not None:
            limits.append(f"max_macs={self.max_macs:,}")
        if smallest is not None and limits:
            raise InputError(
                f"No architecture in the search space meets {' and '.join(limits)}: the "
                f"smallest valid one has {smallest[0]:,} parameters and {smallest[1]:,} MACs. "
                f"Raise the limit or narrow the space to smaller networks. Received: "
                f"{', '.join(limits)}")
        example = next(iter(reasons), "no shape fits")
        raise InputError(
            f"No architecture in the search space fits input_shape={self.input_shape}: "
            f"{example}. Use fewer blocks, 'same' padding, smaller kernels or a larger "
            f"input. Received: conv_blocks={self.params['conv_blocks'].to_config()}, "
            f"input_shape={self.input_shape}")

    def to_config(self) -> dict[str, Any]:
        """The resolved space as YAML-ready data (the `space:` of search.yaml)."""
        config = {name: param.to_config() for name, param in self.params.items()}
        return config

    def fingerprint(self) -> str:
        data = {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "space": self.to_config(), "per_block_filters": self.per_block_filters,
                "augmentation": list(self.augmentation), "max_params": self.max_params,
                "max_macs": self.max_macs}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def values_key(values: Mapping[str, Any]) -> str:
    return json.dumps({str(k): values[k] for k in sorted(values)}, sort_keys=True, default=str)


def scale_augmentation(entries: Sequence[Mapping[str, Any]], strength: float) -> tuple:
    """Augmentation entries with every factor multiplied by `strength` (0: none)."""
    if not entries or not strength:
        return ()
    out = []
    for entry in entries:
        entry = dict(entry)
        if "factor" in entry:
            entry["factor"] = round(min(entry["factor"] * strength, MAX_FACTOR[entry["name"]]), 6)
        out.append(entry)
    return tuple(out)


class _Values:
    """The part of keras-tuner's `HyperParameters` that `SearchSpace.declare` uses,
    answering from a dict of values (the default when a value is missing) and
    None for entries whose conditional scope is inactive."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = {k: v for k, v in values.items() if not str(k).startswith("tuner/")}
        self._active = True

    @contextlib.contextmanager
    def conditional_scope(self, parent: str, active: Sequence[Any]):
        saved = self._active
        self._active = saved and self.values.get(parent) in active
        try:
            yield
        finally:
            self._active = saved

    def _value(self, name: str, default: Any) -> Any:
        if not self._active:
            return None
        return self.values.setdefault(name, default)

    def Boolean(self, name, default=False):  # noqa: N802 - keras-tuner's names
        return self._value(name, default)

    def Choice(self, name, values, default=None):  # noqa: N802
        return self._value(name, values[0] if default is None else default)

    def Int(self, name, min_value, max_value, step=None, sampling="linear"):  # noqa: N802
        return self._value(name, min_value)

    def Float(self, name, min_value, max_value, step=None, sampling="linear"):  # noqa: N802
        return self._value(name, min_value)

