"""The one progress message per channel that a training job keeps editing.

Discord allows about five edits per five seconds per channel, and a wall of "42%…43%…"
messages is noise, so each channel that waits for a job gets a single message showing a bar,
the stage and the overall percentage, edited at most once per ``interval`` seconds (final
states always go out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.core.ports import Notifier
from bot.training.progress import Stage

log = logging.getLogger(__name__)

BAR_WIDTH = 12
# Share of the whole run each stage covers, in order: fetching and preparing are quick,
# fine-tuning is most of the wall time.
STAGE_SPANS: dict[str, tuple[float, float]] = {
    "fetch": (0.0, 0.05),
    "prepare": (0.05, 0.15),
    "train": (0.15, 0.95),
    "publish": (0.95, 1.0),
}
STAGE_LABELS: dict[str, str] = {
    "fetch": "fetching tweets",
    "prepare": "preparing the data",
    "train": "fine-tuning",
    "publish": "publishing",
}


def overall_fraction(stage: Stage, fraction: float) -> float:
    start, end = STAGE_SPANS[stage]
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def progress_bar(fraction: float) -> str:
    filled = round(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def running_text(model: str, job_id: str, stage: Stage, fraction: float) -> str:
    overall = overall_fraction(stage, fraction)
    return (
        f"Training @{model} `{progress_bar(overall)}` {overall:.0%} · "
        f"{STAGE_LABELS[stage]} (job {job_id})"
    )


def queued_text(model: str, job_id: str, position: int) -> str:
    return f"Training @{model}: queued, position {position} (job {job_id})"


class ProgressRelay:
    """Creates then edits the progress message of one job in each waiting channel."""

    def __init__(
        self,
        notifier: Notifier,
        job_id: str,
        messages: dict[int, int],
        on_message_ids: Callable[[dict[int, int]], None],
        *,
        interval: float,
    ) -> None:
        self._notifier = notifier
        self._job_id = job_id
        self._messages = dict(messages)
        self._on_message_ids = on_message_ids
        self._interval = interval
        self._last_sent = 0.0
        self._last_text = ""

    async def update(self, channels: list[int], text: str, *, final: bool = False) -> None:
        """Show ``text``; non-final updates inside the throttle interval are dropped."""
        now = time.monotonic()
        if text == self._last_text and not final:
            return
        if not final and now - self._last_sent < self._interval:
            return
        self._last_sent, self._last_text = now, text
        changed = False
        for channel_id in dict.fromkeys(channels):
            message_id = self._messages.get(channel_id)
            try:
                new_id = await self._notifier.post_progress(
                    channel_id, self._job_id, text, message_id=message_id, finished=final
                )
            except Exception:
                log.warning(
                    "could not show progress of job %s in channel %d",
                    self._job_id,
                    channel_id,
                    exc_info=True,
                )
                continue
            if new_id is not None and new_id != message_id:
                self._messages[channel_id] = new_id
                changed = True
        if changed:
            self._on_message_ids(dict(self._messages))
