"""What the operator says when its storage is down: the real cause, not Optuna's wrapper's guess."""

from __future__ import annotations

import optuna
import pytest
from hpo_operator.shell.storage import Storages, StorageUnavailable, StorageURLInvalid, StudyStore

from tests.harness.postgres import PostgresServer


def test_a_storage_that_is_down_is_reported_by_its_cause(own_postgres: PostgresServer) -> None:
    url = own_postgres.create_database("down")
    storages = Storages()
    try:
        storage = storages.open(url, "s")
        optuna.create_study(storage=storage, study_name="s").ask()
        store = StudyStore(storage, "s")
        own_postgres.pause()
        # Optuna raises StorageInternalError("... invalid data in the commit, e.g. exceeding max
        # length") for any failed commit; the message must say what really happened.
        for call in (store.view, store.trials, lambda: store.set_attempt(0, 1), lambda: store.fail(0, "x")):
            with pytest.raises(StorageUnavailable) as info:
                call()
            message = str(info.value)
            assert "OperationalError" in message and "Connection refused" in message, message
            assert "exceeding max length" not in message and "StorageInternalError" not in message
        own_postgres.resume()
        assert store.view() is not None  # and it answers again once the server is back
    finally:
        storages.dispose()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("notaurl://user:s3cret-pw@db:5432/hpo", "no SQLAlchemy dialect or driver 'notaurl' is installed"),
        ("user:s3cret-pw@db:5432/hpo", "it does not parse as driver://user:password@host:port/database"),
        # An unencoded '@' and ':' in the password: the parser takes 's3cret-pw@db' for the port.
        ("postgresql://user:p@ss:s3cret-pw@db/hpo", "it does not parse as driver://user:password@host:port"),
    ],
)
def test_a_url_sqlalchemy_cannot_use_is_not_an_outage(url: str, why: str) -> None:
    storages = Storages()
    with pytest.raises(StorageURLInvalid) as info:
        storages.open(url, "s")
    message = str(info.value)
    assert message.startswith(f"not a usable storage URL ({why}"), message
    assert "s3cret" not in message and "p@ss" not in message
    assert storages.urls() == []
