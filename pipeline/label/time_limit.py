"""A per-batch time limit for teachers that may hang (a simulator, an external program per sample).

Two layers, because a signal cannot stop everything:
- `time_limit`: SIGALRM raises BatchTimeout in the thread that set it, which must be the process's
  main thread. It stops a call that is running Python, at once and cheaply, and a C call that a
  signal ends early (libc `sleep`), but not one blocked in C or Fortran for good (a solver's
  deadlock, a wait restarted after every signal, a library holding the GIL): Python runs a signal
  handler only between bytecodes, so the handler waits for a return that never comes.
- `TeacherProcess`: the teacher runs in a process of its own, under `time_limit`, and is killed
  (SIGKILL, which needs nothing from the process) when a batch has not come back within the limit
  and a short grace. The caller loses only that batch; the next batch goes to a new process.

New processes are forked from a *zygote*: a process that has imported the teacher's modules (torch,
the pipeline) and runs nothing else (no teacher, no CUDA, no parallel op), so a fork of it is safe
and starts in milliseconds, where a fresh interpreter would take seconds to import torch. A hung
batch therefore costs `timeout_s` + grace + loading the teacher again (a callable: its constructor;
a network: reading its weights), not an interpreter's start. There is one zygote per labeling
actor, and everything ends with the actor: on Linux the zygote and each teacher process are killed
when their parent dies (PR_SET_PDEATHSIG), however it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator


class BatchTimeout(Exception):
    pass


class BatchFailed(Exception):
    """The teacher raised on a batch in its own process; the message is its `Type: message`."""


class ReloadFailed(Exception):
    """A new teacher process, started after a hang or a crash, could not load the teacher again."""


class TeacherProcessDied(Exception):
    """The teacher's process died on a batch by itself (a crash in native code, the OOM killer): the
    shard is redone, as when a labeling actor dies (pipeline.label.pool.LOST_WORK)."""


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


def grace_s(timeout_s: float) -> float:
    """How long after `timeout_s` a teacher process is killed: SIGALRM stops a Python hang at
    `timeout_s` and the process answers within milliseconds; one silent this long is blocked
    outside Python. Short, since a hung batch costs timeout_s + grace (at most 2 x timeout_s)."""
    return min(1.0, 0.25 * timeout_s)


class TeacherProcess:
    """`load()` -> (call, info) run in a process of its own; `self(batch)` is `call(batch)` there,
    under `timeout_s`. Raises BatchTimeout (Python or native hang: the batch is lost, the next call
    gets a new process), BatchFailed (the teacher raised), TeacherProcessDied (it crashed) or
    ReloadFailed (a new process could not load the teacher).

    `load` is pickled by reference (a module-level function, or a functools.partial of one); its
    module is imported by the zygote before it forks, so a new process has little left to do.
    `info` (e.g. the teacher's card) is what the first load returned; a load that raises raises
    here, from the constructor (or from the call that needed a new process)."""

    def __init__(self, load: Callable[[], tuple[Callable[[Any], Any], Any]], timeout_s: float):
        self.load, self.timeout_s = load, timeout_s
        self._zygote: tuple[subprocess.Popen, socket.socket] | None = None
        self._child: tuple[int, Connection] | None = None
        self.restarts = 0  # teacher processes killed on a hang or lost to a crash
        self.info = self._start()

    def __call__(self, batch):
        if self._child is None:
            try:
                self._start()
            except TeacherProcessDied:
                raise
            except Exception as exc:
                raise ReloadFailed("a new teacher process could not load the teacher: "
                                   f"{type(exc).__name__}: {exc}") from exc
        pid, conn = self._child
        try:
            conn.send(batch)
            answered = conn.poll(self.timeout_s + grace_s(self.timeout_s))
        except OSError:  # it died before reading the batch
            answered = True
        if not answered:
            self._end_child()
            self.restarts += 1
            raise BatchTimeout(f"the teacher did not return within label.timeout_s = {self.timeout_s:g} s (blocked "
                               "outside Python, e.g. in C or Fortran): its process was killed and a new one started")
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            self._end_child()
            self.restarts += 1
            raise TeacherProcessDied("the teacher's process died while labeling a batch (a crash outside Python, or "
                                     "the machine ran out of memory)") from None
        if status == "error":
            raise BatchFailed(value)
        return value

    def close(self) -> None:
        self._end_child()
        if self._zygote is not None:
            proc, control = self._zygote
            control.close()  # the zygote exits when its control socket closes
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            self._zygote = None

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    # -- processes

    def _start(self):
        """A new teacher process, forked from the zygote, with the teacher loaded; returns `info`."""
        ours, theirs = socket.socketpair()
        try:
            pid = self._fork(theirs)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        self._child = (pid, conn)
        try:
            conn.send((self.load, self.timeout_s))
            status, value = conn.recv()  # no limit: loading the teacher is not a batch
        except (EOFError, OSError):
            self._end_child()
            raise TeacherProcessDied("the teacher's process died while loading the teacher") from None
        if status == "error":
            self._end_child()
            raise value
        return value

    def _fork(self, fd_owner: socket.socket) -> int:
        for _ in range(2):  # a zygote that died (killed by hand, out of memory) is started again
            if self._zygote is None or self._zygote[0].poll() is not None:
                self._zygote = _start_zygote(self.load)
            control = self._zygote[1]
            try:
                socket.send_fds(control, [b"f"], [fd_owner.fileno()])
                reply = control.recv(8)
                if len(reply) == 8:
                    return struct.unpack("q", reply)[0]
            except OSError:
                pass
            self._zygote[0].kill()
            self._zygote[0].wait()
            self._zygote = None
        raise TeacherProcessDied("the process that starts teacher processes died twice in a row")

    def _end_child(self) -> None:
        if self._child is None:
            return
        pid, conn = self._child
        self._child = None
        conn.close()
        # Safe: the zygote reaps its children only when asked for the next fork, so until then `pid`
        # is this child (alive, or a zombie), never a reused number.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_zygote(load) -> tuple[subprocess.Popen, socket.socket]:
    ours, theirs = socket.socketpair()
    func = getattr(load, "func", load)  # through functools.partial
    # The parent's sys.path, so that the user's code (a Ray working_dir, label's code_dir) imports alike.
    code = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
            "from pipeline.label.time_limit import _zygote; _zygote(*map(int, sys.argv[2:4]), sys.argv[4])")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(sys.path), str(os.getpid()), str(theirs.fileno()),
                             func.__module__],
                            pass_fds=[theirs.fileno()], close_fds=True)
    theirs.close()
    return proc, ours


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread of `parent` that made it ends (Linux); elsewhere nothing."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _zygote(parent: int, control_fd: int, preload: str) -> None:
    """Import `preload`, then fork a teacher process for each socket sent on the control socket,
    answering its pid. Runs no teacher code itself, so every fork starts clean."""
    _die_with_parent(parent)
    importlib.import_module(preload)
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            os._exit(0)
        if not message:  # the labeling actor is gone
            os._exit(0)
        with contextlib.suppress(ChildProcessError):  # reap the teacher processes that ended
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:  # a teacher process: it never returns into this loop
            try:
                control.close()
                _die_with_parent(zygote)
                _serve(Connection(fds[0]))
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        control.sendall(struct.pack("q", pid))


def _serve(conn: Connection) -> None:
    """A teacher process: load, then answer batches until the connection closes. Never returns."""
    try:
        load, timeout_s = conn.recv()
        call, info = load()
    except BaseException as exc:  # sent whole when it pickles (a UserError keeps its one sentence)
        conn.send(("error", _portable(exc)))
        os._exit(0)
    conn.send(("ok", info))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            with time_limit(timeout_s):
                reply = ("ok", call(batch))
        except Exception as exc:  # the teacher's own failure on this batch
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
