"""Tasks: one module per application (classify, tag, lm, forecast), behind one interface.

`rnnkit.tasks.base` holds `Task`, `Run`, `TaskError`, the registry and run loading; each task
module (`rnnkit.tasks.<name>`) defines `TASK = Task(...)` and is imported only when asked for.
The command line (`rnnkit.cli`) is a thin layer over these; docs/cli.md describes both.
"""

from rnnkit.tasks.base import (
    Run,
    Task,
    TaskError,
    available_tasks,
    get_task,
    load,
    load_run,
    task_names,
)

__all__ = [
    "Run",
    "Task",
    "TaskError",
    "available_tasks",
    "get_task",
    "load",
    "load_run",
    "task_names",
]
