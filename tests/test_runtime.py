"""kerascnn.runtime: settings applied once, before TensorFlow's first op; the user's
settings win; the quiet import keeps every line that is not TensorFlow's start-up noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kerascnn import runtime
from kerascnn.checks import InputError

REPO = Path(__file__).resolve().parents[1]

# In a fresh process: make the real `import tensorflow` inside start() also write a
# C-level line, a Python warning and one absl line to stderr, then report.
PROBE = textwrap.dedent('''
    import builtins, json, os, sys, warnings
    real_import = builtins.__import__

    def hooked(name, *args, **kwargs):
        if name == "tensorflow" and not getattr(hooked, "done", False):
            hooked.done = True
            os.write(2, b"a line written by C code\\n")
            warnings.warn("a Python warning during the import")
            os.write(2, b"I0000 00:00:1796018508.330092   22956 port.cc:153] startup noise\\n")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = hooked
    from kerascnn import runtime
    assert "tensorflow" not in sys.modules
    verbose = sys.argv[1] == "verbose"
    first = runtime.start(verbose=verbose)
    builtins.__import__ = real_import
    import tensorflow as tf
    intra_before_op = tf.config.threading.get_intra_op_parallelism_threads()
    x = tf.constant(1.0) + 1  # TensorFlow's first op: the context starts with the settings
    try:
        tf.config.threading.set_intra_op_parallelism_threads(3)
        late_change = "accepted"
    except RuntimeError:
        late_change = "refused"
    again = runtime.start(verbose=not verbose)
    ds = runtime.configure_dataset(tf.data.Dataset.range(4).prefetch(tf.data.AUTOTUNE))
    print(json.dumps({"first": first, "again": again, "settings": runtime.settings(),
                      "intra_before_op": intra_before_op, "late_change": late_change,
                      "intra_after_op": tf.config.threading.get_intra_op_parallelism_threads(),
                      "autotune": ds.options().autotune.enabled}))
''')


def run_probe(tmp_path, mode="quiet", **env):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                          runtime.THREADS_ENV, runtime.AUTOTUNE_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-W", "default", str(script), mode],
                          env={**clean, "PYTHONPATH": str(REPO), **env}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_settings_applied_once_before_the_first_op_and_other_lines_kept(tmp_path):
    report, stderr = run_probe(tmp_path, KERASCNN_THREADS="1")
    settings = report["first"]
    # applied before the first op: the context started with it, and it is now fixed
    assert report["intra_before_op"] == 1 and report["intra_after_op"] == 1
    assert report["late_change"] == "refused"
    assert settings["threads_source"] == "KERASCNN_THREADS=1" and settings["threads_applied"]
    assert settings["tensorflow_imported_before"] is False
    # idempotent: the second call (even with another verbosity) changes nothing
    assert report["again"] == settings == report["settings"]
    # tf.data autotuning off for kerascnn's datasets (issue 15)
    assert settings["data_autotune"] is False and report["autotune"] is False
    # the quiet import: absl start-up lines hidden, every other line replayed
    assert "a line written by C code" in stderr
    assert "a Python warning during the import" in stderr
    assert "startup noise" not in stderr and "cuda_platform.cc" not in stderr
    assert "port.cc:153" not in stderr
    assert settings["startup_lines_hidden"] >= 1 and settings["stderr_lines_replayed"] >= 2


def test_user_settings_win_and_verbose_shows_the_startup_lines(tmp_path):
    report, stderr = run_probe(tmp_path, "verbose", TF_NUM_INTRAOP_THREADS="1",
                               KERASCNN_THREADS="2", KERASCNN_DATA_AUTOTUNE="1")
    settings = report["first"]
    # TensorFlow's own variable wins over KERASCNN_THREADS: kerascnn sets nothing
    assert settings["threads_source"] == "environment: TF_NUM_INTRAOP_THREADS=1"
    assert report["intra_before_op"] == 0
    assert settings["data_autotune"] is True and report["autotune"] is not False
    assert "startup noise" in stderr and "a line written by C code" in stderr
    assert settings["startup_lines_hidden"] == 0


def test_started_after_tensorflow_ran_says_what_was_not_applied(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent('''
        import json, tensorflow as tf
        tf.constant(1.0) + 1
        from kerascnn import runtime
        print(json.dumps(runtime.start()))
    '''))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO),
                                            "KERASCNN_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = json.loads(proc.stdout.strip().splitlines()[-1])
    assert settings["tensorflow_imported_before"] is True
    assert settings["threads_applied"] is False and "initialization" in settings["threads_problem"]
    assert "KERASCNN_THREADS=1 not applied: TensorFlow had already started" in proc.stderr


def test_load_dataset_first_still_gets_the_settings(tmp_path):
    """The usual order, `load_dataset` then `train`: the dataset's tensors must not
    start TensorFlow before kerascnn's settings are in."""
    script = tmp_path / "order.py"
    script.write_text(textwrap.dedent('''
        import json, kerascnn
        from kerascnn import runtime
        bundle = kerascnn.load_dataset("fashion_mnist_sample", batch_size=64)
        import tensorflow as tf
        print(json.dumps({**runtime.settings(),
                          "intra": tf.config.threading.get_intra_op_parallelism_threads()}))
    '''))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO),
                                            "KERASCNN_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = json.loads(proc.stdout.strip().splitlines()[-1])
    assert settings["threads_applied"] is True and settings["intra"] == 1


