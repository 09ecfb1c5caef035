"""Shared fixtures: quiet TensorFlow, seeded Keras, no network, slow-test switch."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# never let a test reach a dataset host: tensorflow-datasets reads from here only
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-kerascnn-tfds")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _keras_session():
    """Seed Keras before, and clear its session after, tests that use Keras.

    Tests that never touch Keras pay nothing; the session is cleared without a
    full garbage collection (seconds on a loaded machine), which
    `_collect_garbage` does once per module instead.
    """
    import sys

    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(0)
    yield
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage():
    yield
    import gc

    gc.collect()


@pytest.fixture
def keras_seed():
    import keras

    keras.utils.set_random_seed(0)
    return 0


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()
