"""A payload as JSON text that a worker loads back equal to what was given, or PayloadError.

`dump` writes a payload the way `load` reads it: keys by alias (`Field(alias=...)`, an
`alias_generator`), computed fields left out (the worker computes them again; a model with
`extra="forbid"` would refuse them), `Json[...]` fields as JSON text. `load` accepts keys by
alias or by field name, so rows written before keys went by alias still load.

Then `dump` loads its own text back and compares it with the payload it was given, so that
whatever JSON cannot carry is refused at enqueue, naming the field, instead of parking the task
at run time or reaching the worker changed: a float `nan` or `inf` (JSON `null`), a field with
`exclude=True` holding anything but its default, an instance of a subclass where the field
declares its base (it would load as the base, without the subclass's fields), a tuple or a set
in an untyped field (a list), a `"\\x00"` anywhere (PostgreSQL's jsonb refuses `\\u0000`), text
that is not UTF-8. Equal means Python's `==`, field by field: an aware datetime comes back at
a fixed UTC offset (the same instant, so equal), and a NaN that the model stores as a string
(`ser_json_inf_nan="strings"`) counts as equal to itself. Private attributes are not part of a
payload. docs/payload-evolution.md lists what JSON and jsonb change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import pydantic
import pydantic_core

from sqlatasks import errors

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_NUL_ESCAPE = "\\u0000"  # how JSON writes "\x00"; jsonb refuses it


def validated(task_name: str, model: type[ModelT], payload: object) -> ModelT:
    """`payload` as a `model` instance (validated if it is a mapping), or PayloadError."""
    if isinstance(payload, model):
        return payload
    if isinstance(payload, pydantic.BaseModel):
        raise errors.PayloadError(
            task_name=task_name,
            problem=f"expected {model.__name__}, got {type(payload).__name__}",
        )
    if isinstance(payload, Mapping):
        try:
            return model.model_validate(payload, by_alias=True, by_name=True)
        except pydantic.ValidationError as exc:
            raise errors.PayloadError(task_name=task_name, problem=str(exc)) from exc
    raise errors.PayloadError(
        task_name=task_name,
        problem=f"expected {model.__name__} or a mapping, got {type(payload).__name__}",
    )


def dump(task_name: str, model: type[ModelT], payload: object) -> str:
    """The payload as JSON text that `load` turns back into an equal `model`; else PayloadError
    naming the field that would not survive, raised before anything reaches the database."""
    given = validated(task_name, model, payload)
    try:
        text = given.model_dump_json(by_alias=True, exclude_computed_fields=True, round_trip=True)
    except pydantic_core.PydanticSerializationError as exc:
        raise errors.PayloadError(
            task_name=task_name,
            problem=f"field {_unserialisable(given)} cannot be written as JSON: {exc}",
        ) from exc
    path = nul_path(text)
    if path is not None:
        raise errors.PayloadError(
            task_name=task_name,
            problem=f"field {path} contains a NUL character (\\x00), which PostgreSQL "
            "cannot store in JSON; remove it or encode the value",
        )
    try:
        loaded = load(model, text)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise errors.PayloadError(
            task_name=task_name,
            problem=f"field {_loc(first['loc'])} would not load back from its JSON "
            f"({json.dumps(first.get('input'))}): {first['msg']}",
        ) from exc
    # One cheap comparison first, for the payloads that round-trip, which is nearly all
    # (BaseModel's own `==` costs as much again: it also compares private attributes).
    if not (
        type(loaded) is type(given)
        and loaded.__dict__ == given.__dict__
        and loaded.__pydantic_extra__ == given.__pydantic_extra__
    ):
        problem = difference(given, loaded, "")
        if problem is not None:
            raise errors.PayloadError(task_name=task_name, problem=problem)
    return text


def load(model: type[ModelT], text: str) -> ModelT:
    """The payload from its JSON text; keys by alias or by field name. Raises ValidationError."""
    return model.model_validate_json(text, by_alias=True, by_name=True)


def model_problem(model: type[pydantic.BaseModel]) -> str | None:
    """Why no payload of `model` could ever load back from JSON, or None.

    A required field with `exclude=True` is never written; a field written under a key that
    its validation alias does not accept is never read back.
    """
    for name, field in model.model_fields.items():
        if field.exclude is True and field.is_required():
            return (
                f"{model.__name__}.{name} is required but excluded from serialisation "
                "(exclude=True): a worker could never load it; give it a default or drop "
                "exclude=True"
            )
        written = field.serialization_alias or field.alias or name
        read = field.validation_alias if field.validation_alias is not None else field.alias
        if isinstance(read, str | None) and written not in (name, read or name):
            return (
                f"{model.__name__}.{name} is written under {written!r} but read from "
                f"{read!r}: give it one alias (alias=...)"
            )
    return None


def difference(given: Any, loaded: Any, path: str) -> str | None:
    """Where `loaded` differs from `given`, as a sentence naming the field; None if equal."""
    where = f"field {path}" if path else "the payload"
    if isinstance(given, pydantic.BaseModel):
        if type(loaded) is not type(given):
            return (
                f"{where} is a {type(given).__name__}, which loads back as "
                f"{type(loaded).__name__} (a subclass's fields and type do not survive JSON); "
                "pass the declared model, or declare the subclass or a union"
            )
        for name in type(given).model_fields:
            found = difference(getattr(given, name), getattr(loaded, name), _join(path, name))
            if found is not None:
                return found
        return difference(given.model_extra or {}, loaded.model_extra or {}, path)
    if isinstance(given, dict):
        if not isinstance(loaded, dict) or given.keys() != loaded.keys():
            return _changed(where, given, loaded)
        for key, value in given.items():
            found = difference(value, loaded[key], f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(given, list | tuple):
        if type(loaded) is not type(given) or len(loaded) != len(given):
            return _changed(where, given, loaded)
        for index, (item, back) in enumerate(zip(given, loaded, strict=True)):
            found = difference(item, back, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if _same(given, loaded) else _changed(where, given, loaded)


def _same(given: Any, loaded: Any) -> bool:
    try:
        if bool(given == loaded):
            return True
    except Exception:  # an `==` that raises (an array's) cannot tell: trust the type
        return type(loaded) is type(given)
    if type(loaded) is not type(given):
        return False
    # A NaN the model stores faithfully (as a string) is the value given; and a type without
    # its own `==` compares identity, which no copy passes: neither is a difference.
    nan = isinstance(given, float | Decimal) and math.isnan(given) and math.isnan(loaded)
    return nan or type(given).__eq__ is object.__eq__  # type: ignore[comparison-overlap]


def _changed(where: str, given: Any, loaded: Any) -> str:
    return f"{where} would load back changed: {_short(given)} becomes {_short(loaded)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def nul_path(text: str) -> str | None:
    """Where JSON text holds a string with "\\x00", which PostgreSQL's jsonb refuses; None
    when it holds none."""
    if _NUL_ESCAPE not in text:  # the common case: no need to parse
        return None
    return _nul_path(json.loads(text), "")


def result_json(adapter: pydantic.TypeAdapter[Any], value: Any) -> str | None:
    """What a task returned, as JSON text by its return annotation's `adapter` (None for None).

    Raises pydantic's PydanticSerializationError when the value does not fit the annotation's
    JSON form, and ValueError when JSON or jsonb cannot hold it: a NUL character (jsonb refuses
    `\\u0000`), or a float `nan` or `inf` that pydantic would write as JSON `null` (JSON has no
    NaN or Infinity, RFC 8259 section 6) — a model with `ser_json_inf_nan="strings"` or
    `"constants"` writes those itself, and is left alone.
    """
    if value is None:
        return None
    text = adapter.dump_json(value).decode()
    refuse_nul_in_result(text)
    if "null" in text:  # the common case, no null at all: no need to look
        path = _non_finite_path(value, "")
        if path is not None:
            raise ValueError(
                f"the result is not JSON: {path} is a float nan or inf, which JSON cannot "
                "carry (it would be stored as null); return None, a string, or a model with "
                'ser_json_inf_nan="strings"'
            )
    return text


def _non_finite_path(value: Any, path: str) -> str | None:
    """Where a float nan/inf sits in a result that pydantic writes as JSON null; None if none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "the value returned")
    if isinstance(value, pydantic.BaseModel):
        if type(value).model_config.get("ser_json_inf_nan", "null") != "null":
            return None  # the model writes NaN and Infinity itself
        items: list[tuple[str, Any]] = [(name, getattr(value, name)) for name in value.__dict__]
        items += list((value.model_extra or {}).items())
        return _first(_non_finite_path(item, _join(path, name)) for name, item in items)
    if isinstance(value, Mapping):
        return _first(_non_finite_path(item, f"{path}[{key!r}]") for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return _first(_non_finite_path(item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


def _first(found: Iterable[str | None]) -> str | None:
    return next((path for path in found if path is not None), None)


def refuse_nul_in_result(text: str) -> None:
    """ValueError when a task's result, as JSON text, holds a NUL character: PostgreSQL's
    jsonb refuses it, and the write of the result would fail."""
    path = nul_path(text)
    if path is not None:
        where = "" if path == "the payload" else f" at {path}"
        raise ValueError(
            f"the result contains a NUL character (\\x00){where}, which PostgreSQL cannot "
            "store in JSON"
        )


def _nul_path(value: Any, path: str) -> str | None:
    """The first place in decoded JSON (keys as written) where a string holds "\\x00"."""
    if isinstance(value, str):
        return (path or "the payload") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"{path or 'the payload'} (a key, {key!r})"
            found = _nul_path(item, _join(path, key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _unserialisable(model: pydantic.BaseModel, path: str = "") -> str:
    """The first field (into nested models) whose value pydantic cannot write as JSON."""
    for name in type(model).model_fields:
        try:
            model.model_dump_json(include={name}, by_alias=True, round_trip=True)
        except pydantic_core.PydanticSerializationError:
            value = getattr(model, name)
            if isinstance(value, pydantic.BaseModel):
                return _unserialisable(value, _join(path, name))
            return _join(path, name)
    return path or "of the payload"
