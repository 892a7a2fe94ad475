import sqlatasks


def test_all_is_the_public_api_sorted() -> None:
    assert sqlatasks.__all__ == [
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
    assert sqlatasks.__all__ == sorted(sqlatasks.__all__)
    for name in sqlatasks.__all__:
        assert hasattr(sqlatasks, name), f"__all__ names {name}, which sqlatasks lacks"


def test_every_error_derives_from_the_root() -> None:
    for name in sqlatasks.__all__:
        obj = getattr(sqlatasks, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, sqlatasks.SqlatasksError)
