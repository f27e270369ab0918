"""Connecting to the Ray cluster the workers run on: a private local one, or an existing cluster."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from typing import Any

from policygrad.errors import InputError, describe_error

__all__ = ["Cluster", "check_address", "import_ray"]

CONNECT_TIMEOUT = 5.0
"""Seconds a HOST:PORT address has to accept a connection before the run is refused."""

OBJECT_STORE_BYTES = 512 * 2**20
"""The object store of a local cluster: fragments and weights pass through it, a few at a time."""


WORKER_NICENESS = 0
"""The niceness of the worker processes of a local cluster (Ray's default is 15, which lets any
other process on the machine take the CPU from the environments first). A cluster started by hand
sets it with ``RAY_worker_niceness=0`` in the environment of ``ray start``."""


def import_ray() -> Any:
    """The ``ray`` module; InputError naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise InputError("rollout workers need Ray: pip install 'policygrad[ray]'") from None
    return ray


def check_address(address: str) -> str:
    """``local``, ``auto`` or ``HOST:PORT`` (checked for form only); InputError otherwise."""
    if address in ("local", "auto"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--address must be local, auto or HOST:PORT, got {address!r}")
    return address


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _check_reachable(address: str) -> None:
    """InputError unless ``HOST:PORT`` answers as a gRPC server (a Ray head's GCS is one) within
    :data:`CONNECT_TIMEOUT` seconds: it must accept a connection and answer the HTTP/2 preface with
    a SETTINGS frame. Anything else listening there would leave ``ray.init`` retrying for minutes."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT) as conn:
            conn.settimeout(CONNECT_TIMEOUT)
            conn.sendall(_HTTP2_PREFACE)
            frame = b""
            while len(frame) < 9:
                chunk = conn.recv(9 - len(frame))
                if not chunk:
                    break
                frame += chunk
    except OSError as err:
        reason = (f"no answer within {CONNECT_TIMEOUT:.0f} s" if isinstance(err, TimeoutError)
                  else err.strerror or describe_error(err))
        raise InputError(f"cannot reach the Ray cluster at {address}: {reason}") from None
    if len(frame) < 9 or frame[3] != 0x04:
        raise InputError(f"cannot reach the Ray cluster at {address}: what answers there is not a Ray head "
                         "(no gRPC server)")


class Cluster:
    """The Ray cluster of a run's workers.

    ``local`` starts a private cluster on this machine (its own temporary directory, removed at
    :meth:`close`; CPUs enough for every worker), so that a run never joins or stops another
    user's cluster. ``auto`` joins the cluster this machine already belongs to; ``HOST:PORT``
    the cluster whose head listens there (refused at once when nothing answers there). If Ray is
    already initialised in this process (a user's own ``ray.init``), that connection is used and
    left open.

    Raises:
        InputError: Ray is not installed, or the address cannot be reached.
    """

    def __init__(self, address: str, workers: int) -> None:
        ray = import_ray()
        check_address(address)
        self.started = False
        self.temp_dir: str | None = None
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                   "configure_logging": False, "log_to_driver": False}
        if address == "local":
            # Ray logs a warning that a new local cluster uses token authentication (its default):
            # for a cluster private to the run, that is noise.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            # Unix socket paths are short: a short directory under /tmp.
            self.temp_dir = tempfile.mkdtemp(prefix="pgray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            # Ray starts its workers at nice 15, below everything else on the machine; the rollout
            # workers are the run's main work, so they run at the priority of the learner here.
            options.update(address="local", num_cpus=max(os.cpu_count() or 1, workers + 1),  # + the spare
                           object_store_memory=OBJECT_STORE_BYTES, _temp_dir=self.temp_dir,
                           _system_config={"worker_niceness": WORKER_NICENESS})
        else:
            if address != "auto":
                _check_reachable(address)
            options.update(address=address)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            self._remove_temp_dir()
            raise InputError(f"cannot connect to the Ray cluster at {address}: "
                             f"{describe_error(err, 300, first_line=True)}") from None
        self.started = True

    def close(self) -> None:
        """Disconnect (shutting the cluster down if this object started a local one)."""
        if self.started:
            import ray

            try:
                ray.shutdown()
            finally:
                self.started = False
                self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
