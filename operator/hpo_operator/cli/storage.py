"""Opening an Optuna storage from the command line: clear errors, and never a password on screen."""

from __future__ import annotations

import os

import optuna
import sqlalchemy.exc
from hpo_trial.contract import engine_kwargs
from sqlalchemy.engine import make_url

from hpo_operator.cli.errors import CLIError
from hpo_operator.shell.storage import StorageURLInvalid, check_url


def redact(url: str) -> str:
    """The URL with its password hidden, fit for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<storage URL>"


def absolute_sqlite(url: str) -> str:
    """A SQLite URL with a relative path made absolute against the current directory, so that ``hpo``
    and the trial processes it starts (in the manifest's directory) open the same file. Other URLs,
    in-memory SQLite and ``file:`` URIs are returned unchanged."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url  # open_storage says what is wrong with it
    db = parsed.database
    if not parsed.drivername.startswith("sqlite") or not db or db == ":memory:" or db.startswith("file:"):
        return url
    if os.path.isabs(db):
        return url
    return parsed.set(database=os.path.abspath(db)).render_as_string(hide_password=False)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    try:
        check_url(url)
    except StorageURLInvalid as e:
        raise CLIError(
            f"--storage: {e}; e.g. sqlite:///study.db or postgresql://user:password@host/db"
        ) from None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        detail = str(e).replace(url, redact(url)).splitlines()[0] if str(e) else type(e).__name__
        raise CLIError(f"cannot open the storage {redact(url)}: {detail}") from None


def study_names(url: str) -> list[str]:
    storage = open_storage(url)
    return sorted(s.study_name for s in storage.get_all_studies())


def load_study(url: str, name: str) -> optuna.Study:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") if names else "none"
        raise CLIError(f"no study {name!r} in {redact(url)} (studies there: {listed})") from None
