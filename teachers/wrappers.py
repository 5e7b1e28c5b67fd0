"""Teachers of every kind behind one call: a float32 numpy batch in, a float32 numpy batch out.

    teacher(x: float32 [B, *input_shape]) -> float32 [B, K]   (a field per sample, [B, C', *grid], flattened)

The pipeline labels, evaluates and times every teacher through this call, so a registry CNN, a
user's module, a torch.export program, an ONNX model and a simulator are interchangeable. Each
wrapper is built once per process (a Ray actor loads its teacher in __init__) and is testable
without Ray.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def flat_outputs(out: np.ndarray, rows: int, owner) -> np.ndarray:
    """A teacher's outputs as [rows, K]: a field per sample ([B, C', *grid]) is a vector of its values;
    its shape is kept on `owner.output_shape`, which the teacher stage records."""
    out = np.asarray(out, dtype=np.float32)
    if out.ndim > 2 and len(out) == rows:
        owner.output_shape = [int(d) for d in out.shape[1:]]
        out = out.reshape(rows, -1)
    return out


class TorchTeacher:
    """A torch module (or a torch.export program's module) on this process's device. On a GPU it
    runs under bf16 autocast when asked (about twice fp32's throughput; outputs come back float32)."""

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu", bf16: bool = False):
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.autocast = self.device.type == "cuda" and bf16

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.module(batch)
        return flat_outputs(out.float().cpu().numpy(), len(x), self)


def exported_module(program) -> nn.Module:
    """The callable module of a torch.export ExportedProgram."""
    return program.module()


def exported_input_shape(program) -> list:
    """The shape of an ExportedProgram's first user input, without the batch dimension; a dynamic
    dimension is None."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return [int(d) if isinstance(d, int) else None for d in node.meta["val"].shape[1:]]


class OnnxTeacher:
    """An ONNX model in onnxruntime: the CUDA provider where there is a GPU, else the CPU."""

    def __init__(self, model: bytes, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph optimisations
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(model, options, providers=providers)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.num_inputs = len(inputs)
        # Symbolic dimensions (a free batch size, say) come back as strings or None.
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape[1:]]
        self.input_type = inputs[0].type

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return flat_outputs(out, len(x), self)


class CallableTeacher:
    """A plain Python callable on numpy batches (a simulator, a rule, a remote service client)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return flat_outputs(self.fn(np.ascontiguousarray(x, dtype=np.float32)), len(x), self)


class Normalize(nn.Module):
    """(x - mean) / std per channel of [B, C, ...] inputs: a teacher's own preprocessing, run where the
    teacher runs (a torch teacher's first layer)."""

    def __init__(self, mean: list[float], std: list[float], channels: int):
        super().__init__()
        self.register_buffer("mean", _per_channel(mean, channels, "mean"))
        self.register_buffer("std", _per_channel(std, channels, "std"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


def _per_channel(values: list[float], channels: int, name: str) -> torch.Tensor:
    if len(values) not in (1, channels):
        raise ValueError(f"the teacher's preprocessing gives {len(values)} {name} values for inputs of {channels} "
                         "channel(s); expected one, or one per channel")
    return torch.tensor(values * (channels if len(values) == 1 else 1), dtype=torch.float32)


class PreprocessedTeacher:
    """A teacher of any kind behind its own normalisation (numpy, before the call). Torch teachers
    take it as a first layer instead (`with_preprocess`), on their device."""

    def __init__(self, teacher, normalize: Normalize):
        self.teacher, self.normalize = teacher, normalize

    def __getattr__(self, name):  # input_shape, output_shape, ... of the wrapped teacher
        if name == "teacher":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.teacher, name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = self.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        return self.teacher(x)


def with_preprocess(teacher, preprocess: dict | None, channels: int):
    """`teacher` behind its card's `preprocess` (None: as it is)."""
    if not preprocess:
        return teacher
    normalize = Normalize(preprocess["mean"], preprocess["std"], channels)
    if isinstance(teacher, TorchTeacher):
        return TorchTeacher(nn.Sequential(normalize, teacher.module), teacher.device, teacher.autocast)
    return PreprocessedTeacher(teacher, normalize)
