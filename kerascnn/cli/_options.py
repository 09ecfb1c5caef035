"""Options and parameter types shared by several commands, and the start of TensorFlow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from kerascnn import runtime
from kerascnn.checks import COLOR_MODES, MAX_SEED, InputError, parse_duration, received
from kerascnn.files import read_yaml
from kerascnn.presets import get_preset
from kerascnn.spec import CNNSpec


def start_tensorflow(verbose: int = 0) -> None:
    """Start TensorFlow before a command imports any heavy module.

    Its C++ start-up lines (absl, oneDNN, CUDA probing) are hidden unless
    `-v` was given. Every command that uses TensorFlow calls this first.
    """
    runtime.start(verbose=verbose > 0)


class IntTuple(click.ParamType):
    """A comma-separated list of positive integers, e.g. `28,28,1`."""

    name = "INTS"

    def __init__(self, length: tuple[int, ...] | None = None, minimum: int = 1):
        self.length = length
        self.minimum = minimum

    def convert(self, value: Any, param, ctx) -> tuple[int, ...]:
        if isinstance(value, (tuple, list)):
            parts = list(value)
        else:
            text = str(value).strip().strip("()[]").strip()
            if re.fullmatch(r"\d+(\s*x\s*\d+)+", text):  # 28x28x1
                text = text.replace("x", ",")
            parts = [p.strip() for p in text.split(",")] if text else []
        try:
            ints = tuple(int(p) for p in parts)
        except (TypeError, ValueError):
            self.fail(f"expected comma-separated integers such as 28,28,1. Received: {value!r}",
                      param, ctx)
        if not ints:
            self.fail(f"expected at least one integer. Received: {value!r}", param, ctx)
        if self.length is not None and len(ints) not in self.length:
            allowed = " or ".join(str(n) for n in self.length)
            self.fail(f"expected {allowed} integers. Received: {value!r}", param, ctx)
        if any(i < self.minimum for i in ints):
            self.fail(f"every value must be >= {self.minimum}. Received: {value!r}", param, ctx)
        return ints


INPUT_SHAPE = IntTuple(length=(2, 3, 4))
IMAGE_SIZE = IntTuple(length=(1, 2))


class Duration(click.ParamType):
    """A wall-clock duration: `90`, `90s`, `15m`, `1h30m`, `2h`."""

    name = "DURATION"

    def convert(self, value: Any, param, ctx) -> float:
        try:
            return parse_duration(value, param.name if param is not None else "duration")
        except InputError as e:
            self.fail(str(e), param, ctx)


DURATION = Duration()


def load_config_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    """`--config FILE`: read a YAML/JSON mapping into `ctx.default_map`.

    As in black's `read_pyproject_toml`: the file is read first, command-line
    flags override it. Keys may use dashes or underscores. Unknown keys are
    refused.
    """
    if not value:
        return value
    try:
        data = read_yaml(value)
    except InputError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"the file must hold a mapping of option names to values. Received: "
            f"{type(data).__name__} in {value!r}", ctx=ctx, param=param)
    known = {p.name for p in ctx.command.params if p.name}
    config = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise click.BadParameter(
                f"unknown key {key!r} in {value!r}; allowed: "
                f"{', '.join(sorted(k for k in known if k != 'config'))}. Received: {key!r}",
                ctx=ctx, param=param)
        config[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **config}
    ctx.meta["config_file"] = value
    ctx.meta["config_values"] = config
    return value


def config_option(help: str = "YAML/JSON file of option values; flags override it.") -> Callable:
    return click.option("--config", type=click.Path(dir_okay=False), is_eager=True,
                        expose_value=True, callback=load_config_callback, help=help)


def verbosity_options(f: Callable) -> Callable:
    f = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)
    f = click.option("-v", "--verbose", count=True,
                     help="More output (-v: Keras progress bars and TensorFlow's start-up "
                          "lines; -vv: debug logs, and the traceback of an internal error).")(f)
    return f


def dataset_options(f: Callable) -> Callable:
    """--dataset, --data-dir, --image-size, --color-mode, --validation-split, --batch-size."""
    options = [
        click.option("--dataset", default="fashion_mnist_sample",
                     help="A built-in name (see `kerascnn datasets`), tfds:NAME[:CONFIG], "
                          "a folder of class subfolders, or an .npz file."),
        click.option("--data-dir", type=click.Path(file_okay=False),
                     help="Where to look for dataset files (also KERASCNN_DATA_DIR)."),
        click.option("--image-size", type=IMAGE_SIZE, default=None,
                     help="Resize images to H,W (inside the model)."),
        click.option("--color-mode", type=click.Choice(COLOR_MODES),
                     default=None, help="Colour mode for folders of images."),
        click.option("--validation-split", type=click.FloatRange(0.0, 0.9, max_open=True),
                     default=0.1, help="Fraction of training data held out for validation."),
        click.option("--batch-size", type=click.IntRange(min=1), default=128),
        click.option("--download", is_flag=True,
                     help="Allow downloading a dataset that is not available offline."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


SEED = click.IntRange(0, MAX_SEED)


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=SEED, default=0, help="Random seed.")(f)


def output_options(default: str | None = None) -> Callable:
    def decorate(f: Callable) -> Callable:
        f = click.option("--overwrite", is_flag=True,
                         help="Replace results already in the output folder.")(f)
        f = click.option("--output-dir", type=click.Path(file_okay=False), default=default,
                         required=default is None, help="Folder for the run's files.")(f)
        return f
    return decorate


DATA_OPTIONS = ("dataset", "data_dir", "image_size", "color_mode", "validation_split",
                "batch_size", "download")


def square(image_size: tuple[int, ...] | None) -> tuple[int, int] | None:
    """`--image-size 32` means 32x32."""
    if image_size is not None and len(image_size) == 1:
        return (image_size[0], image_size[0])
    return image_size


def data_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The `dataset_options` values as keyword arguments of `load_dataset` (and of
    `train`, `lr_find`, `finetune`, which take the same names)."""
    data = {k: kw[k] for k in DATA_OPTIONS if k in kw}
    if "image_size" in data:
        data["image_size"] = square(data["image_size"])
    return data

