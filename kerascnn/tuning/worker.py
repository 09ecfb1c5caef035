"""A worker of a distributed search: waits for its chief, trains the trials it hands out.

What this adds to keras-tuner 1.4.8's client, for the failures its users
report:

- **Workers do not hang after the chief ends** (#645, #915): a worker whose
  chief is gone while it asks for a trial ends cleanly (exit 0, "no trial
  left") after retrying for a minute (a restarted chief is back by then),
  instead of waiting an hour.
- **A slow chief start does not kill workers** (#990): a worker started
  before its chief waits for it, bounded by `chief_timeout` (10 minutes by
  default), and says so every few seconds.
- A worker whose options describe another search than the chief's is refused.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import grpc
import keras
from keras_tuner.src import protos
from keras_tuner.src.engine import hyperparameters as hp_module
from keras_tuner.src.engine import trial as trial_module

from kerascnn.checks import InputError
from kerascnn.distributed import (ChiefUnavailableError, DistributedConfig, WorkerResult,
                                  environment)
from kerascnn.files import read_yaml
from kerascnn.tuning.resume import SEARCH_FILE, changed_keys

logger = logging.getLogger(__name__)


def wait_for_chief(config: DistributedConfig, *, every: float = 10.0) -> float:
    """Block until the chief answers, at most `config.chief_timeout` seconds.

    Returns:
        The seconds waited.

    Raises:
        ChiefUnavailableError: the chief did not answer in time.
    """
    start = time.time()
    deadline = start + config.chief_timeout
    # gRPC backs off exponentially (up to 2 minutes) between connection attempts;
    # a worker started long before its chief would then miss a chief that comes
    # up and finishes in between (seen in CI). Retry at least every second.
    channel = grpc.insecure_channel(config.address, options=[
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ])
    announced = False
    try:
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise ChiefUnavailableError(
                    f"No chief answered at {config.address} within "
                    f"{config.chief_timeout:.0f}s; start the chief first (kerascnn tune "
                    f"--distributed chief --oracle-address {config.address}) or raise "
                    f"--chief-timeout.")
            try:
                grpc.channel_ready_future(channel).result(timeout=min(every, left))
                break
            except grpc.FutureTimeoutError:
                if deadline - time.time() > 0.5:
                    announced = True
                    logger.info("Worker %s: waiting for the chief at %s (%.0fs left)...",
                                config.tuner_id, config.address, deadline - time.time())
    finally:
        channel.close()
    waited = time.time() - start
    if announced:
        logger.info("Worker %s: the chief answered after %.0fs.", config.tuner_id, waited)
    return waited


class _PatientStub:
    """keras-tuner's gRPC stub with bounded waits instead of hour-long ones.

    A call that finds the chief unreachable is retried for up to `timeout`
    seconds (the chief may be restarting); `CreateTrial` gives up after
    `gone_after` seconds and answers "stopped" (the chief ended the search),
    so a worker never hangs after its chief (keras-tuner #645).
    """

    def __init__(self, stub, config: DistributedConfig, gone_after: float = 60.0):
        self._stub = stub
        self._config = config
        self._gone_after = gone_after
        self.chief_gone = False

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        patience = self._gone_after if name == "CreateTrial" else self._config.chief_timeout

        def call(request, wait_for_ready=True, timeout=None):
            deadline = time.time() + patience
            while True:
                try:
                    response = method(request, wait_for_ready=False,
                                      timeout=max(timeout or 0, 600.0))
                    if name == "CreateTrial" and self._idle(response):
                        time.sleep(1.0)  # keras-tuner asks again at once: don't spin
                    return response
                except grpc.RpcError as e:
                    code = e.code() if callable(getattr(e, "code", None)) else None
                    if code not in (grpc.StatusCode.UNAVAILABLE,) or time.time() >= deadline:
                        if name == "CreateTrial" and code == grpc.StatusCode.UNAVAILABLE:
                            return self._stopped()
                        if code == grpc.StatusCode.UNAVAILABLE:
                            raise ChiefUnavailableError(
                                f"Lost the chief at {self._config.address} for "
                                f"{patience:.0f}s during {name}.") from None
                        raise
                    time.sleep(1.0)

        return call

    @staticmethod
    def _idle(response) -> bool:
        status = trial_module.Trial.from_proto(response.trial).status
        return status == trial_module.TrialStatus.IDLE

    def _stopped(self):
        self.chief_gone = True
        logger.warning("Worker %s: the chief at %s is gone; taking it that no trial is left.",
                       self._config.tuner_id, self._config.address)
        trial = trial_module.Trial(hp_module.HyperParameters(), trial_id="",
                                   status=trial_module.TrialStatus.STOPPED)
        return protos.get_service().CreateTrialResponse(trial=trial.to_proto())


def connect(kt_tuner, config: DistributedConfig) -> None:
    """Give a worker's tuner bounded, retrying calls to its chief."""
    client = kt_tuner.oracle
    if not hasattr(client, "stub"):
        raise RuntimeError("connect() needs a tuner built with the worker's environment "
                           "(keras-tuner's OracleClient).")
    if not isinstance(client.stub, _PatientStub):
        client.stub = _PatientStub(client.stub, config)


def check_worker_search(project_dir: Path, config: Mapping[str, Any]) -> None:
    """A worker's options must describe the chief's search (when the folder is shared).

    Raises:
        InputError: the chief's `search.yaml` names another search.
    """
    path = Path(project_dir) / SEARCH_FILE
    if not path.is_file():
        logger.warning("No %s in %s: the chief writes it there, so --directory is not shared "
                       "with the chief (the chief then cannot load this worker's checkpoints).",
                       SEARCH_FILE, project_dir)
        return
    theirs = dict(read_yaml(path) or {})
    changed = changed_keys(theirs, config)
    if changed:
        details = ", ".join(f"{k}: chief {theirs.get(k)!r}, worker {config.get(k)!r}"
                            for k in changed if k != "space")
        if "space" in changed:
            details = ", ".join(filter(None, [details, "space differs"]))
        raise InputError(f"This worker's options describe another search than the chief's "
                         f"{str(path)!r}; give the worker the chief's options (--config "
                         f"{str(path)!r} works). Received: {details}")


def run_worker(config: DistributedConfig, project_dir: Path, search_config: Mapping[str, Any],
               build_tuner, bundle, *, epochs: int,
               patience: int, verbose: int = 0, seed: int = 0) -> WorkerResult:
    """Wait for the chief, then train the trials it hands out until none is left.

    Args:
        config: the worker's `DistributedConfig`.
        project_dir: the search folder (shared with the chief).
        search_config: the worker's resolved options, checked against the
            chief's `search.yaml` when the folder is shared.
        build_tuner: callable returning the keras-tuner tuner; called with
            the keras-tuner variables set, so it talks to the chief.
        bundle: the `DatasetBundle` to train on.
        epochs, patience, verbose, seed: as in `kerascnn.tune`.

    Returns:
        A `WorkerResult`.

    Raises:
        ChiefUnavailableError: no chief within `config.chief_timeout`.
        InputError: the chief runs another search.
    """
    start = time.time()
    logger.info("Worker %s: looking for the chief at %s.", config.tuner_id, config.address)
    wait_for_chief(config)
    check_worker_search(Path(project_dir), search_config)
    keras.utils.set_random_seed(seed)
    ran: list[str] = []
    with environment(config):
        kt_tuner = build_tuner()
        connect(kt_tuner, config)
        begin = kt_tuner.on_trial_begin

        def on_trial_begin(trial):
            ran.append(trial.trial_id)
            logger.info("Worker %s: trial %s.", config.tuner_id, trial.trial_id)
            begin(trial)

        kt_tuner.on_trial_begin = on_trial_begin
        callbacks = []
        if patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shuffle.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*Skipping variable loading.*")
            kt_tuner.search(bundle.train, validation_data=bundle.validation, epochs=epochs,
                            callbacks=callbacks, verbose=1 if verbose and verbose > 0 else 0)
    gone = bool(getattr(kt_tuner.oracle.stub, "chief_gone", False))
    logger.info("Worker %s: no trial left after %d trial(s).", config.tuner_id, len(ran))
    return WorkerResult(config.tuner_id, ran, time.time() - start, gone)
