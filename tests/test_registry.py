"""The model registry: discovery, LRU eviction, hot swap under load, broken folders."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from jobs_support import wait_until
from model_factory import publish_tiny_model

from bot.config import Settings
from bot.generation.engine import GenerationEngine, GenerationResult
from bot.generation.registry import ModelUnavailableError
from bot.model_store import METADATA_FILE, ModelStoreReader, PublishedModel
from bot.training.publish import new_version, publish, staging_dir

FRUIT = ["fresh apples make the sweetest pie", "pears and plums ripen in the orchard"]
ANIMALS = ["zebras gallop across the dusty savanna", "lions doze under acacia trees"]
FRUIT_WORDS = {"apples", "sweetest", "pie", "pears", "plums", "ripen", "orchard"}
ANIMAL_WORDS = {"zebras", "gallop", "dusty", "savanna", "lions", "doze", "acacia", "trees"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _words(tweets: list[str]) -> set[str]:
    return set(re.findall(r"\w+", " ".join(tweets).lower()))


def _half_copied(models_dir: Path, name: str, *, with_weights: bool) -> Path:
    """A model folder someone is still copying in: metadata there, weights not (or cut)."""
    good = publish_tiny_model(models_dir, "template", FRUIT)
    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_bytes((good.path / METADATA_FILE).read_bytes())
    if with_weights:
        (folder / "config.json").write_bytes((good.path / "config.json").read_bytes())
        weights = (good.path / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    return folder


def _republish(models_dir: Path, name: str, version_folder: Path) -> PublishedModel:
    """Publish a copy of a finished model folder, as a training run's last step does."""
    work = staging_dir(models_dir, name)
    shutil.copytree(version_folder, work, dirs_exist_ok=True)
    publish(models_dir, name, work, new_version(), keep_versions=3)
    return ModelStoreReader(models_dir).get(name)


def test_models_lists_published_ones_and_logs_broken_ones(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    publish_tiny_model(settings.storage.models_dir, "good", FRUIT)
    _half_copied(settings.storage.models_dir, "half", with_weights=False)
    with caplog.at_level(logging.WARNING), GenerationEngine(settings) as engine:
        names = [m.name for m in engine.models()]
    assert names == ["good", "template"]
    assert re.search(r"model half is broken and skipped: .*half is incomplete", caplog.text)


def test_broken_model_fails_clearly_while_others_serve(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    publish_tiny_model(settings.storage.models_dir, "good", FRUIT)
    _half_copied(settings.storage.models_dir, "cut", with_weights=True)
    with caplog.at_level(logging.ERROR), GenerationEngine(settings) as engine:
        with pytest.raises(ModelUnavailableError, match="'cut' is damaged or incomplete"):
            engine.generate_sync("cut", "hi")
        assert len(engine.generate_sync("good", "fresh", count=2).tweets) == 2
    assert "model cut is broken and skipped" in caplog.text


def test_least_recently_used_model_is_unloaded_beyond_max_loaded_models(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(generation={"max_loaded_models": 2})
    for name in ("a", "b", "c"):
        publish_tiny_model(settings.storage.models_dir, name, FRUIT)
    with GenerationEngine(settings) as engine:
        for name in ("a", "b", "c"):
            engine.generate_sync(name, "")
        assert engine.stats().loaded_models == ["b", "c"]
        engine.generate_sync("b", "")
        engine.generate_sync("a", "")
        assert engine.stats().loaded_models == ["b", "a"]


async def test_hot_swap_under_load_serves_new_version_without_failures(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(generation={"novelty_guard": False, "batch_window_ms": 2})
    models_dir = settings.storage.models_dir
    old = publish_tiny_model(models_dir, "swap", FRUIT, train_steps=150, seed=1)
    trained = publish_tiny_model(models_dir / "elsewhere", "swap", ANIMALS, train_steps=150, seed=2)
    # (asked after the new version was published?, what came back)
    results: list[tuple[bool, GenerationResult]] = []
    published = False
    done = asyncio.Event()

    async def user() -> None:
        while not done.is_set():
            asked_after = published
            results.append((asked_after, await engine.generate("swap", "", count=2)))

    def answered(after: bool) -> int:
        return sum(asked_after == after for asked_after, _ in results)

    with GenerationEngine(settings) as engine:
        users = [asyncio.create_task(user()) for _ in range(4)]
        await wait_until(lambda: answered(False) >= 8)
        new = await asyncio.to_thread(_republish, models_dir, "swap", trained.path)
        published = True
        await wait_until(lambda: answered(True) >= 8)
        done.set()
        await asyncio.gather(*users)  # any failed request would raise here

    by_version = {old.path: (FRUIT_WORDS, ANIMAL_WORDS), new.path: (ANIMAL_WORDS, FRUIT_WORDS)}
    said: dict[Path, set[str]] = {old.path: set(), new.path: set()}
    for _, result in results:
        assert not _words(result.tweets) & by_version[result.model.path][1], result
        said[result.model.path] |= _words(result.tweets)
    assert all(said[path] & own for path, (own, _) in by_version.items())
    assert all(r.model.path == new.path for asked_after, r in results if asked_after)
    assert any(r.model.path == old.path for _, r in results)


def test_broken_new_version_keeps_the_old_one_serving(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    models_dir = settings.storage.models_dir
    old = publish_tiny_model(models_dir, "steady", FRUIT)
    with GenerationEngine(settings) as engine:
        engine.generate_sync("steady", "")
        empty = staging_dir(models_dir, "steady")
        (empty / METADATA_FILE).write_bytes((old.path / METADATA_FILE).read_bytes())
        publish(models_dir, "steady", empty, new_version(), keep_versions=3)
        with caplog.at_level(logging.ERROR):
            result = engine.generate_sync("steady", "fresh")
    assert result.model.path == old.path
    assert "new version is broken, still serving" in caplog.text
