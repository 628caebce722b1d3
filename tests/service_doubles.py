"""Test doubles for the service core's own interfaces (not for any library).

:class:`RecordingJobControl` implements :class:`bot.core.ports.JobControl` by recording
calls, so core tests can check what the core asked the job runner to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.core.ports import AutopostView, DeploymentView, JobView, TrainingReason, TrainingTicket
from bot.core.replies import Requester


@dataclass
class TrainingCall:
    handles: list[str]
    reason: TrainingReason
    requester: Requester | None
    prompt: str | None


@dataclass
class RecordingJobControl:
    trainings: list[TrainingCall] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    posts: dict[str, AutopostView] = field(default_factory=dict)
    known_jobs: set[str] = field(default_factory=set)

    async def request_training(
        self,
        handles: list[str],
        *,
        reason: TrainingReason,
        requester: Requester | None = None,
        prompt: str | None = None,
    ) -> TrainingTicket:
        model = "-".join(sorted(handles))
        already = any("-".join(sorted(c.handles)) == model for c in self.trainings)
        self.trainings.append(TrainingCall(list(handles), reason, requester, prompt))
        job_id = f"job{len(self.trainings)}"
        self.known_jobs.add(job_id)
        return TrainingTicket(
            job_id=job_id, model=model, position=len(self.trainings), already_queued=already
        )

    async def cancel(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return job_id in self.known_jobs

    def jobs(self) -> list[JobView]:
        return [JobView(job_id, "train", "sample", "queued") for job_id in sorted(self.known_jobs)]

    async def add_autopost(
        self,
        model: str,
        channel_id: int,
        *,
        every: str | None,
        cron: str | None,
        prompts: list[str],
        post_to_x: bool,
    ) -> AutopostView:
        view = AutopostView(
            autopost_id=f"ap{len(self.posts) + 1}",
            model=model,
            channel_id=channel_id,
            trigger=f"every {every}" if every else f"cron {cron}",
            prompts=tuple(prompts),
            post_to_x=post_to_x,
            from_config=False,
            next_run=None,
        )
        self.posts[view.autopost_id] = view
        return view

    def autoposts(self) -> list[AutopostView]:
        return list(self.posts.values())

    async def remove_autopost(self, autopost_id: str) -> bool:
        return self.posts.pop(autopost_id, None) is not None

    def running_count(self) -> int:
        return 0

    def deployment(self) -> DeploymentView:
        return DeploymentView(leader=None, leader_age=None, this_process=None, processes=())