# ---------------------------------------------------------------------------
# CNNSpec fields as flags (summary, train)
# ---------------------------------------------------------------------------


class FieldValue(click.ParamType):
    """A spec field value: `3`, `32,64`, `same,valid` or `96,256,(384,384,256)`."""

    name = "VALUE"

    def __init__(self, kind: str = "int"):
        self.kind = kind

    def convert(self, value: Any, param, ctx) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if self.kind == "list" and text.lower() in ("", "none", "()", "[]"):
            return ()
        try:
            parsed = yaml.safe_load("[" + text.replace("(", "[").replace(")", "]") + "]")
        except yaml.YAMLError:
            self.fail(f"expected a value or a comma-separated list such as 32,64 or "
                      f"96,256,(384,384,256). Received: {value!r}", param, ctx)
        if self.kind == "list":
            return tuple(parsed)
        return parsed[0] if len(parsed) == 1 else tuple(
            tuple(p) if isinstance(p, list) else p for p in parsed)


_SPEC_FLAGS = [
    ("--conv-blocks", dict(type=click.IntRange(min=1), help="M: number of convolution blocks.")),
    ("--convs-per-block", dict(type=FieldValue(), help="N: convolutions per block (or per-block list).")),
    ("--filters", dict(type=FieldValue(), help="Filters per block, e.g. 32,64 or 96,256,(384,384,256).")),
    ("--kernel-size", dict(type=FieldValue(), help="Kernel size (or per-block list).")),
    ("--strides", dict(type=FieldValue(), help="Convolution strides (or per-block list).")),
    ("--padding", dict(type=FieldValue("str"), help="same or valid (or per-block list).")),
    ("--dilation-rate", dict(type=FieldValue(), help="Dilation rate (or per-block list).")),
    ("--activation", dict(type=str, help="Hidden activation, e.g. relu, tanh.")),
    ("--batch-norm/--no-batch-norm", dict(default=None, help="BatchNormalization after convs.")),
    ("--spatial-dropout", dict(type=float, help="SpatialDropout rate at the end of each block.")),
    ("--pooling", dict(type=FieldValue("str"), help="max, avg, none or conv (or per-block list).")),
    ("--pool-size", dict(type=FieldValue(), help="Pool size (or per-block list).")),
    ("--pool-strides", dict(type=FieldValue(), help="Pool strides (default: pool size).")),
    ("--pool-padding", dict(type=FieldValue("str"), help="Pool padding: valid or same.")),
    ("--block-type", dict(type=FieldValue("str"), help="plain or residual (or per-block list).")),
    ("--head", dict(type=str, help="flatten, gap or conv.")),
    ("--dense-units", dict(type=FieldValue("list"), help="K hidden widths, e.g. 128 or 4096,4096; none for K=0.")),
    ("--dropout", dict(type=float, help="Dropout after each hidden dense layer.")),
    ("--classifier-activation", dict(type=click.Choice(["softmax", "none"]), help="softmax or none (logits).")),
]

