"""A teacher's card: what another process needs to rebuild the teacher, and its fingerprint.

kinds
  torch     a torch module from a factory (a registry name or an import path) and keyword args,
            weights in safetensors (a .pt state dict is converted when imported)
  export    a torch.export program (.pt2): no user code needed to load it
  onnx      an ONNX model, run with onnxruntime
  callable  a plain Python callable by import path on numpy batches (a simulator): no weights

The fingerprint covers the weights or program bytes and the code identity (kind, import path or
name, keyword args, declared version), so shards labeled by a changed teacher never mix with old ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

KINDS = ("torch", "export", "onnx", "callable")
FILE_SUFFIX = {"torch": ".safetensors", "export": ".pt2", "onnx": ".onnx"}  # the teacher's file in a run


@dataclass
class TeacherCard:
    kind: str
    input_shape: list[int]  # one input, without the batch dimension ([C, H, W] for images)
    classes: list[str]  # one name per output (class names, or "0".."K-1" when the data names none)
    output_shape: list[int] | None = None  # one output's shape when it is a field ([C', *grid]); None: [K]
    arch: str = ""  # registry name or import path (torch, callable); empty for export / onnx
    kwargs: dict = field(default_factory=dict)  # keyword args of the factory or callable
    version: str | None = None  # a callable's declared version: a new version is a new teacher
    fingerprint: str = ""
    params: int | None = None  # parameter count, where the teacher has countable weights
    test_accuracy: float | None = None  # on the real test split, where it has labels
    dataset: str | None = None
    # The teacher's own input normalisation, part of the teacher: {"mean": [...], "std": [...]} per
    # channel, applied to [0, 1] inputs before its first layer; None: it takes them as they are.
    preprocess: dict | None = None

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def file_name(self) -> str | None:
        """The teacher's weights or program inside DIR/teacher/ (None for a callable)."""
        suffix = FILE_SUFFIX.get(self.kind)
        return f"teacher{suffix}" if suffix else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "teacher card") -> "TeacherCard":
        if not isinstance(data, dict):
            raise ValueError(f"{source} holds a JSON {type(data).__name__}; expected an object with kind, input_shape and classes.")
        data = dict(data)
        if "kind" not in data:  # a card written before teachers had kinds: a registry torch module
            data["kind"] = "torch"
            if "width" in data:
                data.setdefault("kwargs", {})["width"] = data["width"]
        missing = [k for k in ("input_shape", "classes") if k not in data]
        if missing:
            raise ValueError(f"{source} lacks the field(s) {', '.join(missing)}; expected input_shape and classes.")
        for key, kind in (("input_shape", list), ("classes", list), ("kwargs", dict), ("arch", str)):
            if key in data and not isinstance(data[key], kind):
                raise ValueError(f"{key} is {data[key]!r}, expected a JSON {kind.__name__}")
        if data.get("preprocess") is not None:
            data["preprocess"] = checked_preprocess(data["preprocess"], source)
        if data["kind"] not in KINDS:
            raise ValueError(f"{source} has kind {data['kind']!r}; expected one of: {', '.join(KINDS)}.")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def checked_preprocess(value, source: str) -> dict:
    """A card's `preprocess` ({"mean": [...], "std": [...]}), or ValueError saying what is wrong."""
    ok = (isinstance(value, dict) and set(value) == {"mean", "std"}
          and all(isinstance(value[k], list) and value[k] and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                   for v in value[k]) for k in ("mean", "std"))
          and all(v > 0 for v in value["std"]))
    if not ok:
        raise ValueError(f"{source}: preprocess is {value!r}; expected {{\"mean\": [...], \"std\": [...]}} with "
                         "one value, or one per channel, and positive stds")
    return {"mean": [float(v) for v in value["mean"]], "std": [float(v) for v in value["std"]]}


def compute_fingerprint(card: TeacherCard, content: bytes | None) -> str:
    """sha256 over the teacher's code identity and the sha256 of its weights or program bytes."""
    identity = {"kind": card.kind, "arch": card.arch, "kwargs": card.kwargs, "version": card.version,
                "content_sha256": hashlib.sha256(content).hexdigest() if content is not None else None}
    if card.preprocess:  # another normalisation is another function (absent: fingerprints as before)
        identity["preprocess"] = card.preprocess
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
