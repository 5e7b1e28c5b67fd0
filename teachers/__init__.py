"""Teachers: architectures, seed datasets, training, and loading a teacher from its checkpoint.

Knows nothing of Ray or Parquet."""

from teachers.checkpoint import TeacherCard, build_teacher, fingerprint_of, weights_to_bytes
from teachers.datasets import SeedData, load_seed_dataset
from teachers.models import TEACHERS, register_teacher
from teachers.registry import count_parameters
from teachers.train import accuracy, to_float, train_teacher

__all__ = [
    "TEACHERS", "SeedData", "TeacherCard", "accuracy", "build_teacher", "count_parameters", "fingerprint_of",
    "load_seed_dataset", "register_teacher", "to_float", "train_teacher", "weights_to_bytes",
]
