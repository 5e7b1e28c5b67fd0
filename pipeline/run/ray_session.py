"""Connecting to Ray: join a cluster, reuse the caller's Ray, or start an embedded local one.

- Ray already initialized (a caller's pipeline): use it and leave it running.
- An address (--address, or RAY_ADDRESS): join that cluster.
- Neither: start a local Ray sized to this machine, and shut it down afterwards.

Security defaults stay as Ray ships them: token authentication on, the dashboard bound to
127.0.0.1. Nothing here turns either off.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import ray

from pipeline.errors import UserError


def runtime_env(code_dir: str | None) -> dict | None:
    """The job's runtime environment: a directory of the user's own modules is shipped to every
    worker as its working_dir, on every node, so import paths resolve there as they do here."""
    if not code_dir:
        return None
    return {"working_dir": os.path.abspath(code_dir)}


@contextmanager
def ray_session(address: str | None = None, code_dir: str | None = None) -> Iterator[None]:
    """A Ray to submit work to. With `code_dir`, a Ray started or joined here ships it to the workers;
    a caller's own Ray must already make the code importable (its runtime_env, or PYTHONPATH)."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = runtime_env(code_dir)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, runtime_env=env)
        else:
            # "local" forces a fresh embedded instance rather than attaching to a stray one.
            ray.init(address="local", dashboard_host="127.0.0.1", logging_level=logging.WARNING, runtime_env=env)
    except ConnectionError as exc:
        raise UserError(f"Cannot join the Ray cluster at {address!r} ({exc}).") from exc
    try:
        yield
    finally:
        ray.shutdown()


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))
