"""Starting TensorFlow: quietly, with kerascnn's CPU settings applied once.

`start()` is the one place where kerascnn starts TensorFlow. The command line
calls it before it imports any heavy module; `train()`, `tune()`,
`finetune()`, `evaluate()` and `predict()` call it too (it does its work once
per process), so the Python API gets the same settings. `settings()` returns
what was applied; every run's manifest records it.

What it sets, and why (issue 15; measurements in BENCHMARKS.md, "Every core"):

- **tf.data autotuning off for kerascnn's datasets.** With tf.data's autotuning
  on (TensorFlow's default), a CPU training process falls, at random and for
  its whole life, into a mode where its threads sleep about 40% of the time:
  about 1.2 of 2 cores busy and 30% fewer images per second. With autotuning
  off and fixed prefetch buffers, no process did. `configure_dataset()` applies
  it; kerascnn's pipelines (`kerascnn.data`) and `fit_model` call it, so every
  dataset kerascnn trains, evaluates or predicts on gets it.
- **Thread pools**: TensorFlow's defaults (intra-op and inter-op pools as wide
  as the usable cores) measured best; a narrower inter-op pool was slower.
  `KERASCNN_THREADS=N` sets the intra-op pool to N threads.

The user's own settings win: `TF_NUM_INTRAOP_THREADS` / `TF_NUM_INTEROP_THREADS`
(read by TensorFlow itself) are left alone, `KERASCNN_THREADS=tensorflow`
leaves every thread setting to TensorFlow, and `KERASCNN_DATA_AUTOTUNE=1`
turns tf.data's autotuning back on.

The import is quiet: TensorFlow's C++/absl start-up lines (`Could not find cuda
drivers`, `failed call to cuInit`, the oneDNN and CPU-feature notes) are
caught on file descriptor 2 and shown only with `verbose=True`; any other line
written meanwhile (a Python warning, say) is written again to stderr.

Importing this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Iterator

from kerascnn.checks import InputError

logger = logging.getLogger(__name__)

THREADS_ENV = "KERASCNN_THREADS"
AUTOTUNE_ENV = "KERASCNN_DATA_AUTOTUNE"
_TF_THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

_STATE: dict[str, Any] = {}

# TensorFlow's C++ start-up lines: absl's "I0000 00:00:1796018422.085562   15048 port.cc:153] ..."
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.+-]+:\d+\] ")
_NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)
# the second line of cpu_feature_guard's note
_NOISE_PREFIXES = ("To enable the following instructions:",)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def physical_memory() -> int | None:
    """Bytes of memory this machine has (its cgroup's limit when lower), or None
    when the system does not say."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total if total > 0 else None


def split_startup_noise(text: str) -> tuple[list[str], list[str]]:
    """Split captured stderr text into (TensorFlow start-up lines, other lines).

    Start-up lines are absl-format log lines (`I0000 00:00:... file.cc:NN] ...`),
    absl's "All log messages before absl::InitializeLog()" warning, and the
    continuation of TensorFlow's CPU-feature note. Everything else (a Python
    warning, a library's own message) belongs to the user and is kept.
    """
    noise, other = [], []
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if (_ABSL_LINE.match(bare) or bare in _NOISE_LINES
                or bare.startswith(_NOISE_PREFIXES)):
            noise.append(line)
        else:
            other.append(line)
    return noise, other


@contextlib.contextmanager
def _captured_stderr_fd() -> Iterator[list]:
    """Send file descriptor 2 to a temporary file; yield a list that gets its text."""
    out: list = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (some embedders)
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


def _thread_request() -> tuple[int | None, str]:
    """(intra-op threads to set or None, where the choice comes from)."""
    user = [name for name in _TF_THREAD_ENV if os.environ.get(name, "").strip()]
    raw = os.environ.get(THREADS_ENV, "").strip().lower()
    if user:
        return None, "environment: " + ", ".join(f"{n}={os.environ[n]}" for n in user)
    if raw in ("", "auto"):
        return None, "kerascnn default (TensorFlow's pools: one thread per usable core)"
    if raw == "tensorflow":
        return None, f"{THREADS_ENV}=tensorflow"
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"{THREADS_ENV} must be a number of threads (at least 1), 'auto' or "
                         f"'tensorflow'. Received: {THREADS_ENV}={os.environ[THREADS_ENV]!r}")
    return int(raw), f"{THREADS_ENV}={raw}"


def _autotune_request() -> tuple[bool, str]:
    """(tf.data autotuning on?, where the choice comes from)."""
    raw = os.environ.get(AUTOTUNE_ENV, "").strip().lower()
    if raw == "":
        return False, "kerascnn default (off: issue 15)"
    if raw in ("1", "true", "yes", "on"):
        return True, f"{AUTOTUNE_ENV}={raw}"
    if raw in ("0", "false", "no", "off"):
        return False, f"{AUTOTUNE_ENV}={raw}"
    raise InputError(f"{AUTOTUNE_ENV} must be 1 or 0 (on or off). "
                     f"Received: {AUTOTUNE_ENV}={os.environ[AUTOTUNE_ENV]!r}")


