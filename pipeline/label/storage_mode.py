"""Whether a run's shards keep generated inputs as pixels or as recipes (data.store_inputs).

A recipe row costs the reader a render per epoch (or once, when the split fits in memory) and saves
the input's bytes on disk, in every hash and in every read. That pays once an input outweighs its
targets many times over: a 224 x 224 RGB view is 150,528 bytes against 2,000 for 1,000 float16
logits, and its recipe about 170. An 8 x 8 digit (64 bytes against 20) is cheaper stored as it is.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import Config
from pipeline.inputs.space import InputSpace
from pipeline.tasks import get_task

RECIPE_RATIO = 16  # auto keeps recipes once an input's bytes are at least this many times its targets'


def target_bytes(cfg: Config, num_outputs: int) -> int:
    """Bytes of one row's targets as a shard stores them."""
    top_k = cfg.label.top_k
    if top_k is not None:  # float16 values and int16 (or int32, past 32,767 classes) indices
        return top_k * (2 + (2 if num_outputs <= np.iinfo(np.int16).max else 4))
    return num_outputs * np.dtype(get_task(cfg.task.kind).dtype).itemsize


def keeps_recipes(cfg: Config, space: InputSpace, input_shape, num_outputs: int) -> tuple[bool, str]:
    """(keep recipes, what was chosen and why, in words)."""
    if not space.stores_recipes:
        return False, ""
    setting = cfg.data.store_inputs
    input_bytes = math.prod(input_shape) * space.stored_item_bytes
    targets = target_bytes(cfg, num_outputs)
    sizes = f"an input is {input_bytes:,} bytes, its targets {targets:,}"
    if setting != "auto":
        return setting == "recipe", f"Inputs stored as {setting}s (data.store_inputs {setting}; {sizes})"
    recipe = input_bytes >= RECIPE_RATIO * targets
    return recipe, (f"Inputs stored as {'recipes' if recipe else 'pixels'}, chosen from their size: {sizes}, "
                    f"{'at least' if recipe else 'under'} {RECIPE_RATIO} times as much (data.store_inputs auto)")
