"""Training objectives, one class each, behind the :class:`~recmtl.tasks.base.Task` interface."""

from __future__ import annotations

from recmtl.data.tensors import TrainData
from recmtl.tasks.base import Task, TaskBatch, TaskOptions
from recmtl.tasks.bpr_tasks import CobuyTask, CoviewTask, RecTask, SocialTask
from recmtl.tasks.other_tasks import AlignTask, CategoryTask, RatingTask, UniformTask

#: task name -> class; ``rec`` is the main task (index 0), the others are ``--aux`` names.
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (RecTask, SocialTask, CategoryTask, CoviewTask, CobuyTask, AlignTask, UniformTask, RatingTask)
}


def build_tasks(aux: tuple[str, ...], data: TrainData, options: TaskOptions) -> list[Task]:
    """[rec, *aux] as Task objects; a task whose table is missing raises a one-line RecmtlError."""
    return [TASKS[name](data, options) for name in ("rec", *aux)]


__all__ = ["TASKS", "Task", "TaskBatch", "TaskOptions", "build_tasks"]