@pytest.mark.parametrize("name, value, match", [
    ("KERASCNN_THREADS", "many", "must be a number of threads"),
    ("KERASCNN_THREADS", "0", "Received: KERASCNN_THREADS='0'"),
    ("KERASCNN_DATA_AUTOTUNE", "maybe", "must be 1 or 0"),
])
def test_meaningless_settings_are_input_errors(monkeypatch, name, value, match):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=match):
        runtime._thread_request() if name == runtime.THREADS_ENV else runtime._autotune_request()


@pytest.mark.parametrize("name, value, expected", [
    ("KERASCNN_THREADS", "", (None, "kerascnn default")),
    ("KERASCNN_THREADS", "auto", (None, "kerascnn default")),
    ("KERASCNN_THREADS", "tensorflow", (None, "KERASCNN_THREADS=tensorflow")),
    ("KERASCNN_THREADS", "4", (4, "KERASCNN_THREADS=4")),
    ("KERASCNN_DATA_AUTOTUNE", "", (False, "kerascnn default")),
    ("KERASCNN_DATA_AUTOTUNE", "on", (True, "KERASCNN_DATA_AUTOTUNE=on")),
    ("KERASCNN_DATA_AUTOTUNE", "0", (False, "KERASCNN_DATA_AUTOTUNE=0")),
])
def test_requests_from_the_environment(monkeypatch, name, value, expected):
    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(name, value)
    got = runtime._thread_request() if name == runtime.THREADS_ENV else runtime._autotune_request()
    assert got[0] == expected[0] and got[1].startswith(expected[1])


def test_split_startup_noise_keeps_everything_else():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\n"
            "I0000 00:00:1796018422.085562   15048 port.cc:153] oneDNN custom operations are on.\n"
            "E0000 00:00:1796018431.842902   15048 cuda_platform.cc:52] failed call to cuInit\n"
            "W1130 05:31:21.123456  4242 cpu_feature_guard.cc:227] note\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild\n"
            "/x/y.py:3: DeprecationWarning: old\n"
            "  import old\n"
            "Error: I0000 is not at the start of this line\n")
    noise, other = runtime.split_startup_noise(text)
    assert len(noise) == 5
    assert other == ["/x/y.py:3: DeprecationWarning: old\n", "  import old\n",
                     "Error: I0000 is not at the start of this line\n"]


def test_kerascnn_datasets_get_the_options():
    import kerascnn

    settings = runtime.start()
    bundle = kerascnn.load_dataset("fashion_mnist_sample", batch_size=64, seed=0)
    expected = None if settings["data_autotune"] else False
    for split in (bundle.train, bundle.validation, bundle.test):
        assert split.options().autotune.enabled is expected
    assert runtime.configure_dataset(None) is None


def test_core_usage_flags_idle_cores_only():
    usage = runtime.CoreUsage()
    usage.cores_busy, usage.machine_idle_cores = 1.2, 0.8
    assert "1.2 of 2 cores busy while 0.8 sit idle" in usage.slow_mode(cores=2)
    usage.machine_idle_cores = 0.1  # a loaded machine: other jobs used the cores
    assert usage.slow_mode(cores=2) is None
    usage.cores_busy, usage.machine_idle_cores = 1.9, 0.8
    assert usage.slow_mode(cores=2) is None
    assert usage.slow_mode(cores=1) is None
    measured = runtime.CoreUsage().begin().end()
    assert measured.cores_busy >= 0 and measured.machine_idle_cores >= 0
