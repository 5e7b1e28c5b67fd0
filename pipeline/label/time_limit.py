"""A per-batch time limit for teachers that may hang (a simulator, an external program per sample).

SIGALRM interrupts the call in the thread that set it, which must be the process's main thread: a
Ray actor runs its methods there. Elsewhere (a thread) the limit cannot be enforced and is skipped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class BatchTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise BatchTimeout(f"the batch took longer than label.timeout_s = {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
