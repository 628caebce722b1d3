"""The one progress message per channel that a training job keeps editing.

Discord allows about five edits per five seconds per channel, and a wall of "42%…43%…"
messages is noise, so each channel that waits for a job gets a single message showing a bar,
the stage and the overall percentage, edited at most once per ``interval`` seconds (final
states always go out, and a throttled state is shown late rather than never).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.core.formatting import handle_label
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
    """Plain text, no markup: the console prints it as it is and Discord shows it as it is
    (the bar's block characters need no code span), so every transport reads the same."""
    overall = overall_fraction(stage, fraction)
    return (
        f"Training {handle_label(model)} {progress_bar(overall)} {overall:.0%} · "
        f"{STAGE_LABELS[stage]} (job {job_id})"
    )


class ProgressRelay:
    """Creates then edits the progress message of one job in each waiting channel.

    Updates inside the throttle interval are delayed, not dropped: the latest one waits for a
    timer and goes out when the interval has passed, so even a training that ends within a
    few seconds shows where it got to. The final update goes out at once, replaces anything
    still waiting, and nothing is sent after it.
    """

    def __init__(
        self,
        notifier: Notifier,
        job_id: str,
        messages: dict[int, int],
        on_message_ids: Callable[[dict[int, int]], Awaitable[None]],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._notifier = notifier
        self._job_id = job_id
        self._messages = dict(messages)
        self._on_message_ids = on_message_ids
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last_sent: float | None = None
        self._last_text = ""
        self._waiting: tuple[list[int], str] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._sending_from_timer = False
        self._closed = False
        # One send at a time: a message being created must get its id before the next edit.
        self._send_lock = asyncio.Lock()

    async def update(self, channels: list[int], text: str, *, final: bool = False) -> None:
        """Show ``text`` now, or when the throttle interval has passed (final: at once)."""
        if self._closed:
            return
        if final:
            self.close()
            await self._send(channels, text, final=True)
            return
        if text == self._last_text:
            self._waiting = None  # what is shown is already the latest state
            return
        due = self._clock() if self._last_sent is None else self._last_sent + self._interval
        if self._timer is None and self._clock() >= due:
            await self._send(channels, text, final=False)
            return
        self._waiting = (channels, text)
        if self._timer is None:
            self._timer = asyncio.create_task(
                self._send_when_due(due), name=f"progress-{self._job_id}"
            )

    def close(self) -> None:
        """Send nothing more: drop the waiting update and its timer (a send under way ends)."""
        self._closed = True
        self._waiting = None
        if self._timer is not None and not self._sending_from_timer:
            self._timer.cancel()
        self._timer = None

    async def _send_when_due(self, due: float) -> None:
        await self._sleep(max(due - self._clock(), 0.0))
        self._sending_from_timer = True
        try:
            waiting, self._waiting = self._waiting, None
            if waiting is not None and not self._closed:
                await self._send(*waiting, final=False)
        finally:
            self._sending_from_timer = False
            if self._timer is asyncio.current_task():
                self._timer = None

    async def _send(self, channels: list[int], text: str, *, final: bool) -> None:
        async with self._send_lock:
            self._last_sent, self._last_text = self._clock(), text
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
            if changed:  # stored before the next send, so the ids are stored in order
                await self._on_message_ids(dict(self._messages))
