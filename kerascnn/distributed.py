"""Scale out and survive faults: distributed search, checkpoints on disk, atomic state.

A search runs on keras-tuner's own distributed mode: one **chief** serves the
oracle over gRPC, **workers** ask it for trials, train them and report back.
keras-tuner configures it with three environment variables
(`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`);
`kerascnn tune --distributed chief|worker --oracle-address HOST:PORT
[--worker-id ID]` sets them (or reads them when they are already set). What
this module adds to keras-tuner 1.4.8, for the failures its users report:

- **The chief exits when the search is complete** (keras-tuner issues #254,
  #344): it polls every half second instead of every 20 s, stops once no
  trial is left and every worker it knows has been told so (or a short grace
  period has passed for a worker that vanished between trials), then writes
  the leaderboard and the best model and returns.
- **Workers do not hang after the chief ends** (#645, #915): a worker whose
  chief is gone while it asks for a trial ends cleanly (exit 0, "no trial
  left") after retrying for a minute (a restarted chief is back by then),
  instead of waiting an hour.
- **A slow chief start does not kill workers** (#990): a worker started
  before its chief waits for it, bounded by `chief_timeout` (10 minutes by
  default), and says so every few seconds.
- **A killed worker picks up its trial** when restarted with the same
  `--worker-id`: the oracle keeps the trial of that id as ongoing and hands it
  back (keras-tuner's `create_trial`), so no trial is lost or counted twice.
- **The oracle has no authentication**: it listens on loopback unless told
  otherwise, and warns when bound to another address.

Disk: `prune_checkpoints` keeps the weights of the best K completed trials and
deletes the others as the search goes (Hyperband's trials that a later round
may continue are kept until their bracket ends); the leaderboard keeps every
trial. `atomic_save_json` replaces keras-tuner's plain `open(..., "w")` for
its own state files, so a `kill -9` never leaves half a JSON file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

logger = logging.getLogger(__name__)

ROLES = ("chief", "worker")
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
DEFAULT_ADDRESS = "127.0.0.1:8000"
DEFAULT_CHIEF_TIMEOUT = 600.0
CHIEF_ID = "chief"
_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ChiefUnavailableError(RuntimeError):
    """A worker could not reach its chief within `chief_timeout`."""


# ---------------------------------------------------------------------------
# Configuration: address, role, worker id
# ---------------------------------------------------------------------------


def parse_address(text: Any, name: str = "oracle_address") -> tuple[str, int]:
    """`(host, port)` from `"HOST:PORT"` or `"[IPv6]:PORT"`.

    Args:
        text: str. The address, e.g. `"127.0.0.1:8000"`, `"node1:8000"`,
            `"[::1]:8000"`.
        name: str. The argument's name in error messages.

    Returns:
        `(host, port)` with the port an int in 1..65535.

    Raises:
        ValueError: not of the form HOST:PORT, or a port out of range.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be HOST:PORT, e.g. 127.0.0.1:8000. "
                         f"Received: {name}={text!r}")
    value = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", value) or \
        re.fullmatch(r"([A-Za-z0-9_.-]+):(\d+)", value)
    if not match:
        raise ValueError(f"{name} must be HOST:PORT (an IPv6 host in brackets, [::1]:8000). "
                         f"Received: {name}={text!r}")
    host, port = match.group(1), int(match.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"{name} has a port out of range; allowed: 1-65535. "
                         f"Received: {name}={text!r}")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether `host` names the loopback interface (no network exposure)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format_address(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class DistributedConfig:
    """Who this process is in a distributed search.

    Attributes:
        role: `"chief"` (serves the oracle) or `"worker"` (runs trials).
        host, port: the oracle's address (the chief binds it; workers dial it).
        tuner_id: keras-tuner's `KERASTUNER_TUNER_ID` (`"chief"` on the chief).
        chief_timeout: seconds a worker waits for an unreachable chief.
    """

    role: str
    host: str
    port: int
    tuner_id: str
    chief_timeout: float = DEFAULT_CHIEF_TIMEOUT

    @property
    def address(self) -> str:
        return _format_address(self.host, self.port)

    def environment(self) -> dict[str, str]:
        """The keras-tuner environment variables of this process."""
        return {ENV_TUNER_ID: self.tuner_id, ENV_ORACLE_IP: self.host,
                ENV_ORACLE_PORT: str(self.port)}


def resolve(distributed: Optional[str] = None, oracle_address: Optional[str] = None,
            worker_id: Optional[str] = None, chief_timeout: Any = None,
            environ: Optional[Mapping[str, str]] = None) -> Optional[DistributedConfig]:
    """Validate the distributed options (or keras-tuner's variables) before any work.

    Args:
        distributed: str. `"chief"`, `"worker"` or `None` (a local search,
            unless the keras-tuner variables are set).
        oracle_address: str. `HOST:PORT` of the oracle. Defaults to the
            keras-tuner variables, else `127.0.0.1:8000` (loopback).
        worker_id: str. A name unique to each worker; a worker restarted
            with the same id picks up the trial it was running. Required
            for a worker (or `KERASTUNER_TUNER_ID`).
        chief_timeout: seconds or a duration (`"10m"`) a worker waits for
            its chief. Defaults to 10 minutes.
        environ: mapping read for the keras-tuner variables. Defaults to
            `os.environ`.

    Returns:
        A `DistributedConfig`, or `None` for a local search.

    Raises:
        ValueError: a bad role, address, id or timeout; a chief address that
            is not on this machine or whose port is taken.
    """
    env = os.environ if environ is None else environ
    from_env = ENV_ORACLE_IP in env
    if distributed is None and not from_env:
        for name, value in (("oracle_address", oracle_address), ("worker_id", worker_id)):
            if value is not None:
                raise ValueError(f"{name} is for a distributed search; add "
                                 f"--distributed chief|worker. Received: {name}={value!r}")
        return None
    if distributed is None:  # keras-tuner's own variables
        tuner_id = env.get(ENV_TUNER_ID)
        if not tuner_id:
            raise ValueError(f"{ENV_ORACLE_IP} is set but {ENV_TUNER_ID} is not; set it to "
                             f"'chief' on the chief and a unique name on each worker. "
                             f"Received: {ENV_TUNER_ID}={tuner_id!r}")
        distributed = "chief" if "chief" in tuner_id else "worker"
        if distributed == "worker" and worker_id is None:
            worker_id = tuner_id
    if distributed not in ROLES:
        raise ValueError(f"Unknown distributed role; allowed: chief, worker. "
                         f"Received: distributed={distributed!r}")
    if oracle_address is None:
        if from_env:
            port = env.get(ENV_ORACLE_PORT)
            if not port:
                raise ValueError(f"{ENV_ORACLE_IP} is set but {ENV_ORACLE_PORT} is not. "
                                 f"Received: {ENV_ORACLE_PORT}={port!r}")
            oracle_address = _format_address(env[ENV_ORACLE_IP], port)
        else:
            oracle_address = DEFAULT_ADDRESS
    host, port = parse_address(oracle_address)
    timeout = _parse_timeout(chief_timeout)
    if distributed == "chief":
        if worker_id is not None:
            raise ValueError(f"worker_id is for a worker; the chief's id is {CHIEF_ID!r}. "
                             f"Received: worker_id={worker_id!r}")
        _check_bindable(host, port)
        if not is_loopback(host):
            logger.warning(
                "The oracle will listen on %s. It has no authentication: anyone who can "
                "reach that address can read and change this search. Bind it to a private "
                "network only (the default is loopback, %s).",
                _format_address(host, port), DEFAULT_ADDRESS)
        return DistributedConfig("chief", host, port, CHIEF_ID, timeout)
    if worker_id is None:
        raise ValueError("A worker needs a worker_id (--worker-id), unique to it: a worker "
                         "restarted with the same id picks up the trial it was running. "
                         "Received: worker_id=None")
    if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
        raise ValueError(f"worker_id must be 1-64 letters, digits, '_', '.' or '-', starting "
                         f"with a letter or digit. Received: worker_id={worker_id!r}")
    if "chief" in worker_id:
        raise ValueError(f"worker_id must not contain 'chief' (keras-tuner would make the "
                         f"process a second chief). Received: worker_id={worker_id!r}")
    return DistributedConfig("worker", host, port, worker_id, timeout)


def _parse_timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_CHIEF_TIMEOUT
    from kerascnn.tuning import parse_duration

    return parse_duration(value, "chief_timeout")


def _check_bindable(host: str, port: int) -> None:
    """The chief's address must be on this machine and its port free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"The oracle's host does not resolve ({e.strerror}). "
                         f"Received: oracle_address={_format_address(host, port)!r}") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as gRPC binds: a restarted chief may reuse a port that still has
        # connections in TIME_WAIT; a live listener still refuses the bind
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
            sock.listen(1)
        except OSError as e:
            reason = ("the port is in use" if e.errno in (98, 48)
                      else "the host is not an address of this machine" if e.errno in (99, 49)
                      else e.strerror)
            raise ValueError(f"The chief cannot listen on {_format_address(host, port)}: "
                             f"{reason}. Received: oracle_address="
                             f"{_format_address(host, port)!r}") from None


@contextlib.contextmanager
def environment(config: DistributedConfig) -> Iterator[None]:
    """Set keras-tuner's variables for the block, and restore them after."""
    saved = {k: os.environ.get(k) for k in config.environment()}
    os.environ.update(config.environment())
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------
# Chief
# ---------------------------------------------------------------------------


def _search_complete(oracle) -> bool:
    """Every trial the oracle will create exists and none is running or queued."""
    if oracle.ongoing_trials or getattr(oracle, "_retry_queue", None):
        return False
    return bool(oracle.max_trials) and len(oracle.trials) >= oracle.max_trials


def serve(kt_tuner, config: DistributedConfig, *, poll: float = 0.5, grace: float = 30.0,
          report_every: float = 60.0) -> None:
    """Serve the tuner's oracle over gRPC until the search is complete.

    keras-tuner's `OracleServicer` answers the workers; this loop replaces
    its `start_server`, which polls every 20 s and never ends when a worker
    died (keras-tuner issues #254, #344, #645).

    The search is complete when the oracle has stopped handing out trials
    (`max_trials` reached, the time budget spent, or the space exhausted)
    and no trial is running. Workers that have not been told yet get up to
    `grace` seconds to ask (they are between trials) before the chief stops.

    Args:
        kt_tuner: a keras-tuner `Tuner` built with the chief's environment.
        config: the chief's `DistributedConfig`.
        poll: float. Seconds between checks. Defaults to 0.5.
        grace: float. Seconds given to known workers to collect their stop.
            Defaults to 30.
        report_every: float. Seconds between "waiting for trial ..." lines.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    oracle = kt_tuner.oracle
    kt_tuner.on_search_begin()  # what search() would do first (kerascnn: quiet oracle)
    kt_tuner.save()  # the chief's tuner file, so a restarted chief resumes (#976)
    servicer = oracle_chief.OracleServicer(oracle)
    # no SO_REUSEPORT: a second chief on the same port must fail, not share it
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.so_reuseport", 0)])
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(config.address)
    except RuntimeError as e:
        raise ValueError(f"The chief cannot listen on {config.address}: {e}. "
                         f"Received: oracle_address={config.address!r}") from None
    if not bound:
        raise ValueError(f"The chief cannot listen on {config.address}. "
                         f"Received: oracle_address={config.address!r}")
    server.start()
    logger.info("Chief: serving the oracle at %s; start workers with "
                "`kerascnn tune ... --distributed worker --oracle-address %s --worker-id NAME`.",
                config.address, config.address)
    idle_since: Optional[float] = None
    last_report = time.time()
    try:
        while True:
            time.sleep(poll)
            with _oracle_lock(oracle):
                stopped = servicer.stop_triggered or _search_complete(oracle)
                running = {tid: t.trial_id for tid, t in oracle.ongoing_trials.items()}
                waiting_ids = set(oracle.tuner_ids)
            if stopped and not running:
                if not waiting_ids:
                    break
                idle_since = idle_since or time.time()
                if time.time() - idle_since >= grace:
                    logger.info("Chief: no word from worker(s) %s for %.0fs; ending the search.",
                                ", ".join(sorted(waiting_ids)), grace)
                    break
            else:
                idle_since = None
            if running and time.time() - last_report >= report_every:
                last_report = time.time()
                logger.info("Chief: waiting for %s (a worker that was killed picks up its "
                            "trial when restarted with the same --worker-id).",
                            ", ".join(f"trial {t} on {w}" for w, t in sorted(running.items())))
    finally:
        server.stop(grace=2).wait()
    logger.info("Chief: the search is complete (%d trials).", len(oracle.trials))


@contextlib.contextmanager
def _oracle_lock(oracle) -> Iterator[None]:
    """keras-tuner's per-oracle lock, so a read sees no half-made trial."""
    try:
        from keras_tuner.src.engine.oracle import LOCKS, THREADS
    except ImportError:  # pragma: no cover - another keras-tuner layout
        yield
        return
    import threading

    name = threading.current_thread().name
    if THREADS[oracle] == name:
        yield
        return
    with LOCKS[oracle]:
        THREADS[oracle] = name
        try:
            yield
        finally:
            THREADS[oracle] = None


# ---------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------


def wait_for_chief(config: DistributedConfig, *, every: float = 10.0) -> float:
    """Block until the chief answers, at most `config.chief_timeout` seconds.

    Returns:
        The seconds waited.

    Raises:
        ChiefUnavailableError: the chief did not answer in time.
    """
    import grpc

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
        import grpc

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
        from keras_tuner.src.engine import trial as trial_module

        status = trial_module.Trial.from_proto(response.trial).status
        return status == trial_module.TrialStatus.IDLE

    def _stopped(self):
        from keras_tuner.src import protos
        from keras_tuner.src.engine import hyperparameters as hp_module
        from keras_tuner.src.engine import trial as trial_module

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


def check_worker_search(project_dir: Path, config: Mapping[str, Any], search_file: str,
                        identity_keys) -> None:
    """A worker's options must describe the chief's search (when the folder is shared).

    Raises:
        ValueError: the chief's `search.yaml` names another search.
    """
    path = Path(project_dir) / search_file
    if not path.is_file():
        logger.warning("No %s in %s: the chief writes it there, so --directory is not shared "
                       "with the chief (the chief then cannot load this worker's checkpoints).",
                       search_file, project_dir)
        return
    from kerascnn.runs import read_yaml

    theirs = dict(read_yaml(path) or {})

    def norm(v):
        return json.loads(json.dumps(v, default=str))

    changed = [k for k in identity_keys if k in theirs and k in config
               and norm(theirs.get(k)) != norm(config.get(k))]
    if changed:
        details = ", ".join(f"{k}: chief {theirs.get(k)!r}, worker {config.get(k)!r}"
                            for k in changed if k != "space")
        if "space" in changed:
            details = ", ".join(filter(None, [details, "space differs"]))
        raise ValueError(f"This worker's options describe another search than the chief's "
                         f"{str(path)!r}; give the worker the chief's options (--config "
                         f"{str(path)!r} works). Received: {details}")


@dataclass
class WorkerResult:
    """What a worker did.

    Attributes:
        worker_id: str. Its keras-tuner id.
        trial_ids: list of str. The trials it ran, in order.
        seconds: float. Wall-clock time of the call.
        chief_gone: bool. Whether it ended because the chief was gone
            rather than told "no trial left".
    """

    worker_id: str
    trial_ids: list
    seconds: float
    chief_gone: bool = False


def run_worker(config: DistributedConfig, project_dir: Path, search_config: Mapping[str, Any],
               search_file: str, identity_keys, build_tuner, bundle, *, epochs: int,
               patience: int, verbose: int = 0, seed: int = 0) -> WorkerResult:
    """Wait for the chief, then train the trials it hands out until none is left.

    Args:
        config: the worker's `DistributedConfig`.
        project_dir: the search folder (shared with the chief).
        search_config: the worker's resolved options, checked against the
            chief's `search.yaml` when the folder is shared.
        search_file, identity_keys: the file and keys that define a search.
        build_tuner: callable returning the keras-tuner tuner; called with
            the keras-tuner variables set, so it talks to the chief.
        bundle: the `DatasetBundle` to train on.
        epochs, patience, verbose, seed: as in `kerascnn.tune`.

    Returns:
        A `WorkerResult`.

    Raises:
        ChiefUnavailableError: no chief within `config.chief_timeout`.
        ValueError: the chief runs another search.
    """
    import warnings

    start = time.time()
    logger.info("Worker %s: looking for the chief at %s.", config.tuner_id, config.address)
    wait_for_chief(config)
    check_worker_search(Path(project_dir), search_config, search_file, identity_keys)
    import keras

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


# ---------------------------------------------------------------------------
# Disk: keep the best K checkpoints; atomic state files
# ---------------------------------------------------------------------------


def protected_trials(oracle) -> set[str]:
    """Trials whose weights a later trial may load (Hyperband's open brackets)."""
    ids: set[str] = set()
    for bracket in getattr(oracle, "_brackets", None) or []:
        for round_info in bracket.get("rounds", []):
            for info in round_info:
                ids.add(str(info.get("id")))
    return ids


def prune_checkpoints(oracle, project_dir: Path, keep: int, final: bool = False) -> list[str]:
    """Delete the weights of every trial but the best `keep` completed ones.

    Running trials, and trials that Hyperband may still continue, keep their
    weights; their `trial.json` (and so the leaderboard) always stay.

    Args:
        oracle: the keras-tuner oracle (on the chief, or a local search).
        project_dir: the search folder with `trial_*/`.
        keep: int >= 1. How many of the best completed trials keep weights.
        final: bool. The search is over: Hyperband's open brackets no longer
            protect their trials. Defaults to `False`.

    Returns:
        The ids of the trials whose weights were deleted now.
    """
    completed = [t for t in oracle.trials.values()
                 if t.status == "COMPLETED" and t.score is not None
                 and not (isinstance(t.score, float) and math.isnan(t.score))]
    reverse = getattr(oracle.objective, "direction", "max") == "max"
    completed.sort(key=lambda t: t.score, reverse=reverse)
    keep_ids = {t.trial_id for t in completed[:keep]}
    keep_ids |= {t.trial_id for t in oracle.ongoing_trials.values()}
    if not final:
        keep_ids |= protected_trials(oracle)
    keep_ids |= {str(t) for t in getattr(oracle, "_retry_queue", [])}
    deleted = []
    for trial_id, trial in oracle.trials.items():
        if trial_id in keep_ids or trial.status == "RUNNING":
            continue
        removed = False
        for path in Path(project_dir, f"trial_{trial_id}").glob("checkpoint*"):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("Could not delete %s: %s", path, e)
        if removed:
            deleted.append(trial_id)
    if deleted:
        logger.debug("Deleted the weights of trial(s) %s (keeping the best %d).",
                     ", ".join(deleted), keep)
    return deleted


def atomic_save_json(path: str, obj: Any) -> str:
    """keras-tuner's `utils.save_json`, written atomically (temporary file + rename)."""
    from kerascnn.runs import atomic_write_text

    text = json.dumps(obj)
    atomic_write_text(path, text)
    return text
