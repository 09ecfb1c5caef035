"""The `kerascnn` command line.

This package is the only place that imports click or prints. Each command
lives in its own module and is loaded lazily, and the heavy library modules
are imported inside the command functions, so `kerascnn --help`,
`kerascnn summary` and `kerascnn datasets` never import TensorFlow.

How a command ends:

- bad input (`kerascnn.InputError` from the library, click's usage errors):
  one line on stderr, `Error: ...`, exit code 2; running out of memory
  (`MemoryError`, TensorFlow's `ResourceExhaustedError`) is bad input too: a
  network, batch or image size this machine cannot hold;
- a bug anywhere else (any other exception): one line saying it is an
  internal error of kerascnn and where its traceback was written (a crash
  file in the command's output folder when that exists, else the temporary
  folder), exit code 1; `kerascnn --debug ...` (or `-vv` on a command)
  prints the traceback as well.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import logging
import os
import platform
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import click

from kerascnn import __version__, runtime
from kerascnn.checks import InputError

# command name -> "module:attribute"
COMMANDS = {
    "summary": "kerascnn.cli.summary:summary",
    "datasets": "kerascnn.cli.data:datasets",
    "tune": "kerascnn.cli.tune:tune",
    "train": "kerascnn.cli.train:train",
    "lr-find": "kerascnn.cli.train:lr_find",
    "evaluate": "kerascnn.cli.evaluate:evaluate",
    "predict": "kerascnn.cli.evaluate:predict",
    "export": "kerascnn.cli.evaluate:export",
    "finetune": "kerascnn.cli.finetune:finetune",
    "visualize": "kerascnn.cli.visualize:visualize",
    "report": "kerascnn.cli.visualize:report",
}

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}

# ctx.meta key (shared by every context of one invocation): the running command's options
_PARAMS = "kerascnn.params"
_DEBUG = "kerascnn.debug"


def one_line(message: Any) -> str:
    """`message` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(message).split())


class BadInput(click.ClickException):
    """A user error found by the command line itself: one line, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {one_line(self.format_message())}", err=True)


class InternalError(click.ClickException):
    """A bug in kerascnn (not the user's input): one line, exit code 1.

    Carries the original exception and its traceback text; the group writes
    the traceback to a crash file and names it in the line.
    """

    exit_code = 1

    def __init__(self, error: BaseException, params: dict[str, Any], debug: bool):
        self.error = error
        self.params = dict(params)
        self.debug = debug
        self.traceback = "".join(traceback.format_exception(type(error), error,
                                                            error.__traceback__))
        self.crash_file: Optional[Path] = None
        super().__init__(one_line(f"{type(error).__name__}: {error}"))

    def write_crash_file(self, argv: list[str]) -> Optional[Path]:
        """Write the traceback beside the command's results, else in the temp dir."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        text = "\n".join([
            f"kerascnn {__version__} internal error (a bug in kerascnn, not in the input)",
            f"time: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"command: kerascnn {' '.join(argv)}",
            f"python: {sys.version.split()[0]} on {platform.platform()}",
            "",
            self.traceback,
        ])
        for folder in (*crash_folders(self.params), Path(tempfile.gettempdir())):
            for n in range(100):  # never overwrite an earlier crash file
                path = folder / f"kerascnn-crash-{stamp}-{os.getpid()}{f'-{n}' if n else ''}.txt"
                try:
                    with open(path, "x", encoding="utf-8") as f:
                        f.write(text)
                except FileExistsError:
                    continue
                except OSError:
                    break
                self.crash_file = path
                return path
        return None

    def show(self, file=None) -> None:
        if self.debug or self.crash_file is None:
            click.echo(self.traceback.rstrip(), err=True)
        where = (f"the traceback is in {self.crash_file}" if self.crash_file is not None
                 else "the traceback is above")
        click.echo(f"Error: internal error in kerascnn (a bug, not a problem with your input): "
                   f"{self.format_message()} -- {where}; please report it"
                   + ("" if self.debug else " (--debug prints it here)") + ".", err=True)


def crash_folders(params: dict[str, Any]) -> list[Path]:
    """The command's own output folders that exist: the run or search folder
    (`--output-dir`, `--directory/--project-name`, `--plots`), never a parent
    folder shared with other results."""
    candidates = []
    if params.get("directory") and params.get("project_name"):
        candidates.append(Path(params["directory"]) / str(params["project_name"]))
    candidates += [Path(params[name]) for name in ("output_dir", "plots") if params.get(name)]
    return [c for c in candidates if c.is_dir()]


