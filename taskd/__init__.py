"""taskd: a distributed task scheduler."""

from taskd.errors import NonRetryableError
from taskd.registry import TaskContext, task

__all__ = ["NonRetryableError", "TaskContext", "task"]
__version__ = "0.1.0"
