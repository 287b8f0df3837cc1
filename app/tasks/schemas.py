"""The task's data shapes: the DTO every layer passes around, and the rules for a name.

`Task` is plain data (never an ORM object) so that it can be cached as JSON and returned
by the API as it is.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

NAME_MAX_LENGTH = 500
NAME_REQUIRED = "Task name is required."
NAME_TOO_LONG = f"Task name must be at most {NAME_MAX_LENGTH} characters."
NAME_NOT_ONE_LINE = "Task name must be one line, without tabs or other control characters."
NAME_NOT_UNICODE = "Task name contains invalid Unicode (a lone surrogate)."

# Control characters (C0, DEL, C1: NUL, tab, newline...) and the Unicode line and paragraph
# separators: a name is one line of text, and PostgreSQL cannot store NUL at all.
_NOT_ONE_LINE = frozenset(("Cc", "Zl", "Zp"))


class InvalidTaskName(ValueError):
    """A task name that is blank, too long or not one line of text; the message is meant
    for the user."""


def clean_name(value: str) -> str:
    """Return the name trimmed, or raise `InvalidTaskName` with a message for the user.

    Checked here so that every database gets the same names: SQLite would store a NUL that
    PostgreSQL refuses, and a lone surrogate (what a JSON `\\ud800` escape decodes to)
    cannot be encoded for either."""
    name = value.strip()
    if not name:
        raise InvalidTaskName(NAME_REQUIRED)
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidTaskName(NAME_TOO_LONG)
    categories = {unicodedata.category(char) for char in name}
    if "Cs" in categories:
        raise InvalidTaskName(NAME_NOT_UNICODE)
    if not categories.isdisjoint(_NOT_ONE_LINE):
        raise InvalidTaskName(NAME_NOT_ONE_LINE)
    return name


def _validate_name(value: str) -> str:
    try:
        return clean_name(value)
    except InvalidTaskName as error:
        raise PydanticCustomError("task_name", str(error)) from None


TaskName = Annotated[
    StrictStr,
    AfterValidator(_validate_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH},
        mode="validation",
    ),
]


class Task(BaseModel):
    """One task, as stored."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    done: bool
    created_at: datetime
    updated_at: datetime

    @property
    def cache_version(self) -> str:
        """Changes whenever the task does: the version of its cached row fragment."""
        return f"{self.id}.{self.updated_at.timestamp():.6f}.{int(self.done)}"

    def to_data(self) -> dict[str, Any]:
        """JSON-able form, for the cache and the API."""
        return self.model_dump(mode="json")


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TaskName


class TaskUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TaskName | None = None
    done: StrictBool | None = None
