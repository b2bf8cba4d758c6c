"""Errors of a recipe: each issue its field's path and its message, as data."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel


@dataclass(frozen=True)
class Issue:
    """One problem with a recipe: the field's path as the spec writes it (``trainer.loss.name``,
    ``searchSpace[2].type``, ``objective[0].metric``) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TrainerSpecError(ValueError):
    """A recipe (or a search-space name) is not valid. ``issues`` holds each problem as data (its field's
    path and its message); the text is ``<path>: <message>``, several joined by ``; ``."""

    def __init__(self, path: str, message: str) -> None:
        self._set((Issue(path, message),))

    @classmethod
    def of(cls, issues: Iterable[Issue]) -> Self:
        """The error for one or more issues (a parse that found several at once)."""
        found = tuple(issues)
        if not found:
            raise ValueError("TrainerSpecError needs at least one issue")
        error = cls.__new__(cls)
        error._set(found)
        return error

    def _set(self, issues: tuple[Issue, ...]) -> None:
        self.issues = issues
        ValueError.__init__(self, "; ".join(str(i) for i in issues))

    @property
    def path(self) -> str:
        """The first issue's field."""
        return self.issues[0].path

    @property
    def message(self) -> str:
        """The first issue's message."""
        return self.issues[0].message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.issues))


def _rebuild_error(cls: type[TrainerSpecError], issues: tuple[Issue, ...]) -> TrainerSpecError:
    return cls.of(issues)


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or an empty string."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# pydantic's error types in a spec's own words (no "tuple", "after validation" or "input should be").
_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "tuple_type": "a list",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "less_than_equal": ("at most", "le"),
    "greater_than": ("greater than", "gt"),
    "less_than": ("less than", "lt"),
}


def pydantic_message(err: Any, model: type[BaseModel] | None = None) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as a spec message: what the field must
    be and the value it got, with a did-you-mean for a misspelt field or choice. ``model`` (the root
    model) lets an unknown field be matched against the fields beside it."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        known = model_fields_at(model, err["loc"][:-1]) if model is not None else []
        name = err["loc"][-1] if err["loc"] else ""
        hint = suggest(name, known) if isinstance(name, str) else ""
        return f"unknown field{hint}; the fields are: {', '.join(known)}" if known else "unknown field"
    if kind == "missing":
        return "required"
    if kind in ("too_long", "too_short"):
        n = ctx.get("max_length" if kind == "too_long" else "min_length")
        if kind == "too_short" and n == 1 and ctx.get("actual_length") == 0:
            return "must not be empty"
        items = "item" if n == 1 else "items"
        most = "at most" if kind == "too_long" else "at least"
        return f"{most} {n} {items}, got {ctx.get('actual_length')}"
    if kind in ("literal_error", "enum"):
        allowed = [a.strip("'") for a in re.findall(r"'[^']*'", str(ctx.get("expected", "")))]
        hint = suggest(got, allowed) if isinstance(got, str) else ""
        return f"must be one of {', '.join(allowed)}; got {got!r}{hint}"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {words} {bound}, got {got!r}"
    if kind in ("string_too_short", "string_too_long"):
        n = ctx.get("min_length" if kind == "string_too_short" else "max_length")
        if kind == "string_too_short" and n == 1:
            return "must not be empty"
        most = "at least" if kind == "string_too_short" else "at most"
        return f"must be {most} {n} characters, got {len(got) if isinstance(got, str) else got!r}"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {got!r}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def model_fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names (as written in the spec: aliases) of the model at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
