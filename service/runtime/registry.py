"""The registered tasks, all of them: importing this imports every task module.

Each module under `service/runtime/tasks/` registers itself with `@task(...)`
(`service/runtime/task.py`); nothing else lists tasks.
"""

from __future__ import annotations

import importlib
import pkgutil

from service.runtime import tasks as _tasks
from service.runtime.task import TASKS, ExportFacts, HttpRoute, TaskSpec

for _module in pkgutil.iter_modules(_tasks.__path__):
    importlib.import_module(f"{_tasks.__name__}.{_module.name}")

__all__ = ["TASKS", "ExportFacts", "HttpRoute", "TaskSpec"]
