"""Students: architectures (a registry) and the distillation LightningModule.

Knows nothing of Ray or Parquet."""

from students.losses import LOSSES, kl_loss, mse_loss
from students.models import STUDENTS, register_student
from students.module import DistillationModule

__all__ = ["LOSSES", "STUDENTS", "DistillationModule", "kl_loss", "mse_loss", "register_student"]
