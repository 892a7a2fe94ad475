"""Background tasks for async Python, with PostgreSQL as the queue and SQLAlchemy 2 as the way in.

    @task
    async def send_email(data: EmailInput) -> None: ...

    async with Session() as session, session.begin():
        session.add(Order(...))
        session.add(enqueue(send_email, EmailInput(to="a@b.c", subject="hi")))

Run the service with `python -m sqlatasks.runner --import myapp.tasks`.
"""

from sqlatasks.context import TaskRun, current_task
from sqlatasks.enqueue import enqueue, enqueue_many
from sqlatasks.errors import (
    ConfigurationError,
    GiveUp,
    InvalidOption,
    PayloadError,
    ProgressError,
    ScheduleError,
    SchemaError,
    Snooze,
    SqlatasksError,
    TaskDefinitionError,
    TaskNameTaken,
    TaskNotRegistered,
)
from sqlatasks.models import QueuedTask
from sqlatasks.operations import (
    cancel,
    delete_failed,
    failed_tasks,
    pause_queue,
    queue_settings,
    queue_stats,
    resume_queue,
    retry_failed,
    set_queue_limits,
)
from sqlatasks.registry import Schedule
from sqlatasks.schema_check import check_schema, check_schema_sync
from sqlatasks.status import TaskInfo, get_task, get_task_by_key, kept_counts
from sqlatasks.tasks import Task, periodic, task
from sqlatasks.waiting import wait_for

__all__ = [
    "ConfigurationError",
    "GiveUp",
    "InvalidOption",
    "PayloadError",
    "ProgressError",
    "QueuedTask",
    "Schedule",
    "ScheduleError",
    "SchemaError",
    "Snooze",
    "SqlatasksError",
    "Task",
    "TaskDefinitionError",
    "TaskInfo",
    "TaskNameTaken",
    "TaskNotRegistered",
    "TaskRun",
    "cancel",
    "check_schema",
    "check_schema_sync",
    "current_task",
    "delete_failed",
    "enqueue",
    "enqueue_many",
    "failed_tasks",
    "get_task",
    "get_task_by_key",
    "kept_counts",
    "pause_queue",
    "periodic",
    "queue_settings",
    "queue_stats",
    "resume_queue",
    "retry_failed",
    "set_queue_limits",
    "task",
    "wait_for",
]
