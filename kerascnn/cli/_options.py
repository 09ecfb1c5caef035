"""Options and parameter types shared by several commands."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable

import click


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
            text = str(value).strip().strip("()[]")
            parts = [p for p in re.split(r"[,x\s]+", text) if p != ""]
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
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param, ctx) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            if re.fullmatch(r"\d+(\.\d+)?", text):
                seconds = float(text)
            elif re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
                seconds = sum(float(n) * self._UNITS[u]
                              for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhd])", text))
            else:
                self.fail(f"expected a duration such as 90s, 15m or 1h30m. Received: {value!r}",
                          param, ctx)
        if seconds <= 0:
            self.fail(f"must be positive. Received: {value!r}", param, ctx)
        return seconds


DURATION = Duration()


def load_config_callback(ctx: click.Context, param: click.Parameter, value: str | None):
    """`--config FILE`: read a YAML/JSON mapping into `ctx.default_map`.

    As in black's `read_pyproject_toml`: the file is read first, command-line
    flags override it. Keys may use dashes or underscores. Unknown keys are
    refused.
    """
    if not value:
        return value
    from kerascnn.runs import read_yaml

    try:
        data = read_yaml(value)
    except ValueError as e:
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
                     help="More output (-v: Keras progress bars, -vv: debug logs).")(f)
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
        click.option("--color-mode", type=click.Choice(["grayscale", "rgb", "rgba"]),
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


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=int, default=0, help="Random seed.")(f)


def output_options(default: str | None = None) -> Callable:
    def decorate(f: Callable) -> Callable:
        f = click.option("--overwrite", is_flag=True,
                         help="Replace results already in the output folder.")(f)
        f = click.option("--output-dir", type=click.Path(file_okay=False), default=default,
                         required=default is None, help="Folder for the run's files.")(f)
        return f
    return decorate


def load_dataset_from_options(**kw):
    """Call `kerascnn.load_dataset` with the values of `dataset_options`."""
    from kerascnn.data import load_dataset

    image_size = kw.get("image_size")
    if image_size is not None and len(image_size) == 1:
        image_size = (image_size[0], image_size[0])
    return load_dataset(
        kw.get("dataset") or "fashion_mnist_sample",
        validation_split=kw.get("validation_split", 0.1),
        image_size=image_size,
        color_mode=kw.get("color_mode"),
        batch_size=kw.get("batch_size", 128),
        data_dir=kw.get("data_dir"),
        download=kw.get("download", False),
        seed=kw.get("seed", 0),
    )


