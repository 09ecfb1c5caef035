"""Starting TensorFlow: quietly, and with the CPU thread settings applied once.

`start()` is the one place where kerascnn starts TensorFlow. The command line
calls it before it imports any heavy module; `train()`, `tune()`,
`finetune()`, `evaluate()` and `predict()` call it too (it does its work once
per process), so the Python API gets the same settings.

Importing this module imports nothing heavy.

OWNER: the every-core work (issue 15) fills in the thread settings; the
quiet import serves the clean terminal (issue 14).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Any, Iterator

logger = logging.getLogger(__name__)

_STATE: dict[str, Any] = {}


@contextlib.contextmanager
def _captured_stderr_fd() -> Iterator[list]:
    """Send file descriptor 2 to a temporary file; yield a list that gets its text."""
    out: list = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. some test runners)
        yield out
        return
    with tempfile.TemporaryFile(mode="w+b") as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield out
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            out.append(buffer.read().decode("utf-8", "replace"))


def start(*, verbose: bool = False) -> dict[str, Any]:
    """Import TensorFlow (its C++ start-up lines hidden unless `verbose`) and
    apply the thread settings. Returns the settings, for the run's manifest.

    Safe to call many times: only the first call does anything.
    """
    if _STATE:
        return dict(_STATE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    already = "tensorflow" in sys.modules
    with _captured_stderr_fd() as captured:
        import tensorflow  # noqa: F401  (the import is the point)

        # the device probe (CUDA's cuInit line on a machine without a GPU) prints too
        tensorflow.config.list_physical_devices()
    text = captured[0] if captured else ""
    if verbose and text:
        sys.stderr.write(text)
    _STATE.update({"tensorflow_imported_before": already})
    return dict(_STATE)


def settings() -> dict[str, Any]:
    """What `start()` applied (empty before it ran)."""
    return dict(_STATE)
