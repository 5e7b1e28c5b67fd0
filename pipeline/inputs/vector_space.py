"""The vector input space as an object (pipeline/inputs/space.py): points of a box of named
parameters (pipeline/inputs/vectors.py), stored float32 in physical units, decoded to [-1, 1] per
parameter, shown as name=value text; active rounds propose points around the worst rows."""

from __future__ import annotations

from pipeline.errors import ConfigError, UserError
from pipeline.inputs import vectors
from pipeline.inputs.space import InputSpace, register_space


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class VectorSpace(InputSpace):
    name = vectors.NAME
    stored_item_bytes = 4

    def check_config(self, cfg) -> None:
        d = cfg.data
        _check(len(d.parameters) >= 1, "data.space vectors needs data.parameters: a list of {name, low, high}.")
        names = [p.name for p in d.parameters]
        _check(len(set(names)) == len(names), f"data.parameters names must differ, got {names}.")
        for p in d.parameters:
            _check(p.low < p.high, f"data.parameters {p.name}: low must be below high, got low {p.low} and high {p.high}.")
            _check(not p.log or p.low > 0, f"data.parameters {p.name}: a log-scale range must be positive, got low {p.low}.")
        if d.sampler == "grid":
            _check(d.grid_points >= 2, f"data.grid_points must be at least 2 for sampler grid, got {d.grid_points}.")
            size = d.grid_points ** len(d.parameters)
            _check(d.shards * d.samples_per_shard >= size,
                   f"data.shards x data.samples_per_shard ({d.shards * d.samples_per_shard}) must cover the "
                   f"grid's {size} points.")
        _check(cfg.teacher.kind != "auto" or cfg.teacher.checkpoint is not None,
               "data.space vectors has no seed data to train a teacher on: give teacher.kind callable (a simulator) "
               "or teacher.checkpoint.")

    def probe_inputs(self, cfg, rows: int):
        return vectors.sample_points(vectors.box_of(cfg.data.parameters), "sobol", cfg.data.seed, rows)

    def card_parameters(self, cfg) -> list[dict]:
        return vectors.box_dicts(vectors.box_of(cfg.data.parameters))

    def generation(self, cfg, seed_images, split: str, seed: int, count: int, index: int, recipes: bool = False):
        # Held-out points are Sobol points whatever the training sampler: off any grid.
        sampler = cfg.data.sampler if split == "train" else "sobol"
        return vectors.generate_vectors, (vectors.box_of(cfg.data.parameters), sampler, seed, count, index,
                                          cfg.data.grid_points)

    def decode_module(self, shape, parameters):
        if not parameters:
            raise UserError("a vector input space needs its parameters (name, low, high, log) to scale inputs.")
        return vectors.BoxScale(vectors.box_of_dicts(parameters))

    def numpy_decoder(self, shape):
        return vectors.decode_numpy

    def propose_around(self, cfg, worst, sample_ids, teacher_classes, count, round_, seed):
        from pipeline.inputs.proposals import propose_vectors

        return propose_vectors(worst, sample_ids, count, cfg.adapt, vectors.box_of(cfg.data.parameters), round_, seed)


VECTORS = register_space(VectorSpace())
