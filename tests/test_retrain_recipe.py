"""A retrain through the job queue keeps the model's recorded base and its recipe.

The training subprocess receives every setting explicitly (``child_environment``), so the
recipe defaults must survive that hand-over: a tiny model retrained by ``/retrain`` stays on
``tiny`` with tiny's learning rate and epochs even where the config names ``gpt2``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from jobs_support import RecordingNotifier, store_tweets, wait_until

from bot.config import Settings
from bot.generation.engine import GenerationEngine
from bot.jobs.manager import JobManager
from bot.jobs.runner import child_environment
from bot.model_store import ModelStoreReader
from bot.training.pipeline import train_model
from bot.training.progress import JsonReporter
from bot.training.recipes import TINY_FULL


def test_unset_epochs_and_learning_rate_reach_the_training_subprocess_unset(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in child_environment(make_settings()).items():
        if key.startswith("TWEETLIKE_"):
            monkeypatch.setenv(key, value)

    training = Settings().training

    assert (training.epochs, training.learning_rate) == (None, None)


async def test_a_queued_retrain_of_a_tiny_model_stays_tiny_with_tiny_hyperparameters(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    first = make_settings()  # base "tiny"
    store_tweets(first, "pip", 200)
    train_model(first, ["pip"], epochs=1, reporter=JsonReporter(io.StringIO()))
    settings = make_settings(training={"base_model": "gpt2"})  # what new models would get
    engine = GenerationEngine(settings)
    engine.start()
    manager = JobManager(settings, engine, RecordingNotifier(), progress_interval=0.0)
    await manager.start()
    try:
        ticket = await manager.request_training(["pip"], reason="retrain")
        await wait_until(
            lambda: manager.state.job(ticket.job_id).state not in ("queued", "running"),
            timeout=120,
        )
    finally:
        await manager.stop()
        engine.close()

    job = manager.state.job(ticket.job_id)
    assert job.state == "succeeded", job.error
    meta = ModelStoreReader(settings.storage.models_dir).get("pip").metadata
    assert (meta.base_model, meta.method) == ("tiny", "full")
    recipe = meta.model_extra["hyperparameters"]
    assert (recipe["learning_rate"], recipe["epochs"]) == (
        TINY_FULL.learning_rate,
        TINY_FULL.epochs,
    )
