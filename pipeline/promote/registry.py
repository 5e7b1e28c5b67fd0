"""The registry of served students: versions, the `current` pointer, and the history.

    REG/versions/v0001/student/   student.json, student.safetensors, student.onnx (as the run wrote them)
    REG/versions/v0001/teacher.json, report.json (the run's, when it has one), promotion.json
    REG/current                   one line, the name of the version being served ("v0002")
    REG/history.json              every promotion and rollback, oldest first
    REG/.lock                     held while a promotion or rollback runs (local paths and file:// URIs)

A switch writes the new version's directory completely, then replaces `current` atomically
(storage.write_bytes_atomic), then appends to the history. `current` is the commit point: a reader
(serving) that reads it always finds a complete version, and a process killed at any step leaves the
old version current or the new one, never a half state. What a killed process left undone is finished
by the next promotion or rollback (`recover`): a half-written version directory that nothing points to
is written again, and a switch missing from the history is recorded from the version's promotion.json.

Every path goes through pipeline.run.storage, so REG may be a local path or a pyarrow filesystem URI.
Object stores have no lock: there, never run two promotions on one REG at once (the CronJob's
`concurrencyPolicy: Forbid` does that for the nightly job).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipeline.errors import UserError
from pipeline.promote import faults
from pipeline.run import storage
from pipeline.run.lock import output_lock

CURRENT = "current"
HISTORY = "history.json"
VERSIONS = "versions"
RECORD = "promotion.json"  # inside a version: the history entry of its promotion
VERSION_NAME = re.compile(r"^v(\d+)$")
BUSY = "{out} is in use by another promotion or rollback ({holder}); wait for it to finish, then run the command again."


def now() -> str:
    """UTC time of an event, to the second (history.json)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def delete_tree(path: str) -> None:
    """Remove a directory and everything under it, if it exists."""
    fs, p = storage.resolve(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_dir(p)


@dataclass(frozen=True)
class Registry:
    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.absolute(self.root))  # one spelling in messages and records

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def current_path(self) -> str:
        return self.path(CURRENT)

    @property
    def history_path(self) -> str:
        return self.path(HISTORY)

    def version_dir(self, version: str) -> str:
        return self.path(VERSIONS, version)

    def student_dir(self, version: str) -> str:
        return self.path(VERSIONS, version, "student")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One promotion or rollback at a time; a second one stops at once with a UserError."""
        with output_lock(self.root, BUSY):
            faults.maybe_hold()
            yield

    def current(self) -> str | None:
        """The version being served, or None for an empty registry."""
        if not storage.exists(self.current_path):
            return None
        version = storage.read_bytes(self.current_path).decode(errors="replace").strip()
        if not VERSION_NAME.match(version):
            raise UserError(f"{self.current_path} holds {version[:40]!r}, not a version name like v0001: "
                            "the registry is damaged.")
        if not storage.exists(self.path(VERSIONS, version, RECORD)):
            raise UserError(f"{self.current_path} names {version}, which {self.path(VERSIONS)} does not hold: "
                            "the registry is damaged.")
        return version

    def history(self) -> list[dict]:
        if not storage.exists(self.history_path):
            return []
        entries = storage.read_json(self.history_path)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "version" in e for e in entries):
            raise UserError(f"{self.history_path} is not a list of versions; it may be corrupt.")
        return entries

    def promotion_of(self, version: str, history: list[dict] | None = None) -> dict | None:
        """The history entry that promoted `version` (None if the history does not record it)."""
        history = self.history() if history is None else history
        return next((e for e in history if e["version"] == version and e["action"] == "promote"), None)

    def next_version(self) -> str:
        numbers = [int(m.group(1)) for e in self.history() if (m := VERSION_NAME.match(e["version"]))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def recover(self) -> str | None:
        """Record a switch that a killed process made but did not record; return what was recorded."""
        history = self.history()
        recorded = history[-1]["version"] if history else None
        current = self.current()
        if current == recorded:
            return None
        if current is None:
            raise UserError(f"{self.current_path} is missing but {self.history_path} records {recorded} as current: "
                            f"the registry is damaged; write {recorded} into {self.current_path} to restore it.")
        if self.promotion_of(current, history) is None:
            entry = storage.read_json(self.path(VERSIONS, current, RECORD))
        else:
            entry = {"version": current, "action": "rollback", "previous": recorded, "time": now()}
        self._append(history, {**entry, "recovered": True})
        return current

    def write_version(self, version: str, files: dict[str, bytes], record: dict) -> None:
        """Write a version's directory completely (files: relative path -> bytes), its record last.
        Whatever an earlier, killed attempt left under that name is removed first: nothing points to it."""
        delete_tree(self.version_dir(version))
        for i, (name, data) in enumerate(files.items()):
            storage.write_bytes_atomic(self.path(VERSIONS, version, name), data)
            if i == 0:
                faults.maybe_die("copy")
        storage.write_json_atomic(self.path(VERSIONS, version, RECORD), record)

    def switch(self, entry: dict) -> None:
        """Make entry["version"] current (the atomic step), then record the switch in the history."""
        history = self.history()
        faults.maybe_die("pointer")
        storage.write_bytes_atomic(self.current_path, f"{entry['version']}\n".encode())
        faults.maybe_die("history")
        self._append(history, entry)

    def _append(self, history: list[dict], entry: dict) -> None:
        storage.write_json_atomic(self.history_path, [*history, entry])


def current_student_dir(registry: str) -> str | None:
    """The student directory that REG/current points to (what serving loads), or None when empty."""
    reg = Registry(registry)
    version = reg.current()
    return reg.student_dir(version) if version else None
