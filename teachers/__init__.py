"""Teachers: built-in architectures, the card, weights on disk, wrappers for every kind, fitting.

Knows nothing of Ray or Parquet."""

from teachers.card import KINDS, TeacherCard, compute_fingerprint
from teachers.models import TEACHERS, register_teacher
from teachers.registry import count_parameters
from teachers.train import accuracy, train_teacher
from teachers.weights import load_weights_strictly, state_dict_from_bytes, weights_to_bytes
from teachers.wrappers import CallableTeacher, OnnxTeacher, TorchTeacher

__all__ = [
    "KINDS", "TEACHERS", "CallableTeacher", "OnnxTeacher", "TeacherCard", "TorchTeacher", "accuracy",
    "compute_fingerprint", "count_parameters", "load_weights_strictly", "register_teacher",
    "state_dict_from_bytes", "train_teacher", "weights_to_bytes",
]
