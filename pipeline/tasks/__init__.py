"""Tasks: what a target is and how closeness is measured, one module per kind (pipeline/tasks/task.py).

`get_task(name)` is the run's task object; importing this package registers the kinds below."""

from pipeline.tasks import classification, regression  # noqa: F401  (each registers its kind)
from pipeline.tasks.task import TASKS, Figure, Task, lookup as get_task

__all__ = ["TASKS", "Figure", "Task", "get_task"]