SPEC_FIELD_PARAMS = [flag.split("/")[0].lstrip("-").replace("-", "_") for flag, _ in _SPEC_FLAGS]


def spec_options(f: Callable) -> Callable:
    """--preset, --config/--spec FILE, --input-shape, --num-classes and one flag per CNNSpec field."""
    for flag, kwargs in reversed(_SPEC_FLAGS):
        kwargs = {"default": None, "show_default": False, **kwargs}
        f = click.option(flag, **kwargs)(f)
    f = click.option("--num-classes", type=click.IntRange(min=2), default=None,
                     help="Number of classes (default: the preset's or the dataset's).")(f)
    f = click.option("--input-shape", type=INPUT_SHAPE, default=None,
                     help="Input shape, e.g. 28,28,1 (length,channels for 1D; "
                          "depth,height,width,channels for 3D).")(f)
    f = click.option("--config", "--spec", "spec_file", type=click.Path(dir_okay=False),
                     default=None, help="A CNNSpec YAML/JSON file (e.g. a run's spec.yaml); "
                                        "field flags override it.")(f)
    f = click.option("--preset", default=None,
                     help="A preset: lenet5, alexnet, vgg16, resnet18, allconv, fcn, simple.")(f)
    return f


def spec_from_options(*, preset=None, spec_file=None, input_shape=None, num_classes=None,
                      default_preset: str | None = "simple", **kw):
    """A CNNSpec from --preset / --spec FILE and field flags (flags win).

    Raises InputError (one line at the CLI) for anything the spec refuses.
    """
    if preset and spec_file:
        raise click.UsageError("Give --preset or --config, not both.")
    fields = {k: v for k, v in kw.items() if k in SPEC_FIELD_PARAMS and v is not None}
    if fields.get("classifier_activation") == "none":
        fields["classifier_activation"] = None
    if spec_file:
        if not Path(spec_file).is_file():
            raise InputError(f"Spec file not found. {received('--config', spec_file)}")
        spec = CNNSpec.load(spec_file)
        changes = dict(fields)
        if input_shape is not None:
            changes["input_shape"] = tuple(input_shape)
        if num_classes is not None:
            changes["num_classes"] = num_classes
        return spec.replace(**changes) if changes else spec
    name = preset or default_preset
    if name is None:
        if input_shape is None or num_classes is None:
            raise InputError("Without --preset or --config, give --input-shape and --num-classes. "
                             f"Received: input_shape={input_shape}, num_classes={num_classes}")
        return CNNSpec(input_shape=tuple(input_shape), num_classes=num_classes, **fields)
    return get_preset(name, input_shape=input_shape, num_classes=num_classes, **fields)
