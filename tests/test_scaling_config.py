"""The keys that split a deployment across processes: defaults and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    load_settings(path)


def test_with_no_new_keys_one_process_leads_and_serves_every_shard() -> None:
    settings = load_settings()
    assert settings.scheduler.enabled is True
    assert (settings.discord.shard_ids, settings.discord.shard_count) == (None, None)
    assert (settings.generation.backend, settings.training.runner) == ("local", "subprocess")
    assert settings.storage.database_url.startswith("sqlite:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[discord]\nshard_ids = [0]\n", "discord.shard_ids needs discord.shard_count"),
        (
            "[discord]\nshard_ids = [2]\nshard_count = 2\n",
            "discord.shard_ids = [2]: shards are numbered 0 to 1 with discord.shard_count = 2",
        ),
        ("[discord]\nshard_ids = [1, 1]\nshard_count = 2\n", "list each shard once"),
        ("[discord]\nshard_count = 0\n", "discord.shard_count = 0"),
        ("[scheduler]\nlease_seconds = 1\n", "scheduler.lease_seconds = 1"),
        ("[scheduler]\nenabled = 'maybe'\n", "scheduler.enabled = 'maybe'"),
    ],
)
def test_a_bad_scaling_key_is_one_line_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_shard_ids_in_the_environment_must_be_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETLIKE_DISCORD__SHARD_IDS", "1,2")
    monkeypatch.setenv("TWEETLIKE_DISCORD__SHARD_COUNT", "3")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "$TWEETLIKE_DISCORD__SHARD_IDS" in str(error.value)
    assert "in the environment this value is a JSON list" in str(error.value)


def test_shard_ids_in_the_environment_as_json_split_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETLIKE_DISCORD__SHARD_IDS", "[1, 2]")
    monkeypatch.setenv("TWEETLIKE_DISCORD__SHARD_COUNT", "3")
    monkeypatch.setenv("TWEETLIKE_SCHEDULER__ENABLED", "false")
    settings = load_settings()
    assert (settings.discord.shard_ids, settings.discord.shard_count) == ([1, 2], 3)
    assert settings.scheduler.enabled is False
