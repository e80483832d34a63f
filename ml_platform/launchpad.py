"""Launchpad config, checked before a step does any work.

Each configurable asset declares its config once, as a pydantic model with bounds and formats
(``strict``). The launchpad gets a form built from it: the same fields, types, defaults and
descriptions, without the checks. The step validates the form's values against the strict model
first thing, and a bad value fails it with a ``Failure`` that names the field, the value and the
allowed form: the run's failure headline, not retried. (Checked while Dagster builds the config
object instead, the same error would surface as a stack trace inside a generic step error.)

A field whose allowed values can be listed (``choices``: the days a cutoff may be) is an Enum in
the form, which Dagster checks when a run is launched: a value outside it starts no run at all.
That matters for the assets downstream of the step: Dagster plans every asset of a run when it
creates the run, and shows each one it planned and the failed run did not materialize as failed.
"""

from collections.abc import Mapping
from datetime import date, timedelta
from enum import Enum, StrEnum
from typing import Any, TypeVar

from dagster import Config, Failure, MetadataValue
from pydantic import BaseModel, Field, ValidationError, create_model

M = TypeVar("M", bound=BaseModel)


def day_choices(first: date, last: date) -> type[StrEnum]:
    """The days ``first`` .. ``last`` (inclusive), as a choice for ``launchpad_form``. Its name is
    the allowed form, which Dagster quotes when it refuses a value: ``Value at path
    root:ops:…:config:cutoff not in enum type a day from 2013-01-01 to 2013-12-31 (YYYY-MM-DD)
    got 2013-13-01``."""
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return StrEnum(f"a day from {first} to {last} (YYYY-MM-DD)", [(day, day) for day in days])


def launchpad_form(
    strict: type[BaseModel], name: str | None = None, choices: Mapping[str, type[StrEnum]] | None = None
) -> type[Config]:
    """The Dagster config class the launchpad shows for ``strict``; a field in ``choices`` takes
    one of its values (its default dropped if it is not one of them)."""
    fields: dict[str, Any] = {}
    for field_name, info in strict.model_fields.items():
        default = ... if info.is_required() else info.default
        annotation = info.annotation
        if choice := (choices or {}).get(field_name):
            annotation = choice
            default = choice(default) if default in choice.__members__ else ...
        if default is not ...:
            # Dagster's schema takes null for a field with a default; the strict model refuses it.
            annotation = annotation | None
        fields[field_name] = (annotation, Field(default=default, description=info.description))
    return create_model(name or strict.__name__, __base__=Config, **fields)


def problems_of(error: ValidationError) -> list[str]:
    """One line per refused field: ``field: what is wrong (got value)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message} (got {item['input']!r})")
    return lines


def checked(strict: type[M], form: BaseModel, where: str) -> M:
    """``form``'s values validated against ``strict``, or a ``Failure`` naming every bad field."""
    try:
        values = {k: v.value if isinstance(v, Enum) else v for k, v in form.model_dump().items()}
        return strict.model_validate(values)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise Failure(
            description=f"{where}: launchpad config refused: {'; '.join(problems)}",
            metadata={"refused_fields": MetadataValue.json(problems)},
            allow_retries=False,
        ) from None
