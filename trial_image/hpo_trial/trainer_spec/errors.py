"""Errors of a recipe: each issue its field's path and its message, as data."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self


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
