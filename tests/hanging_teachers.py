"""Teacher loaders for the TeacherProcess tests (tests/test_native_hang.py), importable by module name in
the process that forks teacher processes. The first value of a batch says what the teacher does with it."""

from __future__ import annotations

import ctypes
import os

import numpy as np

LABEL, PYTHON_HANG, NATIVE_HANG, RAISE, CRASH, PID = range(6)


def deadlock() -> None:
    """Block in C for good: relock a default (normal) glibc mutex this thread holds. It waits again after
    any signal handler, and PyDLL keeps the GIL, so nothing in this process can end it."""
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeros: PTHREAD_MUTEX_INITIALIZER
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


def call(batch: np.ndarray) -> np.ndarray:
    what = int(batch[0])
    if what == PYTHON_HANG:
        while True:
            pass
    if what == NATIVE_HANG:
        deadlock()
    if what == RAISE:
        raise FloatingPointError("the solver diverged")
    if what == CRASH:
        os._exit(3)
    if what == PID:
        return np.array([os.getpid()])
    return batch * 2


def load():
    return call, {"pid": os.getpid()}


def broken_load():
    raise RuntimeError("license server unreachable")


def load_once(marker: str):
    """Loads the first time only (e.g. a license taken and never given back)."""
    if os.path.exists(marker):
        raise RuntimeError("loaded once already")
    open(marker, "w").close()
    return load()
