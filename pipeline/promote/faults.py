"""Deterministic faults in a promotion, for tests and drills of what survives a crash.

Off unless set in the environment of the promoting process:

    DISTILLERY_PROMOTE_FAULT=STEP     die on the spot (os._exit(137), no cleanup) at STEP:
        copy     after the first file of the new version directory is written (a half-written version)
        pointer  with the version directory complete, before REG/current is replaced
        history  after REG/current is replaced, before REG/history.json records the version
    DISTILLERY_PROMOTE_HOLD=PATH      once the registry's lock is held, create PATH.held and wait until
                                      PATH exists (at most HOLD_LIMIT_S): two promotions at once, on cue
"""

from __future__ import annotations

import os
import time

PROMOTE_FAULT = "DISTILLERY_PROMOTE_FAULT"
PROMOTE_HOLD = "DISTILLERY_PROMOTE_HOLD"
STEPS = ("copy", "pointer", "history")
KILLED_EXIT_CODE = 137  # what a shell reports for SIGKILL
HOLD_LIMIT_S = 120.0


def maybe_die(step: str) -> None:
    if os.environ.get(PROMOTE_FAULT) == step:
        os._exit(KILLED_EXIT_CODE)


def maybe_hold() -> None:
    path = os.environ.get(PROMOTE_HOLD)
    if not path:
        return
    open(f"{path}.held", "w").close()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