class Command(click.Command):
    """A kerascnn command: its options are kept for the error report."""

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[_PARAMS] = ctx.params
        return super().invoke(ctx)


def command(name: Optional[str] = None, **kwargs: Any) -> Callable:
    """`click.command` with kerascnn's `Command` class and context settings."""
    settings = {**CONTEXT_SETTINGS, **kwargs.pop("context_settings", {})}
    return click.command(name, cls=Command, context_settings=settings, **kwargs)


def _is_not_a_bug(error: BaseException) -> bool:
    """Input errors, click's own exits, and a reader that went away (`| head`)."""
    return isinstance(error, (InputError, click.exceptions.ClickException,
                              click.exceptions.Abort, click.exceptions.Exit, BrokenPipeError))


def _out_of_memory(error: BaseException) -> Optional[InputError]:
    """Python's MemoryError or TensorFlow's ResourceExhaustedError as bad input: the
    network, batch or images asked for do not fit this machine."""
    kind = type(error)
    if not (isinstance(error, MemoryError) or (kind.__name__ == "ResourceExhaustedError"
                                               and kind.__module__.startswith("tensorflow"))):
        return None
    memory = runtime.physical_memory()
    machine = f" ({memory / 2**30:,.1f} GiB)" if memory else ""
    shape = re.search(r"shape\s*\[([^\]]*)\]", str(error))
    what = f"a tensor of shape [{shape.group(1)}]" if shape else "what the command asked for"
    detail = one_line(str(error))
    oom = re.search(r"OOM when allocating tensor.*?(?= on /job| by allocator|$)", detail)
    if oom:
        detail = oom.group(0)
    elif len(detail) > 200:
        detail = detail[:200] + "..."
    return InputError(
        f"Out of memory: this machine{machine} cannot hold {what}. Use a smaller network, "
        f"--batch-size or --image-size (kerascnn summary shows each layer's size). "
        f"Received: {kind.__name__}: {detail}")


class KerasCNNGroup(click.Group):
    """A lazily loading group: bad input is one line and exit code 2, a bug exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [
            name for name, target in COMMANDS.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None
        ]

    def get_command(self, ctx: click.Context, cmd_name: str):
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as e:  # noqa: BLE001 -- sorted into input errors and bugs here
            if _is_not_a_bug(e):
                raise
            refusal = _out_of_memory(e)
            if refusal is not None:
                raise refusal from e
            params = ctx.meta.get(_PARAMS) or {}
            debug = bool(ctx.meta.get(_DEBUG)) or (params.get("verbose") or 0) >= 2
            raise InternalError(e, params, debug) from e

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args=argv, prog_name=prog_name or "kerascnn",
                              complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.UsageError as e:
            # click's own errors come with usage lines; we keep one line
            click.echo(f"Error: {one_line(e.format_message())}", err=True)
            sys.exit(2)
        except InternalError as e:
            e.write_crash_file(argv)
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except InputError as e:
            click.echo(f"Error: {one_line(e)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `kerascnn datasets | head`: the reader has gone
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def run() -> None:
    """The console entry point (`kerascnn`, `python -m kerascnn`): `main`, then a prompt exit.

    Once TensorFlow is loaded, the interpreter's own teardown (collecting
    TensorFlow's objects, joining its threads) can take 5-12 seconds on a busy
    machine, which would break `tune --time-budget`'s promise. Everything kerascnn
    writes is complete and on disk before `main` returns (files are written whole
    and fsynced, logs and the terminal are flushed here), so the process then ends
    with `os._exit`.
    """
    try:
        main(prog_name="kerascnn")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            click.echo(str(e.code), err=True)
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a closed stream
            pass
    os._exit(code)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Library logs to stderr: INFO by default, DEBUG with -vv, WARNING with -q;
    TensorFlow's Python warnings only with -v."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # TensorFlow's own Python warnings (AutoGraph, retracing) are shown with -v only
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def _debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[_DEBUG] = value
    return value


@click.group(cls=KerasCNNGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="kerascnn", prog_name="kerascnn")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
              callback=_debug_callback,
              help="Print the traceback of an internal error (a kerascnn bug) here, "
                   "not only to its crash file.")
def main() -> None:
    """Convolutional networks for images, from one spec.

    \b
        INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

    Build and analyse a network (summary), search N, M, K and filters (tune),
    train, evaluate, predict, export, fine-tune pretrained backbones, and look
    at what the network sees.
    """
