"""The task's data shapes: the DTO every layer passes around, and the rules for a name,
its notes and an id.

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
    Field,
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
NOTHING_TO_CHANGE = "Nothing to change: send name, done and/or notes."
NOTES_MAX_LENGTH = 10_000
NOTES_TOO_LONG = f"Task notes must be at most {NOTES_MAX_LENGTH:,} characters."
NOTES_NOT_TEXT = "Task notes must be text: no control characters other than tabs and line breaks."
NOTES_NOT_UNICODE = "Task notes contain invalid Unicode (a lone surrogate)."

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
# Notes are lines of text: the control characters less tab, line feed and carriage return.
_NOTES_CONTROL = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
NOTES_PATTERN = rf"^[^{_NOTES_CONTROL}]*$"
_NOT_TEXT = re.compile(f"[{_NOTES_CONTROL}]")
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


class InvalidNotes(ValueError):
    """Task notes that are too long or not text; the message is meant for the user."""


def clean_notes(value: str) -> str:
    """Return the notes as they are (empty if only spaces), or raise `InvalidNotes` with a
    message for the user. The length is counted as sent, as /openapi.json's `maxLength`
    does; NUL and the other control characters are refused for the reasons of
    `clean_name`."""
    if len(value) > NOTES_MAX_LENGTH:
        raise InvalidNotes(NOTES_TOO_LONG)
    if _SURROGATE.search(value):
        raise InvalidNotes(NOTES_NOT_UNICODE)
    if _NOT_TEXT.search(value):
        raise InvalidNotes(NOTES_NOT_TEXT)
    return value if value.strip() else ""


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


def _validate_notes(value: str) -> str:
    try:
        return clean_notes(value)
    except InvalidNotes as error:
        raise PydanticCustomError("task_notes", str(error)) from None


NOTES_DESCRIPTION = (
    f"Markdown (CommonMark) source, up to {NOTES_MAX_LENGTH:,} characters as sent; tabs and "
    "line breaks are the only control characters allowed. Shown rendered and sanitised "
    "under the task on the HTML page (raw HTML is shown as text). Only spaces: stored empty."
)

TaskNotes = Annotated[
    StrictStr,
    AfterValidator(_validate_notes),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": NOTES_MAX_LENGTH,
            "pattern": NOTES_PATTERN,
            "description": NOTES_DESCRIPTION,
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
    notes: str = Field(description="Markdown (CommonMark) source; empty when there are none.")
    created_at: datetime
    updated_at: datetime
    # Not in the API: a random token replaced on every change of the task and set anew on
    # insert (an id SQLite hands out again never has a deleted task's version); what the
    # task's cached fragments are checked against.
    version: str = Field(exclude=True)

    def to_data(self) -> dict[str, Any]:
        """JSON-able form, for the cache (with the version, which the API leaves out)."""
        return {**self.model_dump(mode="json"), "version": self.version}


class TaskCreate(BaseModel):
    """A new task."""

    model_config = ConfigDict(extra="forbid")

    name: TaskName
    notes: TaskNotes = ""


class TaskUpdate(BaseModel):
    """A change to a task: its name, whether it is done, its notes, or several. A field
    left out keeps its value; `null` is not a value of any."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: TaskName | MISSING = MISSING
    done: StrictBool | MISSING = MISSING
    notes: TaskNotes | MISSING = MISSING

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise PydanticCustomError("nothing_to_change", NOTHING_TO_CHANGE)
        return self
