"""A Hub base model (``gpt2``) that cannot be downloaded fails at once, in one line.

huggingface_hub retries a request that cannot connect five times with backoff, for each
file transformers asks for (about 45 s and a dozen warnings offline). These tests run real
``python -m bot train`` processes, as the CLI and the job queue do, against a local Hub
endpoint that refuses or drops connections, with HF_HUB_OFFLINE unset and an empty cache.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_support import RecordingNotifier, store_tweets, wait_until
from training_support import REPO_ROOT, SMALL_ACCOUNT, Workspace, store, write_config

from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.training.tiny import build_tiny_model, build_tiny_tokenizer

REMEDY = "train with --base-model tiny or a local model folder, or connect to the network"


class DroppingHub:
    """A TCP endpoint that accepts each connection and closes it at once, counting them."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        # Closing alone leaves the thread blocked in accept(); shutting the socket down
        # wakes it.
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def online_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[str], dict[str, str]]:
    """Point child processes at ``endpoint`` with an empty Hugging Face cache, not offline."""

    def set_endpoint(endpoint: str) -> dict[str, str]:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
        return dict(os.environ)

    return set_endpoint


@pytest.fixture
def dropping_hub() -> Iterator[DroppingHub]:
    hub = DroppingHub()
    yield hub
    hub.close()


def test_cli_train_on_gpt2_with_the_hub_refusing_fails_in_one_line_without_retries(
    tmp_path: Path, online_environment: Callable[[str], dict[str, str]]
) -> None:
    endpoint = closed_port_url()
    env = online_environment(endpoint)
    ws = Workspace(tmp_path, write_config(tmp_path, base_model="gpt2"))
    store(ws.data, "pip", SMALL_ACCOUNT)

    child = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(ws.config), "train", "pip"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert child.returncode == 1 and child.stdout == ""
    last_line = child.stderr.splitlines()[-1]
    assert last_line.startswith("tweetlike: error: cannot download base model 'gpt2'")
    assert endpoint in last_line and "cannot be reached" in last_line and REMEDY in last_line
    assert "Retrying" not in child.stderr and "Traceback" not in child.stderr
    assert child.stderr.count("tweetlike: error") == 1


async def test_a_queued_training_on_gpt2_asks_the_hub_once_and_fails_with_the_remedy(
    make_settings: Callable[..., Settings],
    online_environment: Callable[[str], dict[str, str]],
    dropping_hub: DroppingHub,
) -> None:
    online_environment(dropping_hub.url)
    settings = make_settings(training={"base_model": "gpt2"})
    store_tweets(settings, "pip", 200)
    engine = GenerationEngine(settings)
    engine.start()
    manager = JobManager(settings, engine, RecordingNotifier(), progress_interval=0.0)
    await manager.start()
    try:
        ticket = await manager.request_training(["pip"], reason="train")
        await wait_until(lambda: _ended(manager, ticket.job_id))
    finally:
        await manager.stop()
        engine.close()

    record = manager.state.job(ticket.job_id)
    assert record is not None and record.state == "failed"
    assert record.error is not None and record.error.startswith("cannot download base model 'gpt2'")
    assert REMEDY in record.error and "\n" not in record.error
    assert dropping_hub.connections == 1


def _ended(manager: JobManager, job_id: str) -> bool:
    record = manager.state.job(job_id)
    return record is not None and record.state not in ("queued", "running")


def test_a_cached_hub_base_trains_an_adapter_without_touching_the_network(
    tmp_path: Path,
    online_environment: Callable[[str], dict[str, str]],
    dropping_hub: DroppingHub,
) -> None:
    env = online_environment(dropping_hub.url)
    snapshot = Path(env["HF_HOME"]) / "hub" / "models--gpt2" / "snapshots" / ("0" * 40)
    tokenizer = build_tiny_tokenizer(SMALL_ACCOUNT)
    build_tiny_model(tokenizer).save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    ws = Workspace(tmp_path, write_config(tmp_path, base_model="gpt2", method="lora"))
    store(ws.data, "pip", SMALL_ACCOUNT)

    child = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(ws.config), "train", "pip", "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )

    assert child.returncode == 0, child.stderr
    folder = ws.models / "pip"
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == "gpt2"
    assert json.loads((folder / "tweetlike.json").read_text("utf-8"))["base_model"] == "gpt2"
    assert dropping_hub.connections == 0
