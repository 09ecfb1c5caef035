"""Distributed search: who this process is (chief or worker) and where the oracle lives.

A search runs on keras-tuner's own distributed mode: one **chief** serves the
oracle over gRPC, **workers** ask it for trials, train them and report back.
keras-tuner configures it with three environment variables
(`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`);
`kerascnn tune --distributed chief|worker --oracle-address HOST:PORT
[--worker-id ID]` sets them (or reads them when they are already set).

This module only describes and validates that configuration; it is pure
Python, so the command line refuses a bad address or id before TensorFlow
loads. The chief's loop is `kerascnn.tuning.chief`, the worker's
`kerascnn.tuning.worker` (docs/distributed.md).

The oracle has no authentication: it listens on loopback unless told
otherwise, and `resolve` warns when it is bound to another address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

from kerascnn.checks import InputError, parse_duration

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
        InputError: not of the form HOST:PORT, or a port out of range.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{name} must be HOST:PORT, e.g. 127.0.0.1:8000. "
                         f"Received: {name}={text!r}")
    value = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", value) or \
        re.fullmatch(r"([A-Za-z0-9_.-]+):(\d+)", value)
    if not match:
        raise InputError(f"{name} must be HOST:PORT (an IPv6 host in brackets, [::1]:8000). "
                         f"Received: {name}={text!r}")
    host, port = match.group(1), int(match.group(2))
    if not 1 <= port <= 65535:
        raise InputError(f"{name} has a port out of range; allowed: 1-65535. "
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
        InputError: a bad role, address, id or timeout; a chief address that
            is not on this machine or whose port is taken.
    """
    env = os.environ if environ is None else environ
    from_env = ENV_ORACLE_IP in env
    if distributed is None and not from_env:
        for name, value in (("oracle_address", oracle_address), ("worker_id", worker_id)):
            if value is not None:
                raise InputError(f"{name} is for a distributed search; add "
                                 f"--distributed chief|worker. Received: {name}={value!r}")
        return None
    if distributed is None:  # keras-tuner's own variables
        tuner_id = env.get(ENV_TUNER_ID)
        if not tuner_id:
            raise InputError(f"{ENV_ORACLE_IP} is set but {ENV_TUNER_ID} is not; set it to "
                             f"'chief' on the chief and a unique name on each worker. "
                             f"Received: {ENV_TUNER_ID}={tuner_id!r}")
        distributed = "chief" if "chief" in tuner_id else "worker"
        if distributed == "worker" and worker_id is None:
            worker_id = tuner_id
    if distributed not in ROLES:
        raise InputError(f"Unknown distributed role; allowed: chief, worker. "
                         f"Received: distributed={distributed!r}")
    if oracle_address is None:
        if from_env:
            port = env.get(ENV_ORACLE_PORT)
            if not port:
                raise InputError(f"{ENV_ORACLE_IP} is set but {ENV_ORACLE_PORT} is not. "
                                 f"Received: {ENV_ORACLE_PORT}={port!r}")
            oracle_address = _format_address(env[ENV_ORACLE_IP], port)
        else:
            oracle_address = DEFAULT_ADDRESS
    host, port = parse_address(oracle_address)
    timeout = _parse_timeout(chief_timeout)
    if distributed == "chief":
        if worker_id is not None:
            raise InputError(f"worker_id is for a worker; the chief's id is {CHIEF_ID!r}. "
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
        raise InputError("A worker needs a worker_id (--worker-id), unique to it: a worker "
                         "restarted with the same id picks up the trial it was running. "
                         "Received: worker_id=None")
    if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
        raise InputError(f"worker_id must be 1-64 letters, digits, '_', '.' or '-', starting "
                         f"with a letter or digit. Received: worker_id={worker_id!r}")
    if "chief" in worker_id:
        raise InputError(f"worker_id must not contain 'chief' (keras-tuner would make the "
                         f"process a second chief). Received: worker_id={worker_id!r}")
    return DistributedConfig("worker", host, port, worker_id, timeout)


def _parse_timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_CHIEF_TIMEOUT
    return parse_duration(value, "chief_timeout")


def _check_bindable(host: str, port: int) -> None:
    """The chief's address must be on this machine and its port free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"The oracle's host does not resolve ({e.strerror}). "
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
            raise InputError(f"The chief cannot listen on {_format_address(host, port)}: "
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
