"""The chief of a distributed search: serves the oracle until the search is complete.

What this adds to keras-tuner 1.4.8's `start_server`, for the failures its
users report:

- **The chief exits when the search is complete** (keras-tuner issues #254,
  #344): it polls every half second instead of every 20 s, stops once no
  trial is left and every worker it knows has been told so (or a short grace
  period has passed for a worker that vanished between trials), then the
  caller writes the leaderboard and the best model.
- **A killed worker picks up its trial** when restarted with the same
  `--worker-id`: the oracle keeps the trial of that id as ongoing and hands it
  back (keras-tuner's `create_trial`), so no trial is lost or counted twice.
- A second chief on the same port fails instead of sharing it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent import futures
from typing import Iterator, Optional

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from keras_tuner.src.engine.oracle import LOCKS, THREADS

from kerascnn.checks import InputError
from kerascnn.distributed import DistributedConfig

logger = logging.getLogger(__name__)


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
        raise InputError(f"The chief cannot listen on {config.address}: {e}. "
                         f"Received: oracle_address={config.address!r}") from None
    if not bound:
        raise InputError(f"The chief cannot listen on {config.address}. "
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