def start(*, verbose: bool = False) -> dict[str, Any]:
    """Import TensorFlow (its C++ start-up lines hidden unless `verbose`) and
    apply kerascnn's CPU settings before TensorFlow runs its first op.

    Safe to call many times: only the first call does anything; later calls
    return the same settings.

    Args:
        verbose: bool. Show TensorFlow's start-up lines. Defaults to False.

    Returns:
        dict: what was applied (see `settings()`).

    Raises:
        InputError: `KERASCNN_THREADS` or `KERASCNN_DATA_AUTOTUNE` holds a value
            that means nothing (checked before TensorFlow is imported).
    """
    if _STATE:
        return dict(_STATE)
    threads, threads_source = _thread_request()
    autotune, autotune_source = _autotune_request()
    if not verbose:
        # lines logged after the import (TensorFlow's INFO and WARNING); errors stay
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    imported_before = "tensorflow" in sys.modules
    started = time.perf_counter()
    with _captured_stderr_fd() as captured:
        import tensorflow as tf

        # device discovery prints "failed call to cuInit" on a machine without a GPU;
        # listing the devices does it now, inside the capture, without starting the
        # context (thread pools and distribution strategies can still be configured)
        gpus = len(tf.config.list_physical_devices("GPU"))
    text = captured[0] if captured else ""
    noise, other = split_startup_noise(text)
    if verbose:
        sys.stderr.write(text)
    elif other:
        sys.stderr.write("".join(other))
    with contextlib.suppress(Exception):
        sys.stderr.flush()

    applied, problem = True, None
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError as error:  # TensorFlow ran an op before start()
            applied, problem = False, str(error)
            logger.warning("%s=%d not applied: TensorFlow had already started (%s). Call "
                           "kerascnn.runtime.start() before using TensorFlow, or set "
                           "TF_NUM_INTRAOP_THREADS.", THREADS_ENV, threads, error)
    _STATE.update({
        "tensorflow": getattr(tf, "__version__", "?"),
        "cores": usable_cores(),
        "gpus": gpus,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "threads_source": threads_source,
        "threads_applied": applied,
        "data_autotune": autotune,
        "data_autotune_source": autotune_source,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tensorflow_imported_before": imported_before,
        "startup_lines_hidden": 0 if verbose else len(noise),
        "stderr_lines_replayed": len(other),
        "import_seconds": round(time.perf_counter() - started, 2),
    })
    if problem:
        _STATE["threads_problem"] = problem
    logger.debug("runtime settings: %s", _STATE)
    return dict(_STATE)


def settings() -> dict[str, Any]:
    """What `start()` applied (empty before it ran), for a run's manifest.

    Keys: `tensorflow` (version), `cores` (usable), `gpus`, `intra_op_threads`
    and `inter_op_threads` (0: TensorFlow's default, one per core),
    `threads_source`, `threads_applied`, `data_autotune` and its
    `data_autotune_source`, `onednn_opts`, `tensorflow_imported_before`,
    `startup_lines_hidden`, `stderr_lines_replayed`, `import_seconds`.
    """
    return dict(_STATE)


def dataset_options():
    """The `tf.data.Options` kerascnn gives every dataset it trains on.

    Starts TensorFlow (`start()`) if needed. With kerascnn's default, tf.data's
    autotuning is off (see the module docstring); `KERASCNN_DATA_AUTOTUNE=1`
    leaves TensorFlow's default.
    """
    start()
    tf = sys.modules["tensorflow"]
    options = tf.data.Options()
    if not _STATE["data_autotune"]:
        options.autotune.enabled = False
    return options


def configure_dataset(dataset):
    """`dataset` with `dataset_options()` applied (None stays None).

    Applied last, the options hold for the whole pipeline: a parallel map or a
    prefetch with `tf.data.AUTOTUNE` earlier in it then uses a fixed size.
    """
    if dataset is None:
        return None
    start()
    if _STATE["data_autotune"]:
        return dataset
    tf = sys.modules["tensorflow"]
    if not isinstance(dataset, tf.data.Dataset):  # numpy arrays, generators, PyDatasets
        return dataset
    return dataset.with_options(dataset_options())


class CoreUsage:
    """How many cores a stretch of training kept busy, and whether cores sat idle.

    Pure (reads /proc): `begin()`, train, then `end()`; `cores_busy` is the
    process's CPU time / wall time, `machine_idle_cores` the idle CPU of the
    whole machine over the same stretch (from /proc/stat). `slow_mode()` is a
    one-line explanation when the process left cores idle that it could have
    used (the slow mode of issue 15), else None.
    """

    def begin(self) -> "CoreUsage":
        self._wall, self._cpu, self._stat = time.perf_counter(), time.process_time(), _cpu_stat()
        return self

    def end(self) -> "CoreUsage":
        wall = time.perf_counter() - self._wall
        self.cores_busy = (time.process_time() - self._cpu) / wall if wall > 0 else float("nan")
        stat = _cpu_stat()
        if stat and self._stat:
            delta = [b - a for a, b in zip(self._stat, stat)]
            total = sum(delta)
            idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
            self.machine_idle_cores = (os.cpu_count() or 1) * idle / total if total else 0.0
        else:
            self.machine_idle_cores = float("nan")
        return self

    def slow_mode(self, cores: int | None = None) -> str | None:
        cores = cores or usable_cores()
        if cores < 2 or not (self.cores_busy < 0.75 * cores) \
                or not (self.machine_idle_cores >= 0.25 * cores):
            return None
        return (f"training keeps {self.cores_busy:.1f} of {cores} cores busy while "
                f"{self.machine_idle_cores:.1f} sit idle (TensorFlow's slow threading mode, "
                f"issue 15): check that {AUTOTUNE_ENV} is not set to 1 and that datasets "
                f"go through kerascnn.runtime.configure_dataset, or restart the process")


def _cpu_stat() -> list[int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
