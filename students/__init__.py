"""Students: architectures (a registry), the distillation LightningModule, losses and output scaling.

Knows nothing of Ray or Parquet. The LightningModule and the losses are imported on first use, so
naming a student (the registry) does not import Lightning."""

from students.models import STUDENTS, register_student
from students import fno, unet  # noqa: F401  (field-to-field students register themselves on import)

__all__ = ["LOSSES", "STUDENTS", "DistillationModule", "kl_loss", "mse_loss", "register_student"]


def __getattr__(name: str):
    if name == "DistillationModule":
        from students.module import DistillationModule

        return DistillationModule
    if name in ("LOSSES", "kl_loss", "mse_loss"):
        from students import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'students' has no attribute {name!r}")
