"""The task registry: every task edgecell knows, by the name a model's metadata gives it.

The contract every task meets is written in `edgecell.tasks.base` (`Task`, `TaskResult`). The
pipeline (`edgecell.pipeline`), `load_model`, `edgecell eval`, the converter and the benchmarks
read this one registry; none of them lists tasks itself.

Adding a task: write `edge/tasks/NAME.py` with a `Task` subclass (and its `TaskResult`
dataclass), then add its instance to `TASKS` below (one line, with its import). The contract test
(`tests/tasks/test_contract.py`) then runs it like every other task.
"""

from __future__ import annotations

from edgecell.errors import ModelError
from edgecell.tasks.base import RunningSummary, Task, TaskResult
from edgecell.tasks.cells import CellsTask
from edgecell.tasks.classify import ClassifyTask
from edgecell.tasks.gate import GateTask
from edgecell.tasks.raw import RawTask
from edgecell.tasks.rbc import RbcTask
from edgecell.tasks.xray import XrayTask

#: name -> task (one line per task)
TASKS: dict[str, Task] = {task.name: task for task in (
    CellsTask(),
    ClassifyTask("classify"),
    ClassifyTask("products"),
    XrayTask(),
    GateTask(),
    RawTask(),
    RbcTask(),
)}

__all__ = ["TASKS", "RunningSummary", "Task", "TaskResult", "get_task", "task_names"]


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> Task:
    """The task called `name`; a clear error lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise ModelError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None
