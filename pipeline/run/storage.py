"""Paths and atomic writes through pyarrow's filesystems.

Every stage reads and writes through these helpers, so an output directory may be a local path,
a `file://` URI, or object storage (`s3://bucket/run`, `gs://bucket/run`) that every node of a
cluster sees.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs

from pipeline.errors import UserError


def _is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute (one spelling everywhere, and right for processes that run in
    another working directory, such as Ray workers with a shipped code_dir); a URI as it is."""
    return path if _is_uri(path) else os.path.abspath(path)


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `path`, and the path within it."""
    if _is_uri(path):
        try:
            return pafs.FileSystem.from_uri(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with its own wording
            raise UserError(f"Cannot open storage location {path!r}: {exc}") from exc
    return pafs.LocalFileSystem(), os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', keeping a URI's scheme."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise UserError(f"File not found: {path}") from exc
    except OSError as exc:  # pyarrow: "Cannot open for reading: path ... is a directory", permissions, ...
        if fs.get_file_info(p).type == pafs.FileType.Directory:
            raise UserError(f"{path} is a directory; expected a file.") from exc
        raise UserError(f"{path} cannot be read ({exc}).") from exc


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write under a temporary name, then rename into place: readers see all of it or none of it.

    (On object stores a single PUT is already atomic and the rename is a copy; still correct.)"""
    fs, p = resolve(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, p)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:
            pass
        raise


def read_json(path: str) -> Any:
    try:
        return json.loads(read_bytes(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); it may be corrupt.") from exc


def write_json_atomic(path: str, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def local_path(path: str) -> str | None:
    """A plain local filesystem path for `path`, or None when it lives on remote storage."""
    fs, p = resolve(path)
    return p if isinstance(fs, pafs.LocalFileSystem) else None
