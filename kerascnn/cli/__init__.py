"""The `kerascnn` command line.

This package is the only place that imports click or prints. Each command
lives in its own module and is loaded lazily, so `kerascnn --help` and
`kerascnn summary` never import TensorFlow.

Bad input of any kind ends in one line on stderr and exit code 2:
click's own usage errors, and the `ValueError`/`TypeError` that the library
raises for arguments it refuses.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

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


class BadInput(click.ClickException):
    """A user error: printed as one line, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {one_line(self.format_message())}", err=True)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


class KerasCNNGroup(click.Group):
    """A lazily loading group whose errors are one line and exit code 2."""

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
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "kerascnn",
                              complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.UsageError as e:
            # click's own errors come with usage lines; we keep one line
            click.echo(f"Error: {one_line(e.format_message())}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (ValueError, TypeError) as e:
            click.echo(f"Error: {one_line(e)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Library logs to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    import logging

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    # TensorFlow's C++ logging is noise for a command-line user
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(cls=KerasCNNGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="kerascnn", prog_name="kerascnn")
def main() -> None:
    """Convolutional networks for images, from one spec.

    \b
        INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

    Build and analyse a network (summary), search N, M, K and filters (tune),
    train, evaluate, predict, export, fine-tune pretrained backbones, and look
    at what the network sees.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
