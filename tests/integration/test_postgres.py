"""The PostgreSQL fixtures: a real server, one fresh database per test."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.harness.cluster import pid_alive, port_is_listening
from tests.harness.postgres import PostgresServer


def test_databases_are_real_and_isolated(postgres: PostgresServer, postgres_url: str) -> None:
    other_url = postgres.create_database()
    first = sa.create_engine(postgres_url)
    second = sa.create_engine(other_url)
    try:
        assert make_url(postgres_url).database != make_url(other_url).database
        with first.begin() as conn:
            conn.execute(sa.text("CREATE TABLE trials (number int PRIMARY KEY, value double precision)"))
            conn.execute(sa.text("INSERT INTO trials VALUES (0, 0.5), (1, 0.75)"))
        with first.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(value) FROM trials")).scalar_one() == 1.25
            assert conn.execute(sa.text("SHOW server_version")).scalar_one().split(".")[0].isdigit()
        with second.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('public.trials')")).scalar_one() is None
    finally:
        first.dispose()
        second.dispose()
        postgres.drop_database(make_url(other_url).database or "")


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalar_one()
        assert tables == 0
    finally:
        engine.dispose()


def test_dropping_a_database_disconnects_its_users(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    engine = sa.create_engine(url)
    conn = engine.connect()  # a trial process that still holds a connection
    try:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        postgres.drop_database(make_url(url).database or "")
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError, match="does not exist"):
            engine.connect()
    finally:
        conn.invalidate()
        engine.dispose()


@pytest.mark.postgres
def test_a_second_server_stops_cleanly() -> None:
    if os.environ.get("HPO_TEST_POSTGRES_URL"):
        pytest.skip("HPO_TEST_POSTGRES_URL names a running server; this test starts its own")
    server = PostgresServer().start()
    try:
        pid, port, base = server.pid, server.port, server.base_dir
        assert pid is not None and pid_alive(pid)
        assert port_is_listening(port)
        url = server.create_database("probe")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "probe"
        engine.dispose()
    finally:
        server.stop()
    assert not pid_alive(pid)
    assert not port_is_listening(port)
    assert base is not None and not base.exists()
