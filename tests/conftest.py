"""Shared fixtures: every test gets its own config pointing at temp dirs, never ./models."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings

pytest_plugins = ["fakes.x_api", "fakes.discord", "databases"]  # fake_x, discord_fake, database_url

# Each worker imports torch and friends (about 1 GB resident by the end); more than this many
# would trade memory for little on the machines CI runs on.
MAX_TEST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most MAX_TEST_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_TEST_WORKERS))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Leave what the imports built out of every later garbage collection.

    torch, transformers, discord.py and the rest leave over half a million objects behind, and
    every full collection walks all of them (0.4 to 0.8 s on a two-core machine), as does the
    engine's explicit collection whenever it closes or unloads a model. Frozen, they are
    skipped: the engine, registry, service and console tests took 21 s and 41 s instead of
    32 s and 50 s, back to back. Objects the tests create are still collected.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("TWEETLIKE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with storage in tmp_path, the tiny base model and CPU; override by section."""

    def factory(**sections: dict[str, Any]) -> Settings:
        data: dict[str, Any] = {
            "storage": {
                "models_dir": str(tmp_path / "models"),
                "data_dir": str(tmp_path / "data"),
                "database_url": f"sqlite:///{tmp_path / 'tweetlike.sqlite'}",
            },
            # nice 0: a niced training waits behind every other process on a shared test
            # machine; tests/test_cpu_share.py checks the niceness itself.
            "training": {"base_model": "tiny", "nice": 0},
            "generation": {"device": "cpu"},
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:
                data[section] = values
        return Settings(**data)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Two cores shared with other test runs: more intra-op threads only thrash."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
