"""One writer per output directory: a second run started on the same DIR stops at once.

On a local filesystem this is an exclusive `flock` on DIR/.lock, which the kernel releases when
the holder exits, crashed or not, so a killed run never leaves a stale lock behind. Object stores
have no such primitive; there the caller is responsible for not starting two runs on one DIR (a
scheduler's `concurrencyPolicy: Forbid`, for example).

The lock is re-entrant within a process, so `run` can hold it across stages that also take it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import functools
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from pipeline.run import storage
from pipeline.errors import UserError

Stage = TypeVar("Stage", bound=Callable)
LOCK_NAME = ".lock"
_held: set[str] = set()  # lock paths this process holds
RUN_BUSY = "{out} is in use by another run ({holder}); wait for it to finish or use another --out."


@contextmanager
def output_lock(out: str, busy: str = RUN_BUSY) -> Iterator[None]:
    """Hold DIR/.lock for the block. `busy` is the error when another process holds it ({out}, {holder})."""
    local = storage.local_path(out)
    if local is None:
        yield
        return
    path = os.path.join(local, LOCK_NAME)
    if path in _held:  # an outer frame of this process holds it, and releases it
        yield
        return
    if os.path.exists(local) and not os.path.isdir(local):
        raise UserError(f"{out} is a file; expected a directory.")
    created = not os.path.exists(local)
    os.makedirs(local, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(busy.format(out=out, holder=holder))
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held.add(path)
    try:
        yield
    finally:
        _held.discard(path)
        if created and os.listdir(local) == [LOCK_NAME]:
            # A run that failed before writing anything leaves no directory behind.
            os.unlink(path)
            os.rmdir(local)
        os.close(fd)  # closing releases the flock


def locked(stage: Stage) -> Stage:
    """A stage function `stage(cfg, ...)` that holds cfg.out's lock while it runs: a stage called
    from Python (the README's "Using the stages from Python") is as safe from a second writer as the
    command line, which takes the same lock around every command."""

    @functools.wraps(stage)
    def run_locked(cfg, *args, **kwargs):
        with output_lock(cfg.out):
            return stage(cfg, *args, **kwargs)

    return run_locked  # type: ignore[return-value]
