"""The deployment's status lines: the same for ``tweetlike status`` and ``/status``.

How generation and training run, which process leads the scheduler (and whether it is this
one), which process serves which Discord shards, and the shards nobody serves. ``/status``
puts this process's own figures (device, loaded models, queue) above them.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.config import Settings
from bot.core.ports import DeploymentView, ProcessView


def status_lines(
    settings: Settings, deployment: DeploymentView | None, *, cluster: Sequence[str] = ()
) -> list[str]:
    """``deployment`` None: this process has no job runner; ``cluster``: the lines of a
    distributed backend or runner, when one is configured."""
    lines = [
        f"generation backend: {settings.generation.backend}",
        f"training runner: {settings.training.runner}",
        _leader_line(deployment),
    ]
    if deployment is not None:
        lines += [_process_line(p, deployment.this_process) for p in deployment.processes]
        lines += _unserved_shards(deployment.processes)
    lines += cluster
    return lines


def _leader_line(deployment: DeploymentView | None) -> str:
    if deployment is None:
        return "scheduler leader: unknown (no job runner in this process)"
    if deployment.leader is None:
        return (
            "scheduler leader: none running; nothing is trained or scheduled until the "
            "process with scheduler.enabled = true starts"
        )
    if deployment.leader == deployment.this_process:
        return f"scheduler leader: this process ({deployment.leader})"
    age = deployment.leader_age or 0.0
    mine = " (not this process)" if deployment.this_process else ""
    return f"scheduler leader: {deployment.leader}{mine}, heartbeat {age:.0f} s ago"


def _process_line(process: ProcessView, this_process: str | None) -> str:
    role = "leader" if process.leader else "gateway"
    here = " (this process)" if process.owner == this_process else ""
    return (
        f"process {process.owner}{here}: {role}, {_serves(process)}, "
        f"heartbeat {process.age:.0f} s ago"
    )


def _serves(process: ProcessView) -> str:
    if process.transport != "discord":
        return "console" if process.transport == "console" else "no users"
    if process.shard_ids is None:
        count = "" if process.shard_count is None else f" of {process.shard_count}"
        return f"Discord, every shard{count}"
    shards = ", ".join(str(shard) for shard in process.shard_ids)
    return f"Discord shards {shards} of {process.shard_count}"


def _unserved_shards(processes: Sequence[ProcessView]) -> list[str]:
    gateways = [p for p in processes if p.transport == "discord"]
    if not gateways or any(p.shard_ids is None for p in gateways):
        return []
    counts = sorted({p.shard_count for p in gateways if p.shard_count is not None})
    if len(counts) > 1:
        listed = ", ".join(str(count) for count in counts)
        return [f"shards: the processes disagree on discord.shard_count ({listed}); set one"]
    served = {shard for p in gateways for shard in p.shard_ids or ()}
    missing = [shard for shard in range(counts[0]) if shard not in served]
    if not missing:
        return [f"shards: all {counts[0]} served"]
    listed = ", ".join(str(shard) for shard in missing)
    return [f"shards not served by any process: {listed} (of {counts[0]})"]
