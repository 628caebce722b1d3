"""Persistent job state: training jobs and auto-post definitions, in the scheduler's database.

APScheduler's job store only holds *when* something runs; what a training job is (who asked,
which progress messages to edit, which pid to kill after a crash) and what an auto-post
does live here, in tables beside ``apscheduler_jobs`` at ``storage.database_url``, so one
SQLite file (or one PostgreSQL database) is the bot's whole memory across restarts.

All calls are short synchronous statements; async code makes them off the event loop
(``asyncio.to_thread``), so a slow database never stalls the gateway. Each opens and commits
its own transaction so a crash never leaves a half-updated row. Several processes may share
the database (README: Scaling out), but only the scheduler leader writes jobs and
auto-posts; the others hand it requests (:mod:`bot.jobs.requests`). Error and detail
texts are redacted before they are stored: ``/jobs`` shows them, and a database is backed up.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.errors import TweetlikeError, first_line
from bot.redaction import redact

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")

metadata = MetaData()

jobs_table = Table(
    "tweetlike_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("handles", JSON, nullable=False),
    Column("fetch", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False, index=True),
    Column("requesters", JSON, nullable=False),
    Column("progress_messages", JSON, nullable=False),
    Column("pid", Integer, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Column("error", Text, nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("started_at", String(40), nullable=True),
    Column("finished_at", String(40), nullable=True),
)

autoposts_table = Table(
    "tweetlike_autoposts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(255), nullable=False),
    Column("channel_id", BigInteger, nullable=False),
    Column("every", String(32), nullable=True),
    Column("cron", String(120), nullable=True),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("prompts", JSON, nullable=False),
    Column("post_to_x", Boolean, nullable=False, default=False),
    Column("from_config", Boolean, nullable=False, default=False),
    Column("created_at", String(40), nullable=False),
    Column("last_run_at", String(40), nullable=True),
    Column("last_error", Text, nullable=True),
)

# Leases (the scheduler leader's): one row per name, renewed by its owner (bot.jobs.leader_lease).
leases_table = Table(
    "tweetlike_leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("heartbeat", Float, nullable=False),  # the database's clock, epoch seconds
    Column("acquired_at", Float, nullable=False),
)

# Every serving process, its role and shards, for status (bot.jobs.presence).
processes_table = Table(
    "tweetlike_processes",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("leader", Boolean, nullable=False),
    Column("transport", String(16), nullable=False),
    Column("shard_ids", JSON, nullable=True),
    Column("shard_count", Integer, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
)

# Requests from processes that do not lead, for the leader to carry out (bot.jobs.requests).
requests_table = Table(
    "tweetlike_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("arguments", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("sender", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
)

# APScheduler's own job store table, read (never written) for next run times, so any
# process can show them without a scheduler of its own.
_jobstore_view = Table(
    "apscheduler_jobs",
    MetaData(),
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float, nullable=True),
)


def database_now(conn: Connection) -> float:
    """Seconds since the epoch by the database server's clock.

    Leases are judged on one clock, so hosts whose clocks disagree agree on when a lease
    has expired. SQLite is a file on this host: its clock is this host's.
    """
    if conn.dialect.name == "postgresql":
        return float(
            conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )
    return time.time()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_id() -> str:
    """Short enough to type in ``/cancel``, random enough never to collide in one database."""
    return uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class PendingAnswer:
    """Someone waiting for a training: answered in ``channel_id``, pinging only them."""

    user_id: int
    channel_id: int
    prompt: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "channel_id": self.channel_id, "prompt": self.prompt}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingAnswer:
        return cls(int(data["user_id"]), int(data["channel_id"]), data.get("prompt"))


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    model: str
    handles: list[str]
    fetch: bool
    state: JobState
    requesters: list[PendingAnswer] = field(default_factory=list)
    progress_messages: dict[int, int] = field(default_factory=dict)
    pid: int | None = None
    detail: str = ""
    error: str | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class AutopostRecord:
    id: str
    model: str
    channel_id: int
    every: str | None
    cron: str | None
    timezone: str
    prompts: list[str]
    post_to_x: bool
    from_config: bool
    created_at: str = ""
    last_run_at: str | None = None
    last_error: str | None = None

    def same_schedule(self, other: AutopostRecord) -> bool:
        """Whether two definitions post the same thing at the same times."""
        return replace(self, created_at="", last_run_at=None, last_error=None) == replace(
            other, created_at="", last_run_at=None, last_error=None
        )


def open_database(url: str) -> Engine:
    """One engine for the job store and the state tables; SQLite's folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Several processes may share one SQLite file: a writer waits for another's transaction.
    connect_args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {}
    engine = create_engine(url, future=True, connect_args=connect_args)
    try:
        _create_tables(engine)
    except DBAPIError as exc:
        engine.dispose()
        where = parsed.render_as_string(hide_password=True)
        reason = first_line(exc.orig if exc.orig else exc)
        raise TweetlikeError(
            f"cannot use the database storage.database_url = {where}: {reason}"
        ) from None
    return engine


def _create_tables(engine: Engine, attempts: int = 3) -> None:
    """Two processes starting together on a new database race between ``create_all``'s check
    and its CREATE: the loser's CREATE fails on a table the other has just made, so it looks
    again (a real error, such as a read-only database, fails every attempt)."""
    for attempt in range(1, attempts + 1):
        try:
            metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == attempts:
                raise


