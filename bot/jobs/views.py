"""What ``/jobs`` and ``/autopost list`` show, built from the database.

Every process builds the same views from the same rows: the leader, which runs the jobs,
adds the live detail of its running trainings; another process shows the detail the leader
last stored (at most a progress step old).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bot.core.ports import AutopostView, JobView
from bot.jobs.scheduler import autopost_job_id, describe_trigger
from bot.jobs.state import AutopostRecord, JobRecord, StateStore

RECENT_JOBS_SHOWN = 10


def job_views(state: StateStore, live_details: Mapping[str, str] | None = None) -> list[JobView]:
    """Running, then queued (in order), then recently finished trainings, then failed
    auto-posts."""
    live = live_details or {}
    views = [job_view(job, live.get(job.id, job.detail)) for job in state.jobs_in("running")]
    for place, job in enumerate(state.jobs_in("queued"), 1):
        detail = f"position {place}" + (f", {job.detail}" if job.detail else "")
        views.append(job_view(job, detail))
    recent = state.recent_jobs(RECENT_JOBS_SHOWN)
    views += [job_view(job, job.error or job.detail) for job in recent]
    views += autopost_failures(state)
    return views


def job_view(job: JobRecord, detail: str) -> JobView:
    return JobView(
        job_id=job.id,
        kind=job.kind,
        model=job.model,
        state=job.state,
        detail=detail,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def autopost_failures(state: StateStore) -> list[JobView]:
    """Auto-posts whose last run failed, as /jobs shows them."""
    return [
        JobView(
            job_id=record.id,
            kind="autopost",
            model=record.model,
            state="failed",
            detail=record.last_error or "",
            created_at=record.created_at,
            finished_at=record.last_run_at,
        )
        for record in state.autoposts()
        if record.last_error
    ]


def autopost_views(state: StateStore) -> list[AutopostView]:
    next_runs = state.next_run_times()
    return [
        autopost_view(record, next_runs.get(autopost_job_id(record.id)))
        for record in state.autoposts()
    ]


def autopost_view(record: AutopostRecord, next_run: datetime | None) -> AutopostView:
    return AutopostView(
        autopost_id=record.id,
        model=record.model,
        channel_id=record.channel_id,
        trigger=describe_trigger(record.every, record.cron, record.timezone),
        prompts=tuple(record.prompts),
        post_to_x=record.post_to_x,
        from_config=record.from_config,
        next_run=next_run.isoformat(timespec="seconds") if next_run else None,
        last_error=record.last_error,
    )
