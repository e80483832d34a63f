"""Launchpad config, checked before a step does any work.

Each configurable asset declares its config once, as a pydantic model with bounds and formats
(``strict``). The launchpad gets a form built from it: the same fields, types, defaults and
descriptions, without the checks. The step validates the form's values against the strict model
first thing, and a bad value fails it with a ``Failure`` that names the field, the value and the
allowed form: the run's failure headline, not retried. (Checked while Dagster builds the config
object instead, the same error would surface as a stack trace inside a generic step error.)
"""

from typing import Any, TypeVar

from dagster import Config, Failure, MetadataValue
from pydantic import BaseModel, Field, ValidationError, create_model

M = TypeVar("M", bound=BaseModel)


def launchpad_form(strict: type[BaseModel], name: str | None = None) -> type[Config]:
    """The Dagster config class the launchpad shows for ``strict``."""
    fields: dict[str, Any] = {}
    for field_name, info in strict.model_fields.items():
        default = ... if info.is_required() else info.default
        fields[field_name] = (info.annotation, Field(default=default, description=info.description))
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
        return strict.model_validate(form.model_dump())
    except ValidationError as exc:
        problems = problems_of(exc)
        raise Failure(
            description=f"{where}: launchpad config refused: {'; '.join(problems)}",
            metadata={"refused_fields": MetadataValue.json(problems)},
            allow_retries=False,
        ) from None
