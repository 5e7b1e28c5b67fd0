"""Deterministic fault injection, for tests of what survives a crash.

Off unless DISTILLERY_CRASH_SHARD is set in the environment of the Ray workers, e.g.

    DISTILLERY_CRASH_SHARD=train:2 DISTILLERY_CRASH_ONCE_DIR=/tmp/x python -m pipeline label ...

makes the process labeling train shard 2 die (os._exit, no cleanup) halfway through writing it.
With DISTILLERY_CRASH_ONCE_DIR it dies on the first attempt only (a marker file there records the
crash), so Ray's retry then succeeds; without it, every attempt dies.

DISTILLERY_KILL_DRIVER_AFTER=N makes the labeling driver die once N shards have come back, before
it has necessarily recorded them in the manifest: a crash at an arbitrary point of the stage.
"""

from __future__ import annotations

import os

CRASH_SHARD = "DISTILLERY_CRASH_SHARD"
CRASH_ONCE_DIR = "DISTILLERY_CRASH_ONCE_DIR"
KILL_DRIVER_AFTER = "DISTILLERY_KILL_DRIVER_AFTER"


def should_crash(split: str, index: int) -> bool:
    if os.environ.get(CRASH_SHARD) != f"{split}:{index}":
        return False
    once_dir = os.environ.get(CRASH_ONCE_DIR)
    if once_dir is None:
        return True
    marker = os.path.join(once_dir, f"crashed-{split}-{index}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def crash_midway(path: str, data: bytes) -> None:
    """Leave half of `data` under a temporary name beside `path`, then die without cleanup."""
    # The real writer makes the split's directory; this shard may be the first to reach it.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp-crashed", "wb") as f:
        f.write(data[: len(data) // 2])
    os._exit(1)


def maybe_kill_driver(shards_returned: int) -> None:
    limit = os.environ.get(KILL_DRIVER_AFTER)
    if limit is not None and shards_returned >= int(limit):
        os._exit(1)
