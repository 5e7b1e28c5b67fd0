"""Student and training defaults for fields in, fields out: a Fourier neural operator, trained for
a fixed number of optimizer steps whatever the label count (so a small table is trained as long as
a large one, and a large one at least MIN_EPOCHS passes).

Why these: a field student sees every grid point of every sample in each step, so far fewer,
smaller batches than a vector MLP's fit the same compute; the FNO's published setups train ~500
epochs of 1,000 samples at batch 20 (~25k steps). A width of 32 with the space's default modes
keeps one step of a batch of 32 fields of 256 points in the tens of milliseconds on two CPU cores.
"""

from __future__ import annotations

STUDENT = {"width": 32, "depth": 4, "activation": None}  # a neural operator has its own nonlinearity
BATCH_SIZE, LR, PATIENCE = 32, 3e-3, 30
TARGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 20_000, 20, 2_000


def field_training_defaults(cfg, labels: int) -> dict:
    f = cfg.data.fields
    batch = cfg.train.batch_size or BATCH_SIZE
    steps_per_epoch = max(1, labels // batch)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps_per_epoch)))
    grid = "x".join(str(n) for n in f.grid)
    why = (f"field defaults for {len(f.channels)}-channel fields on a {grid} grid and {labels:,} labels: "
           f"a neural operator's sizes, about {TARGET_STEPS:,} optimizer steps at batch {batch}")
    return {"student": dict(STUDENT),
            "train": {"max_epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR, "patience": PATIENCE},
            "why": why}
