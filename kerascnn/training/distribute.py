"""Where and how a model trains: precision, op determinism, `tf.distribute` strategies.

Also the one run-time patch kerascnn applies to Keras, for
`MultiWorkerMirroredStrategy` (see `keras_multiworker_fixes`).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer
from tensorflow.python.framework import config as tf_config_module

from kerascnn.checks import STRATEGIES, InputError, check_choice

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def check_precision(mixed_precision: bool | str | None) -> str:
    """Validate a `mixed_precision` argument: a policy name, or `"auto"` for `True`.

    Raises:
        InputError: anything but a bool, `None` or a name in `PRECISIONS`.
    """
    if mixed_precision in (None, False, "float32", "none", "off"):
        return "float32"
    if mixed_precision is True or mixed_precision in ("auto", "on", "true"):
        return "auto"
    if mixed_precision in PRECISIONS:
        return str(mixed_precision)
    raise InputError(f"mixed_precision must be a bool or one of {', '.join(PRECISIONS)}. "
                     f"Received: mixed_precision={mixed_precision!r}")


def resolve_precision(mixed_precision: bool | str | None) -> str:
    """The Keras dtype policy name for a `mixed_precision` argument.

    `True` picks `mixed_float16` when TensorFlow sees a GPU and
    `mixed_bfloat16` otherwise (CPUs with AVX-512 BF16 or AMX run bfloat16
    matrix multiplies natively; float16 would be emulated). A policy name may
    also be given. Under `mixed_float16`, Keras's `compile` wraps the
    optimizer in a `LossScaleOptimizer`; bfloat16 needs no loss scaling.
    """
    policy = check_precision(mixed_precision)
    if policy != "auto":
        return policy
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras's global dtype policy for the block, then restore it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """Turn on TensorFlow's op determinism for the block (if asked), then restore it."""
    if not enabled:
        yield
        return
    was_on = tf_config_module.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config_module.disable_op_determinism()


def parse_tf_config(environ: dict | None = None) -> dict:
    """Read and check `TF_CONFIG` for multi-worker training.

    Args:
        environ: dict. The environment to read. Defaults to `os.environ`.

    Returns:
        The parsed dict (with `cluster` and `task`).

    Raises:
        InputError: `TF_CONFIG` is missing, not JSON, or incomplete.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    example = _TF_CONFIG_EXAMPLE
    if not text:
        raise InputError(f"strategy='multiworker' needs the TF_CONFIG environment variable, "
                         f"e.g. {example}. Received: TF_CONFIG unset")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e.msg}); expected e.g. {example}. "
                         f"Received: TF_CONFIG={text[:200]!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise InputError(f"TF_CONFIG needs 'cluster' and 'task' mappings, e.g. {example}. "
                         f"Received: TF_CONFIG={text[:200]!r}")
    task_type, index = task.get("type"), task.get("index")
    members = cluster.get(task_type)
    if not isinstance(members, list) or not isinstance(index, int) \
            or not 0 <= index < len(members):
        raise InputError(f"TF_CONFIG task {task!r} does not name a member of the cluster "
                         f"{cluster!r}. Received: TF_CONFIG={text[:200]!r}")
    for address in (a for v in cluster.values() if isinstance(v, list) for a in v):
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"Every TF_CONFIG cluster address must be HOST:PORT. "
                             f"Received: {address!r}")
    return config


def is_chief(tf_config: dict | None) -> bool:
    """Whether this process writes the run folder (worker 0, or the chief)."""
    if not tf_config:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A `tf.distribute` strategy by name (`none` gives the default strategy).

    Raises:
        InputError: a name not in `STRATEGIES`.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def distributable(dataset, strategy_name: str):
    """Shard a `tf.data` pipeline by data, not files, across workers."""
    if dataset is None or strategy_name != "multiworker":
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def keras_multiworker_fixes(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Work around two Keras 3 bugs with `MultiWorkerMirroredStrategy` (TF backend).

    tensorflow/tensorflow#72388 ("tf.distribute and keras 3 incompatibility:
    Invalid reduction dimension 0 for input with 0 dimensions"):

    1. Before `fit`, Keras builds the model symbolically from a first batch that
       it averages across workers with `strategy.reduce` on the whole `(x, y)`
       tuple, which the collective strategy cannot do. The caller clears the
       model's own strategy (`model._distribute_strategy = None`) so that Keras
       takes it from this scope instead and builds the model when the train
       step is traced, as without a strategy.
    2. Keras averages each step's scalar logs across workers with
       `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar. Inside
       this block, scalars are averaged with `axis=None` (a plain all-reduce
       mean across workers); everything else goes through Keras unchanged.

    Both changes last only for the block.
    """
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy_):
            def reduce(v):
                local = strategy_.experimental_local_results(v)[0]
                axis = None if getattr(local.shape, "rank", None) == 0 else 0
                return strategy_.reduce("MEAN", v, axis=axis)
            return tree.map_structure(reduce, values)
        return original(values, strategy_, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        with strategy.scope():
            yield
    finally:
        tf_trainer.reduce_per_replica = original
