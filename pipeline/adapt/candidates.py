"""Proposing generated inputs the current student is least sure of (images, classification).

The generator's own distribution (pipeline.inputs.images.generate_inputs) is drawn `adapt.pool`
times over, from seeds of their own, and the previous round's student scores every candidate by its
margin: its top logit minus its second. The smallest margins are kept. Candidates cost no teacher
call (only the kept ones are labeled), and unlike warps of hard rows they come from the very
distribution the held-out shards measure, at the places where the student's own boundary runs:
the teacher's labels go where the student would otherwise guess.

Candidate shards are generated and scored in Ray tasks; each returns only its own `keep` smallest
margins, which hold the overall smallest. Ties fall to (shard, row), so the choice never depends on
how many tasks ran. Pure: same (student, seed images, config, round, count), same inputs.
"""

from __future__ import annotations

import numpy as np
import ray
import torch

from pipeline.inputs.proposals import LEAST_SURE, PROPOSAL_KINDS, Proposal
from pipeline.config import DataConfig
from pipeline.inputs import space
from pipeline.inputs.images import generate_inputs, shard_seed
from pipeline.train.student import StudentCard, student_from


def margins(student: torch.nn.Module, decode, stored: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """The student's top logit minus its second, per stored input (float64)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(stored), batch_size):
            logits = student(decode(torch.from_numpy(stored[start:start + batch_size]))).float()
            top2 = logits.topk(2, dim=1).values
            out.append((top2[:, 0] - top2[:, 1]).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@ray.remote(num_cpus=1)
def _candidate_shard(card: StudentCard, weights: bytes, seed_images: np.ndarray, data: DataConfig, seed: int,
                     count: int, keep: int, shard: int) -> tuple[np.ndarray, ...]:
    """`count` generated inputs of one candidate shard; its `keep` least sure: (inputs, generator
    kinds, margins, places)."""
    torch.set_num_threads(1)  # one core per task (num_cpus=1)
    inputs, kinds = generate_inputs(seed_images, data, seed, count)
    student = student_from(card, weights)
    flat = inputs.reshape(len(inputs), -1)
    m = margins(student, space.decode_module(card.input_space, card.input_shape, card.parameters), flat)
    place = shard * count + np.arange(count, dtype=np.int64)
    best = np.lexsort((place, m))[:keep]
    return inputs[best], kinds[best], m[best], place[best]


def least_sure(card: StudentCard, weights: bytes, seed_images: np.ndarray, data: DataConfig, round_: int,
               count: int, pool: int) -> Proposal:
    """The `count` inputs, of `pool * count` generated for round `round_`, whose margin under the
    student is smallest (smallest first). Ray must be initialized."""
    per = data.samples_per_shard
    shards = -(-pool * count // per)
    weights_ref, seed_ref = ray.put(weights), ray.put(seed_images)
    refs = [_candidate_shard.remote(card, weights_ref, seed_ref, data, shard_seed(data.seed, f"adapt-{round_}", i),
                                    per, min(count, per), i) for i in range(shards)]
    inputs, kinds, m, place = (np.concatenate(column) for column in zip(*ray.get(refs)))
    best = np.lexsort((place, m))[:count]
    none = np.full(len(best), -1, np.int64)  # made from no stored row
    return Proposal(inputs[best], np.full(len(best), PROPOSAL_KINDS.index(LEAST_SURE), np.int8), none, none,
                    kinds[best].astype(np.int8))
