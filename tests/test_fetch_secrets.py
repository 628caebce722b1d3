"""An X server that echoes the request's credentials in its errors: no path shows them.

The fake X API quotes the ``Authorization`` header back in every error reply. Whatever
carries that error on (the CLI's stderr, a scheduled retrain's job record, the database and
the log, the notice a requester gets in Discord, an auto-post's error), the token is gone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.x_api import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    BEARER_TOKEN,
    CONSUMER_SECRET,
    FakeXApi,
)
from jobs_support import RecordingNotifier, wait_until
from model_factory import publish_tiny_model

from bot.cli import main
from bot.config import Settings
from bot.core.replies import Requester
from bot.errors import SourceError
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.sources.store import TweetStore
from bot.sources.x_api import fetch_tweets, post_tweet

MakeSettings = Callable[..., Settings]
WRONG_TOKEN = "AAAAAAAAAAAAAAAAAAAAAwrong%2Btoken%3Dvalue"


@pytest.fixture
def echoing_x(fake_x: FakeXApi) -> FakeXApi:
    fake_x.echo_authorization = True
    fake_x.add_user("alice")
    fake_x.add_tweets("alice", 40, prefix="an old thought about")
    return fake_x


@pytest.fixture
async def managers() -> AsyncIterator[list[JobManager]]:
    built: list[JobManager] = []
    yield built
    for manager in built:
        if manager.scheduler.running:
            await manager.stop()
        else:
            manager.database.dispose()


def write_config(tmp_path: Path, fake: FakeXApi, bearer_token: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[x]\nbearer_token = "{bearer_token}"\napi_base_url = "{fake.base_url}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n',
        encoding="utf-8",
    )
    return path


def trained_on_x(settings: Settings, manager_list: list[JobManager]) -> JobManager:
    """Alice's tweets fetched from X and a model published on them; a manager to retrain it."""
    fetch_tweets(settings, "alice")
    texts = [t.text for t in TweetStore(settings.storage.data_dir).load("alice")]
    publish_tiny_model(settings.storage.models_dir, "alice", texts)
    manager = JobManager(settings, GenerationEngine(settings), RecordingNotifier())
    manager_list.append(manager)
    return manager


def test_the_fake_echoes_the_authorization_header(echoing_x: FakeXApi, tmp_path: Path) -> None:
    config = write_config(tmp_path, echoing_x, WRONG_TOKEN)

    main(["--config", str(config), "fetch", "alice"])

    assert echoing_x.requests[0].authorization == f"Bearer {WRONG_TOKEN}"


def test_cli_fetch_with_rejected_credentials_never_prints_the_token(
    echoing_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, echoing_x, WRONG_TOKEN)

    status = main(["--config", str(config), "fetch", "alice"])

    err = capsys.readouterr().err
    assert status == 1
    assert "401 Unauthorized (echo Bearer [redacted]): check x.bearer_token" in err
    assert WRONG_TOKEN not in err and "wrong" not in err


def test_cli_fetch_failing_part_way_never_prints_the_token(
    echoing_x: FakeXApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, echoing_x, BEARER_TOKEN)
    echoing_x.fail_next(500, route="timeline")

    status = main(["--config", str(config), "fetch", "alice"])

    err = capsys.readouterr().err
    assert status == 1 and "500 Internal Server Error" in err
    assert BEARER_TOKEN not in err


async def test_a_scheduled_retrain_whose_fetch_fails_keeps_the_token_out_of_every_record(
    echoing_x: FakeXApi,
    make_settings: MakeSettings,
    managers: list[JobManager],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        x={"bearer_token": BEARER_TOKEN, "api_base_url": echoing_x.base_url},
        retrain={"every": "7d", "min_new_tweets": 1},
    )
    manager = trained_on_x(settings, managers)
    echoing_x.fail_next(403, route="user")

    with caplog.at_level(logging.DEBUG):
        await manager.retrains.run()

    [job] = manager.jobs()
    assert job.state == "failed" and "echo Bearer [redacted]" in job.detail
    assert BEARER_TOKEN not in job.detail
    database = Path(settings.storage.database_url.removeprefix("sqlite:///"))
    assert BEARER_TOKEN.encode() not in database.read_bytes()
    assert BEARER_TOKEN not in caplog.text


async def test_a_requested_retrain_whose_fetch_fails_tells_the_requester_without_the_token(
    echoing_x: FakeXApi,
    make_settings: MakeSettings,
    managers: list[JobManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = make_settings(
        x={"bearer_token": BEARER_TOKEN, "api_base_url": echoing_x.base_url},
        training={"epochs": 1},
    )
    manager = trained_on_x(settings, managers)
    notifier = manager.notifier
    assert isinstance(notifier, RecordingNotifier)
    echoing_x.fail_next(403, route="user")
    await manager.start()

    ticket = await manager.request_training(
        ["alice"], reason="retrain", requester=Requester(user_id=7, channel_id=70)
    )
    await wait_until(lambda: manager.running_count() == 0 and bool(notifier.texts), timeout=120)

    shown: list[Any] = [t.text for t in notifier.texts] + [p.text for p in notifier.progress]
    record = manager.state.job(ticket.job_id)
    assert record is not None and record.state == "failed"
    assert any("[redacted]" in text for text in shown)
    assert all(BEARER_TOKEN not in text for text in [*shown, record.error or ""])


def test_an_echoed_oauth_header_is_removed_even_where_it_is_percent_encoded(
    make_settings: MakeSettings,
) -> None:
    consumer_key = "key/with+special=chars"  # sent as key%2Fwith%2Bspecial%3Dchars
    with FakeXApi(consumer_key="another-key") as fake:
        fake.echo_authorization = True
        settings = make_settings(
            x={
                "consumer_key": consumer_key,
                "consumer_secret": CONSUMER_SECRET,
                "access_token": ACCESS_TOKEN,
                "access_token_secret": ACCESS_TOKEN_SECRET,
                "api_base_url": fake.base_url,
            }
        )

        with pytest.raises(SourceError) as raised:
            post_tweet(settings, "a quiet morning")

    message = str(raised.value)
    assert "401 Unauthorized (echo OAuth [redacted])" in message
    assert "special" not in message and ACCESS_TOKEN not in message
    assert "oauth_signature" not in message
