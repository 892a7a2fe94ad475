"""ProgressError's message names the progress value, never "the payload".

Found by a cold review: a NUL character in a top-level key of a reported dict was said to be
"in the payload (a key, ...)", the words of enqueue()'s payload check.
"""

from __future__ import annotations

import uuid

import pytest

from sqlatasks import ProgressError
from sqlatasks.context import TaskRun


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("a\x00b", "in the value,"),
        ({"a\x00": 1}, "in the value (a key, 'a\\x00')"),
        ({"rows": {"b\x00": 1}}, "in rows (a key, 'b\\x00')"),
    ],
)
def test_a_nul_is_placed_in_the_value(value: object, where: str) -> None:
    run = TaskRun(1, "reporter", "default", 1, None, uuid.uuid4())
    with pytest.raises(ProgressError) as caught:
        run.report(value)
    assert where in caught.value.problem
    assert "payload" not in str(caught.value)
