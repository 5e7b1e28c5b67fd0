"""Weights on disk: safetensors, or a `.pt` state dict loaded with weights_only=True.

Weights are never unpickled as objects: loading a weights file never runs code. A module is loaded
strictly, and a file that does not fit it is refused with the names and shapes that differ.
"""

from __future__ import annotations

import io
import re
import warnings

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


def weights_to_bytes(model: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state)


def state_dict_from_bytes(weights: bytes, name: str) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes, or a `.pt`/`.pth` state dict loaded with weights_only=True.
    Raises ValueError with a sentence naming the file."""
    if name.endswith((".pt", ".pth")):
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError for anything but plain tensors and containers
            raise ValueError(f"{name} is not a plain state dict that loads with weights_only=True ({why_refused(exc)}; "
                             "nothing in it was run). Save model.state_dict(), or convert it to safetensors.") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{name} does not hold a state dict (name -> tensor).")
        return state
    try:
        return load_safetensors(weights)
    except Exception as exc:
        raise ValueError(f"{name} is not a readable safetensors file ({exc}).") from exc


def why_refused(exc: Exception) -> str:
    """The gist of torch.load's refusal (its message is a page of advice, including to load unsafely)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found.group(1)}, which only loads by running code"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return f"not a torch.save file: {found.group(1).strip()}"
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def load_weights_strictly(model: nn.Module, state: dict[str, torch.Tensor], name: str, described: str) -> nn.Module:
    """Load `state` into `model`, refusing missing, unexpected or reshaped entries (ValueError)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
        for k in wrong_shape[:3]:
            problems.append(f"{k} has shape {list(state[k].shape)} where the model expects {list(expected[k].shape)}")
        raise ValueError(f"{name} does not match {described}: {'; '.join(problems)}.")
    model.load_state_dict(state)
    return model.eval()
