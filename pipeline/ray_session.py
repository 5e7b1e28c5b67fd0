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


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            # "local" forces a fresh embedded instance rather than attaching to a stray one.
            ray.init(address="local", dashboard_host="127.0.0.1", logging_level=logging.WARNING)
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