def _job_from_row(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        model=row.model,
        handles=list(row.handles),
        fetch=bool(row.fetch),
        state=row.state,
        requesters=[PendingAnswer.from_json(r) for r in row.requesters],
        progress_messages={int(k): int(v) for k, v in row.progress_messages.items()},
        pid=row.pid,
        detail=row.detail or "",
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _autopost_from_row(row: Any) -> AutopostRecord:
    return AutopostRecord(
        id=row.id,
        model=row.model,
        channel_id=int(row.channel_id),
        every=row.every,
        cron=row.cron,
        timezone=row.timezone,
        prompts=list(row.prompts),
        post_to_x=bool(row.post_to_x),
        from_config=bool(row.from_config),
        created_at=row.created_at,
        last_run_at=row.last_run_at,
        last_error=row.last_error,
    )


class StateStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- training jobs -------------------------------------------------------------------

    def add_job(
        self,
        *,
        kind: str,
        model: str,
        handles: list[str],
        fetch: bool,
        requesters: list[PendingAnswer],
        state: JobState = "queued",
        error: str | None = None,
    ) -> JobRecord:
        record = JobRecord(
            id=new_id(),
            kind=kind,
            model=model,
            handles=handles,
            fetch=fetch,
            state=state,
            requesters=requesters,
            error=_redacted(error),
            created_at=now_iso(),
            finished_at=None if state in ACTIVE_STATES else now_iso(),
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs_table).values(
                    id=record.id,
                    kind=kind,
                    model=model,
                    handles=handles,
                    fetch=fetch,
                    state=state,
                    requesters=[r.as_json() for r in requesters],
                    progress_messages={},
                    detail="",
                    error=record.error,
                    created_at=record.created_at,
                    finished_at=record.finished_at,
                )
            )
        return record

    def job(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
        return _job_from_row(row) if row else None

    def jobs_in(self, *states: JobState) -> list[JobRecord]:
        """Jobs in those states, oldest first (the queue order)."""
        query = (
            select(jobs_table)
            .where(jobs_table.c.state.in_(states))
            .order_by(jobs_table.c.created_at, jobs_table.c.id)
        )
        with self.engine.connect() as conn:
            return [_job_from_row(row) for row in conn.execute(query)]

    def recent_jobs(self, limit: int) -> list[JobRecord]:
        """Finished jobs, newest first."""
        query = (
            select(jobs_table)
            .where(jobs_table.c.state.not_in(ACTIVE_STATES))
            .order_by(jobs_table.c.finished_at.desc(), jobs_table.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_job_from_row(row) for row in conn.execute(query)]

    def running_count(self) -> int:
        query = select(func.count()).select_from(jobs_table).where(jobs_table.c.state == "running")
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def active_job_for(self, model: str) -> JobRecord | None:
        query = (
            select(jobs_table)
            .where(jobs_table.c.model == model, jobs_table.c.state.in_(ACTIVE_STATES))
            .order_by(jobs_table.c.created_at)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _job_from_row(row) if row else None

    def update_job(self, job_id: str, **values: Any) -> None:
        for text_field in ("detail", "error"):
            if text_field in values:
                values[text_field] = _redacted(values[text_field])
        if "requesters" in values:
            values["requesters"] = [r.as_json() for r in values["requesters"]]
        if "progress_messages" in values:
            values["progress_messages"] = {
                str(k): v for k, v in values["progress_messages"].items()
            }
        with self.engine.begin() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(**values))

    # -- auto-posts ----------------------------------------------------------------------

    def autoposts(self) -> list[AutopostRecord]:
        query = select(autoposts_table).order_by(autoposts_table.c.created_at, autoposts_table.c.id)
        with self.engine.connect() as conn:
            return [_autopost_from_row(row) for row in conn.execute(query)]

    def autopost(self, autopost_id: str) -> AutopostRecord | None:
        query = select(autoposts_table).where(autoposts_table.c.id == autopost_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _autopost_from_row(row) if row else None

    def save_autopost(self, record: AutopostRecord) -> None:
        """Insert or replace the definition, keeping its run history."""
        values = {
            "model": record.model,
            "channel_id": record.channel_id,
            "every": record.every,
            "cron": record.cron,
            "timezone": record.timezone,
            "prompts": record.prompts,
            "post_to_x": record.post_to_x,
            "from_config": record.from_config,
        }
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(autoposts_table.c.id).where(autoposts_table.c.id == record.id)
            ).first()
            if exists:
                conn.execute(
                    update(autoposts_table)
                    .where(autoposts_table.c.id == record.id)
                    .values(**values)
                )
            else:
                conn.execute(
                    insert(autoposts_table).values(
                        id=record.id, created_at=record.created_at or now_iso(), **values
                    )
                )

    def next_run_times(self) -> dict[str, datetime | None]:
        """When each scheduled job runs next, by job id (None: paused), from the job store."""
        query = select(_jobstore_view.c.id, _jobstore_view.c.next_run_time)
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(_jobstore_view.name):
                return {}
            return {
                row.id: None
                if row.next_run_time is None
                else datetime.fromtimestamp(row.next_run_time, UTC)
                for row in conn.execute(query)
            }

    def record_autopost_run(self, autopost_id: str, error: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(autoposts_table)
                .where(autoposts_table.c.id == autopost_id)
                .values(last_run_at=now_iso(), last_error=_redacted(error))
            )

    def delete_autopost(self, autopost_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(autoposts_table).where(autoposts_table.c.id == autopost_id)
            )
        return bool(result.rowcount)


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)
