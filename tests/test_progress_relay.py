"""The throttled progress message: late rather than never, bounded, and nothing after the end.

Time is a :class:`ManualClock` the test moves by hand, so what is sent when does not depend
on how fast or busy the machine is.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest
from jobs_support import RecordingNotifier

from bot.jobs.progress_message import ProgressRelay

CHANNEL = 10
INTERVAL = 5.0


class ManualClock:
    """A monotonic clock that moves only in :meth:`advance`, and a ``sleep`` that follows it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None], asyncio.Task[object]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        task = asyncio.current_task()
        assert task is not None
        self._sleepers.append((self.now + delay, woken, task))
        await woken

    def timers(self) -> int:
        """Sleeps still waiting: each one is something that could happen later."""
        return sum(not woken.done() for _, woken, _ in self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time on, wake the sleeps now due, and wait until those tasks have finished.

        Tasks created since the last await first run up to their sleep (one loop turn: a new
        task's first step is already scheduled), so a timer set just now is counted.
        """
        await asyncio.sleep(0)
        self.now += seconds
        due = [(w, t) for at, w, t in self._sleepers if at <= self.now and not w.done()]
        for woken, _ in due:
            woken.set_result(None)
        if due:
            await asyncio.wait([task for _, task in due], timeout=60)


@dataclass
class ClockedNotifier(RecordingNotifier):
    """Records, besides each progress call, the time it was made."""

    clock: ManualClock = field(default_factory=ManualClock)
    sent_at: list[float] = field(default_factory=list)

    async def post_progress(
        self,
        channel_id: int,
        job_id: str,
        text: str,
        *,
        message_id: int | None,
        finished: bool = False,
    ) -> int | None:
        self.sent_at.append(self.clock.now)
        return await super().post_progress(
            channel_id, job_id, text, message_id=message_id, finished=finished
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def notifier(clock: ManualClock) -> ClockedNotifier:
    return ClockedNotifier(clock=clock)


@pytest.fixture
def relay(notifier: RecordingNotifier, clock: ManualClock) -> ProgressRelay:
    return ProgressRelay(
        notifier, "job1", {}, ignore_ids, interval=INTERVAL, clock=clock, sleep=clock.sleep
    )


async def ignore_ids(ids: dict[int, int]) -> None:
    """The relay's message ids are stored by the job runner; these tests check the messages."""


def shown(notifier: RecordingNotifier) -> list[str]:
    return [call.text for call in notifier.progress]


async def test_a_throttled_update_is_shown_once_the_interval_has_passed(
    relay: ProgressRelay, notifier: RecordingNotifier, clock: ManualClock
) -> None:
    await relay.update([CHANNEL], "10%")
    await clock.advance(1)
    await relay.update([CHANNEL], "20%")
    await clock.advance(1)
    await relay.update([CHANNEL], "30%")
    await clock.advance(2.5)
    assert shown(notifier) == ["10%"]

    await clock.advance(0.5)

    assert shown(notifier) == ["10%", "30%"]  # the latest state, late; 20% was superseded
    assert notifier.sent_at == [0.0, INTERVAL]
    first, second = notifier.progress
    assert second.message_id == first.returned_id  # an edit of the one message
    assert clock.timers() == 0


async def test_a_stream_of_updates_is_sent_at_most_once_per_interval_ending_on_the_latest(
    relay: ProgressRelay, notifier: ClockedNotifier, clock: ManualClock
) -> None:
    for percent in range(100):
        await relay.update([CHANNEL], f"{percent}%")
        await clock.advance(0.5)
    await clock.advance(INTERVAL)

    assert shown(notifier)[-1] == "99%"
    sent_at = notifier.sent_at
    assert len(sent_at) <= 50 / INTERVAL + 2
    assert all(later - earlier >= INTERVAL for earlier, later in itertools.pairwise(sent_at))


async def test_the_final_update_goes_out_at_once_and_nothing_follows_it(
    relay: ProgressRelay, notifier: RecordingNotifier, clock: ManualClock
) -> None:
    await relay.update([CHANNEL], "10%")
    await clock.advance(1)
    await relay.update([CHANNEL], "40%")

    await relay.update([CHANNEL], "done", final=True)
    await relay.update([CHANNEL], "50%")
    await clock.advance(10 * INTERVAL)

    assert shown(notifier) == ["10%", "done"]
    assert notifier.sent_at == [0.0, 1.0]
    assert [call.finished for call in notifier.progress] == [False, True]
    assert clock.timers() == 0


async def test_closing_drops_a_waiting_update_and_its_timer(
    relay: ProgressRelay, notifier: RecordingNotifier, clock: ManualClock
) -> None:
    await relay.update([CHANNEL], "10%")
    await relay.update([CHANNEL], "40%")

    relay.close()
    await clock.advance(10 * INTERVAL)

    assert shown(notifier) == ["10%"]
    assert clock.timers() == 0


async def test_an_update_equal_to_what_is_shown_cancels_the_waiting_one(
    relay: ProgressRelay, notifier: RecordingNotifier, clock: ManualClock
) -> None:
    await relay.update([CHANNEL], "10%")
    await relay.update([CHANNEL], "20%")
    await relay.update([CHANNEL], "10%")

    await clock.advance(INTERVAL)

    assert shown(notifier) == ["10%"]


async def test_without_an_interval_every_change_is_sent_at_once(
    notifier: RecordingNotifier, clock: ManualClock
) -> None:
    relay = ProgressRelay(
        notifier, "job1", {}, ignore_ids, interval=0.0, clock=clock, sleep=clock.sleep
    )
    for text in ("10%", "10%", "20%", "30%"):
        await relay.update([CHANNEL], text)

    assert shown(notifier) == ["10%", "20%", "30%"]
    assert clock.timers() == 0
