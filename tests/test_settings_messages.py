"""A setting refused by sqlatasks' own check reads as one clean sentence: without the
"Value error, " that pydantic puts before a validator's message (cold review)."""

from __future__ import annotations

import pytest

from sqlatasks import ConfigurationError
from sqlatasks.runner import main as runner_main
from sqlatasks.settings import Settings

URL = "postgresql+asyncpg://u:p@127.0.0.1:1/db"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"queues": "mail=0"},
            "invalid --queue (SQLATASKS_QUEUES): a queue is NAME or NAME=LIMIT with LIMIT >= 1, "
            "not 'mail=0'",
        ),
        ({"database_url": "mysql://x/y"}, "invalid --database-url (SQLATASKS_DATABASE_URL): "),
        ({"lease": 1, "check_interval": 5}, "invalid --lease (SQLATASKS_LEASE): "),
    ],
)
def test_a_validators_message_has_no_pydantic_prefix(
    override: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(**{"database_url": URL, **override})
    assert str(caught.value).startswith(message)
    assert "Value error" not in str(caught.value)


def test_the_runners_flag_error_has_none_either(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner_main(["--database-url", URL, "--queue", "mail=0"]) == 2
    err = capsys.readouterr().err
    assert "invalid --queue (SQLATASKS_QUEUES): a queue is NAME or NAME=LIMIT" in err
    assert "Value error" not in err


@pytest.mark.parametrize("interval", [0.0001, 0.05])
def test_a_throughput_interval_under_the_floor_is_refused(interval: float) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(database_url=URL, throughput_interval=interval)
    assert str(caught.value) == (
        "invalid --throughput-interval (SQLATASKS_THROUGHPUT_INTERVAL): 0 (not counted) or at "
        f"least 0.1 seconds, got {interval:g}"
    )


@pytest.mark.parametrize("interval", [0, 0.1, 10])
def test_off_and_intervals_from_the_floor_are_taken(interval: float) -> None:
    assert Settings.load(database_url=URL, throughput_interval=interval).throughput_interval == (
        interval
    )
