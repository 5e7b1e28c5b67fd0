"""Student and training defaults for fields in, fields out: a neural operator on periodic fields, a
U-Net on the others, trained for a fixed number of optimizer steps whatever the label count (so a
small table is trained as long as a large one, and a large one at least MIN_EPOCHS passes).

Why these:
- Periodic fields (a torus: Burgers on a circle) suit a Fourier neural operator, whose spectral
  layers assume periodicity. On a bounded domain (Darcy flow with u = 0 on the edge) that
  assumption is wrong at the boundary, and a U-Net's zero-padded convolutions see the edge as it is.
- Cost on CPUs (bench/operators.py --costs, 64 x 64 fields, batch 32, 2 cores): a step of a 2-D FNO
  (width 32, 12 modes) costs about 25 ms per sample, a U-Net of width 16 about 11, of width 8 about
  3.5. Given the same seconds on Darcy flow, the width-8 U-Net reached a lower held-out error than
  the width-16 one (more steps beat more channels at this budget), so it is the default.
- A field student sees every grid point of every sample in each step, so far fewer, smaller batches
  than a vector MLP's fit the same compute; the FNO's published setups train ~500 epochs of 1,000
  samples at batch 20 (~25k steps). A 2-D step holds 16 times the points of a 1-D one at 256, so
  2-D fields get fewer steps.
"""

from __future__ import annotations

STUDENTS = {"fno": {"width": 32, "depth": 4}, "unet": {"width": 8, "depth": 3}}
BATCH_SIZE, LR, PATIENCE = 32, 3e-3, 30
TARGET_STEPS = {1: 20_000, 2: 10_000}  # by the grid's number of axes
MIN_EPOCHS, MAX_EPOCHS = 20, 2_000


def default_arch(cfg) -> str:
    return "fno" if all(c.periodic for c in cfg.data.fields.channels) else "unet"


def field_training_defaults(cfg, labels: int) -> dict:
    f = cfg.data.fields
    arch = cfg.student.arch or default_arch(cfg)
    batch = cfg.train.batch_size or BATCH_SIZE
    target = TARGET_STEPS[min(2, len(f.grid))]
    steps_per_epoch = max(1, labels // batch)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(target / steps_per_epoch)))
    grid = "x".join(str(n) for n in f.grid)
    periodic = "periodic" if default_arch(cfg) == "fno" else "non-periodic"
    why = (f"field defaults for {len(f.channels)}-channel {periodic} fields on a {grid} grid and {labels:,} labels: "
           f"{'a neural operator' if arch == 'fno' else 'a U-Net' if arch == 'unet' else arch}'s sizes, "
           f"about {target:,} optimizer steps at batch {batch}")
    student = {"arch": arch, "activation": None}  # both have their own nonlinearity
    student |= STUDENTS.get(arch, STUDENTS["fno"])
    return {"student": student,
            "train": {"max_epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR, "patience": PATIENCE},
            "why": why}
