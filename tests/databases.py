"""The databases the job runner is tested on: SQLite always, PostgreSQL when one is given.

``.ci/run`` starts a throwaway PostgreSQL server and exports its URL as
``TEST_POSTGRES_URL`` (not ``TWEETLIKE_``-prefixed: that prefix sets config keys). Without
it the PostgreSQL cases are skipped, so the suite runs on a machine without PostgreSQL.
Each PostgreSQL case gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "TEST_POSTGRES_URL"
_POSTGRES_URL = os.environ.get(POSTGRES_ENV)  # read before the tests clear the environment


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tweetlike.sqlite'}"
        return
    if not _POSTGRES_URL:
        pytest.skip(f"{POSTGRES_ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    server = make_url(_POSTGRES_URL)
    name = f"tweetlike_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
