"""The trained student as a self-contained ONNX file, usable without this project's code.

DIR/student/student.onnx takes `input`: float32 [batch, C, H, W] with pixel values in [0, 1] (the
student's own interface; divide uint8 images by 255) and returns `logits`: float32 [batch, K], the
raw logits. The batch size is free. Any ONNX runtime runs it (onnxruntime, TensorRT, OpenVINO, ...).

A student the exporters cannot handle has no student.onnx; DIR/student/student.onnx.failed.json
records why instead, so that the run still counts as finished (pipeline/evaluate/finished.py) rather
than being evaluated again by every later `run`. A later successful export removes it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import pyarrow.fs as pafs
import torch

from pipeline.run import storage

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def onnx_path(student_dir: str) -> str:
    return storage.join(student_dir, "student.onnx")


def export_failure_path(student_dir: str) -> str:
    """Where a failed export is recorded, beside the file it would have written."""
    return storage.join(student_dir, "student.onnx.failed.json")


def record_export_failure(student_dir: str, exc: BaseException) -> str:
    """Record (atomically) that exporting the student in `student_dir` failed, and why."""
    path = export_failure_path(student_dir)
    storage.write_json_atomic(path, {"error": f"{type(exc).__name__}: {exc}"[:2000], "torch": torch.__version__})
    return path


def onnx_bytes(student: torch.nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The student as ONNX bytes. The TorchScript-based exporter first: for the plain feed-forward
    students this project trains it takes a tenth of a second, where the torch.export-based one
    takes seconds (a fixed cost of every train stage); the latter for what the former cannot trace."""
    model = copy.deepcopy(student).cpu().float().eval()
    example = torch.rand(2, *input_shape)
    # The exporters report their progress on stdout and warn about each other; a stage's output is
    # its own summary line.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                buffer = io.BytesIO()
                torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                                  dynamo=False)
                return buffer.getvalue()
            except Exception:  # an operator or control flow TorchScript cannot trace
                program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                            dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                            verbose=False)
                return program.model_proto.SerializeToString()
    finally:
        quiet.setLevel(level)


def export_onnx(student: torch.nn.Module, input_shape, student_dir: str) -> str:
    path = onnx_path(student_dir)
    storage.write_bytes_atomic(path, onnx_bytes(student, tuple(input_shape)))
    # A failure recorded for an earlier attempt (another torch, another student) no longer holds.
    fs, failure = storage.resolve(export_failure_path(student_dir))
    if fs.get_file_info(failure).type == pafs.FileType.File:
        fs.delete_file(failure)
    return path
