"""Tasks whose payloads test the round trip through JSON (tests/test_payload_round_trip.py).

Each task appends the payload it received to `received`; under the real runner (the ledger
folder set, tests/ledger.py) it also writes the payload's repr to the ledger.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.alias_generators import to_camel

from sqlatasks import task
from tests import ledger

received: list[BaseModel] = []


def _record(data: BaseModel) -> None:
    received.append(data)
    if ledger.ENV in os.environ:
        ledger.write("payload", repr=repr(data))


class Reading(BaseModel):
    ratio: float
    weights: dict[str, float] = {}


@task
async def measure(data: Reading) -> None:
    _record(data)


class LenientReading(BaseModel):
    """Opts in to non-finite floats: written as the strings "NaN", "Infinity"."""

    model_config = ConfigDict(ser_json_inf_nan="strings")
    ratio: float


@task
async def measure_leniently(data: LenientReading) -> None:
    _record(data)


class Letter(BaseModel):
    sender: str = Field(alias="from")
    to: str


class Person(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)
    first_name: str
    last_name: str


class Team(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel)
    team_name: str
    lead_person: Person


@task
async def post(data: Letter) -> None:
    _record(data)


@task
async def greet_team(data: Team) -> None:
    _record(data)


class Rectangle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int
    height: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> int:
        return self.width * self.height


class Floor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    room: Rectangle


class Upload(BaseModel):
    name: str
    token: str = Field(default="", exclude=True)


@task
async def paint(data: Rectangle) -> None:
    _record(data)


@task
async def furnish(data: Floor) -> None:
    _record(data)


@task
async def upload(data: Upload) -> None:
    _record(data)


class Animal(BaseModel):
    name: str


class Dog(Animal):
    breed: str


class Kennel(BaseModel):
    guest: Animal
    others: list[Animal] = []


@task
async def board(data: Kennel) -> None:
    _record(data)


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Fish(BaseModel):
    kind: Literal["fish"] = "fish"
    fresh_water: bool


class Tank(BaseModel):
    pets: list[Annotated[Cat | Fish, Field(discriminator="kind")]]


@task
async def feed(data: Tank) -> None:
    _record(data)


class Note(BaseModel):
    text: str = ""
    labels: dict[str, str] = {}
    blob: bytes = b""
    extra: Any = None


@task
async def note(data: Note) -> None:
    _record(data)
