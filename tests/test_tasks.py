from __future__ import annotations

from typing import Any

import pytest

from sqlatasks import PayloadError, TaskDefinitionError, TaskNameTaken, registry, task
from tests.tasks_for_tests import Greeting, Other, greet, greet_renamed, refuse


def test_name_is_module_and_qualname() -> None:
    assert greet.name == "tests.tasks_for_tests:greet"
    assert registry.get("tests.tasks_for_tests:greet") is greet
    assert greet.model is Greeting


def test_options_and_explicit_name() -> None:
    assert greet_renamed.name == "greetings.v2"
    assert registry.get("greetings.v2") is greet_renamed
    assert (greet_renamed.queue, greet_renamed.priority) == ("mail", 5)
    assert (greet_renamed.timeout, greet_renamed.retry_delay, greet_renamed.max_attempts) == (
        12,
        3,
        4,
    )


async def test_a_task_is_still_callable_directly() -> None:
    assert await greet(Greeting(name="x")) is None
    with pytest.raises(ValueError, match="no greeting for x"):  # the call reaches the body
        await refuse(Greeting(name="x"))


def test_sync_function_is_refused() -> None:
    def sync(data: Greeting) -> None: ...

    with pytest.raises(TaskDefinitionError, match="must be an `async def`"):
        task(sync)  # type: ignore[arg-type]


def test_missing_annotation_is_refused() -> None:
    async def bare(data) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(TaskDefinitionError, match="annotate 'data' with the pydantic model"):
        task(bare)


def test_non_pydantic_annotation_is_refused() -> None:
    async def wrong(data: dict[str, Any]) -> None: ...

    with pytest.raises(TaskDefinitionError, match="must be a pydantic BaseModel subclass"):
        task(wrong)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        # A second required argument is allowed only as the session (docs/exactly-once.md).
        ("extra_required", "second parameter must be annotated AsyncSession"),
        ("keyword_only", "takes one required argument, its pydantic payload"),
        ("none", "takes one required argument, its pydantic payload"),
    ],
)
def test_anything_but_one_required_argument_is_refused(shape: str, problem: str) -> None:
    async def extra_required(data: Greeting, other: int) -> None: ...
    async def keyword_only(data: Greeting, *, flag: bool) -> None: ...
    async def none() -> None: ...

    fn = {"extra_required": extra_required, "keyword_only": keyword_only, "none": none}[shape]
    with pytest.raises(TaskDefinitionError, match=problem):
        task(fn)  # type: ignore[call-overload]


def test_function_in_main_is_refused() -> None:
    async def in_main(data: Greeting) -> None: ...

    in_main.__module__ = "__main__"
    in_main.__qualname__ = "in_main"
    with pytest.raises(TaskDefinitionError, match="defined in __main__"):
        task(in_main)


def test_nested_function_without_name_is_refused() -> None:
    async def nested(data: Greeting) -> None: ...

    with pytest.raises(TaskDefinitionError, match="inside another function"):
        task(nested)


def test_a_taken_name_is_refused() -> None:
    async def impostor(data: Greeting) -> None: ...

    with pytest.raises(TaskNameTaken, match=r"'greetings\.v2' is already registered"):
        task(name="greetings.v2")(impostor)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"priority": 40000}, "priority must be an integer"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": float("inf")}, "timeout must be a positive number"),
        ({"retry_delay": -1}, "retry_delay must be zero or a positive"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    async def fine(data: Greeting) -> None: ...

    with pytest.raises(TaskDefinitionError, match=message):
        task(name="options.test", **options)(fine)


def test_payload_of_the_wrong_model_is_refused() -> None:
    with pytest.raises(PayloadError, match="expected Greeting, got Other"):
        greet.dump(Other(value=1))  # type: ignore[arg-type]


def test_invalid_payload_values_are_refused() -> None:
    with pytest.raises(PayloadError, match="name"):
        greet.dump({"name": "", "times": 1})
    with pytest.raises(PayloadError, match="times"):
        greet.dump({"name": "a", "times": "many"})


def test_payload_round_trips_as_json() -> None:
    text = greet.dump(Greeting(name="a", times=2))
    assert text == '{"name":"a","times":2}'
    assert greet.load(text) == Greeting(name="a", times=2)
    with pytest.raises(PayloadError):
        greet.load('{"times": 2}')


def test_something_that_is_no_model_is_refused() -> None:
    class NotAModel:
        pass

    with pytest.raises(PayloadError, match="or a mapping, got NotAModel"):
        greet.dump(NotAModel())  # type: ignore[arg-type]
    # A mapping is no model either, and is accepted: validated into the task's model.
    assert greet.dump({"name": "a"}) == '{"name":"a","times":1}'
    with pytest.raises(PayloadError, match="or a mapping, got list"):
        greet.dump([("name", "a")])  # type: ignore[arg-type]
