"""The per-member allowance (a token bucket) and its config keys, including the deprecated
``discord.cooldown_seconds`` that configs written for earlier versions still carry."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.app import run_service
from bot.config import Settings, load_settings
from bot.core.rate_limit import STILL_GENERATING, MemberLimits
from bot.errors import ConfigError

ALICE, BOB = 1, 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def spend(limits: MemberLimits, user_id: int, times: int = 1) -> None:
    for _ in range(times):
        assert limits.refusal(user_id) is None
        with limits.request(user_id):
            pass


def test_a_burst_is_allowed_then_the_wait_is_one_interval() -> None:
    clock = FakeClock()
    limits = MemberLimits(burst=5, per_minute=20, clock=clock)
    spend(limits, ALICE, 5)
    assert limits.retry_after(ALICE) == 3.0
    refusal = limits.refusal(ALICE)
    assert refusal is not None and "ask again in 3s" in refusal
    assert "5 requests in a row, then one every 3s" in refusal


def test_refill_is_exact_at_each_interval_and_stops_at_the_burst() -> None:
    clock = FakeClock()
    limits = MemberLimits(burst=3, per_minute=20, clock=clock)
    spend(limits, ALICE, 3)
    for _ in range(30):  # float drift would leave a sliver of a wait after many intervals
        clock.now += 3.0
        spend(limits, ALICE)
        assert limits.retry_after(ALICE) > 0
    clock.now += 3600
    spend(limits, ALICE, 3)
    assert limits.refusal(ALICE) is not None


def test_members_have_separate_allowances() -> None:
    limits = MemberLimits(burst=1, per_minute=1, clock=FakeClock())
    spend(limits, ALICE)
    assert limits.refusal(ALICE) is not None
    spend(limits, BOB)


def test_a_request_is_in_flight_until_its_block_ends_even_when_it_fails() -> None:
    limits = MemberLimits(burst=5, per_minute=20, clock=FakeClock())
    with limits.request(ALICE):
        assert limits.refusal(ALICE) == STILL_GENERATING
        assert limits.refusal(BOB) is None
    with pytest.raises(RuntimeError), limits.request(ALICE):
        raise RuntimeError("generation failed")
    assert limits.refusal(ALICE) is None


def test_a_refunded_request_is_given_back() -> None:
    limits = MemberLimits(burst=1, per_minute=1, clock=FakeClock())
    spend(limits, ALICE)
    limits.refund(ALICE)
    assert limits.refusal(ALICE) is None


def test_a_rate_of_zero_turns_the_allowance_off_but_not_the_in_flight_rule() -> None:
    limits = MemberLimits(burst=1, per_minute=0, clock=FakeClock())
    spend(limits, ALICE, 50)
    with limits.request(ALICE):
        assert limits.refusal(ALICE) == STILL_GENERATING


def test_defaults_allow_a_burst_of_five_then_twenty_a_minute() -> None:
    discord = Settings().discord
    assert (discord.rate_limit_burst, discord.rate_limit_per_minute) == (5, 20.0)


@pytest.mark.parametrize(("seconds", "per_minute"), [(3.0, 20.0), (10.0, 6.0), (0.0, 0.0)])
def test_deprecated_cooldown_seconds_is_read_as_the_same_sustained_rate(
    seconds: float, per_minute: float
) -> None:
    discord = Settings(discord={"cooldown_seconds": seconds}).discord
    assert discord.rate_limit_per_minute == per_minute
    (note,) = discord.deprecation_notes()
    assert "discord.cooldown_seconds is deprecated" in note
    assert "discord.rate_limit_burst" in note and "discord.rate_limit_per_minute" in note
    # Dumped and read again (as the training subprocess does), only the new key remains.
    again = Settings(**Settings(discord={"cooldown_seconds": seconds}).model_dump())
    assert again.discord.rate_limit_per_minute == per_minute
    assert again.discord.deprecation_notes() == []


def test_cooldown_seconds_and_rate_limit_per_minute_together_are_a_config_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[discord]\ncooldown_seconds = 3\nrate_limit_per_minute = 10\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert message.startswith("config error")
    assert "discord.rate_limit_per_minute" in message and "discord.cooldown_seconds" in message


@pytest.mark.parametrize(
    ("key", "value"), [("rate_limit_burst", "0"), ("rate_limit_per_minute", "-1")]
)
def test_out_of_range_allowance_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=f"discord.{key} = {value}"):
        load_settings(path)


def test_the_service_warns_once_at_start_up_about_the_deprecated_key(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # the console run ends at once
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    settings = make_settings(discord={"cooldown_seconds": 3})
    assert run_service(settings, console=True) == 0
    warnings = [r for r in caplog.records if "cooldown_seconds is deprecated" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
