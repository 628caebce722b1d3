"""Opening the shared database: processes that start together on a new one all get it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Table, create_engine, event, inspect

from bot.jobs.state import jobs_table, open_database


def test_a_process_that_loses_the_race_to_create_a_table_opens_the_database(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'tweetlike.sqlite'}"
    other_process = create_engine(url)

    def other_process_creates_it_first(table: Table, connection: Connection, **_: object) -> None:
        table.create(other_process)

    event.listen(jobs_table, "before_create", other_process_creates_it_first, once=True)
    try:
        engine = open_database(url)
    finally:
        if event.contains(jobs_table, "before_create", other_process_creates_it_first):
            event.remove(jobs_table, "before_create", other_process_creates_it_first)
        other_process.dispose()
    assert "tweetlike_jobs" in inspect(engine).get_table_names()
    engine.dispose()
