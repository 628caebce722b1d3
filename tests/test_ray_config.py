"""The Ray keys (``generation.backend``, ``training.runner``, ``[ray]``) without a cluster:
checked at start-up, never loading Ray unless asked to, and what the cluster is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.ray_cluster import (
    CLIENT_QUEUE_PROBE_SECONDS,
    init_with_retries,
    prepare_serve,
    settings_from_payload,
    shipped_settings,
)

QUEUE_PROBE_VARIABLE = "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S"


@pytest.mark.parametrize(
    ("variable", "key"),
    [("GENERATION__BACKEND", "generation.backend"), ("TRAINING__RUNNER", "training.runner")],
)
def test_a_ray_setting_without_ray_installed_stops_start_up_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, key: str
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as when not installed
    monkeypatch.setenv(f"TWEETLIKE_{variable}", "ray")

    with pytest.raises(ConfigError) as error:
        load_settings()

    assert str(error.value) == (
        f"config error ($TWEETLIKE_{variable}): {key} = 'ray': needs Ray, which is not "
        'installed in this environment: pip install "tweetlike[ray]"'
    )


def test_a_ray_address_that_is_not_one_is_refused_naming_the_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETLIKE_RAY__ADDRESS", "http://head:8265")

    with pytest.raises(ConfigError) as error:
        load_settings()

    assert str(error.value).startswith(
        "config error ($TWEETLIKE_RAY__ADDRESS): ray.address = 'http://head:8265': allowed: "
        "empty (start a Ray cluster inside this process), auto"
    )


@pytest.mark.parametrize("address", ["", "auto", "ray://head:10001", "10.0.0.5:6379"])
def test_every_form_of_ray_address_is_accepted(address: str) -> None:
    assert Settings(ray={"address": address}).ray.address == address


def test_the_cluster_is_sent_no_secret_and_absolute_stores(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        discord={"token": "discord-secret-token"},
        x={"bearer_token": "x-secret-bearer", "consumer_secret": "x-secret-consumer"},
        storage={"models_dir": "models", "database_url": "sqlite:///secret-place.sqlite"},
    )

    payload = shipped_settings(settings)

    sent = json.dumps(payload)
    for secret in ("discord-secret-token", "x-secret-bearer", "x-secret-consumer", "secret-place"):
        assert secret not in sent
    assert payload["storage"]["models_dir"] == str(Path("models").absolute())
    assert settings_from_payload(payload).training == settings.training


def test_a_node_takes_its_settings_from_the_payload_not_its_environment(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = shipped_settings(make_settings(generation={"max_queue": 3}))
    monkeypatch.setenv("TWEETLIKE_GENERATION__MAX_QUEUE", "7")

    assert settings_from_payload(payload).generation.max_queue == 3


def test_the_default_configuration_never_loads_ray() -> None:
    script = (
        "import sys\n"
        "from bot.config import Settings\n"
        "from bot.generation.backends import make_generator\n"
        "from bot.jobs.runners import make_runner\n"
        "import bot.app, bot.cli, bot.core.service, bot.jobs.training_queue\n"
        "settings = Settings(generation={'device': 'cpu'})\n"
        "make_generator(settings), make_runner(settings)\n"
        "print('ray' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_ray_client_session_the_head_lost_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ray 2.60's client server loses some new sessions to a race at fork (ray#63202)."""
    outcomes: list[BaseException | None] = [
        ConnectionAbortedError("Initialization failure from server:\nStarting failed."),
        None,
    ]
    undone: list[bool] = []

    def init() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    init_with_retries(init, lambda: undone.append(True), attempts=3)

    assert outcomes == [] and undone == [True]
    assert "did not start this client's session (Initialization failure from server:" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("failure", "tries"),
    [
        (ConnectionAbortedError("Initialization failure from server:"), 3),  # then gives up
        (ConnectionError("refused"), 1),  # not a lost session: no second try
    ],
)
def test_a_ray_client_session_is_tried_again_only_when_lost_and_only_so_often(
    failure: Exception, tries: int
) -> None:
    calls: list[int] = []

    def init() -> None:
        calls.append(1)
        raise failure

    with pytest.raises(type(failure)):
        init_with_retries(init, lambda: None, attempts=3)
    assert len(calls) == tries


def test_only_a_ray_client_address_changes_serves_queue_probe_deadline(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(QUEUE_PROBE_VARIABLE, raising=False)
    prepare_serve(make_settings(ray={"address": "127.0.0.1:6379"}))
    assert QUEUE_PROBE_VARIABLE not in os.environ

    prepare_serve(make_settings(ray={"address": "ray://127.0.0.1:10001"}))
    assert os.environ[QUEUE_PROBE_VARIABLE] == CLIENT_QUEUE_PROBE_SECONDS
