"""The task's data shapes: the DTO every layer passes around, and the rules for a name
and an id.

`Task` is plain data (never an ORM object) so that it can be cached as JSON and returned
by the API as it is.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

# The largest signed 64-bit integer: the most a BIGINT holds and an OFFSET takes.
MAX_BIGINT = 2**63 - 1
MAX_TASK_ID = MAX_BIGINT
NAME_MAX_LENGTH = 500
NAME_REQUIRED = "Task name is required."
NAME_TOO_LONG = f"Task name must be at most {NAME_MAX_LENGTH} characters."
NAME_NOT_ONE_LINE = "Task name must be one line, without tabs or other control characters."
NAME_NOT_UNICODE = "Task name contains invalid Unicode (a lone surrogate)."
NOTHING_TO_CHANGE = "Nothing to change: send name and/or done."

# Control characters (C0, DEL, C1: NUL, tab, newline, ESC...) and the Unicode line and
# paragraph separators: a name is one line of text, and PostgreSQL cannot store NUL at all.
_CONTROL = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
# The spaces trimmed from the ends (Unicode's Zs: all that `str.strip` removes, once the
# control characters are refused).
_SPACE = r"\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
# The name rule as /openapi.json states it: no control character anywhere, and at least one
# character that is not a space. Written with explicit classes, not `\s`, whose meaning
# differs between regex engines (Python, ECMA-262, Rust).
NAME_PATTERN = rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
_NOT_ONE_LINE = re.compile(f"[{_CONTROL}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def is_task_id(value: int) -> bool:
    """True if `value` can name a task; any other number (say, from a URL) names none."""
    return 0 < value <= MAX_TASK_ID


class InvalidTaskName(ValueError):
    """A task name that is blank, too long or not one line of text; the message is meant
    for the user."""


def clean_name(value: str) -> str:
    """Return the name trimmed, or raise `InvalidTaskName` with a message for the user.

    The length is the name's as sent (what /openapi.json's `maxLength` and the form's
    `maxlength` count), so a stored name is 1..500 characters once trimmed. Checked here
    so that every database gets the same names: SQLite would store a NUL that PostgreSQL
    refuses, and a lone surrogate (what a JSON `\\ud800` escape decodes to) cannot be
    encoded for either."""
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidTaskName(NAME_TOO_LONG)
    if _SURROGATE.search(value):
        raise InvalidTaskName(NAME_NOT_UNICODE)
    if _NOT_ONE_LINE.search(value):
        raise InvalidTaskName(NAME_NOT_ONE_LINE)
    name = value.strip()
    if not name:
        raise InvalidTaskName(NAME_REQUIRED)
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
        {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX_LENGTH,
            "pattern": NAME_PATTERN,
            "description": (
                f"1..{NAME_MAX_LENGTH} characters as sent, stored without the spaces at "
                "either end; one line: no control characters (tab, newline, NUL, ESC...) "
                "or line separators, and not only spaces."
            ),
        },
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
    """A new task."""

    model_config = ConfigDict(extra="forbid")

    name: TaskName


class TaskUpdate(BaseModel):
    """A change to a task: its name, whether it is done, or both. A field left out keeps
    its value; `null` is not a value of either."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: TaskName | MISSING = MISSING
    done: StrictBool | MISSING = MISSING

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise PydanticCustomError("nothing_to_change", NOTHING_TO_CHANGE)
        return self
