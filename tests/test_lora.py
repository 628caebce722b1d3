"""LoRA models on a shared base: what PEFT computes, mixed-adapter batches, refusals,
bounds, hot swap and rollback, side by side with full fine-tunes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from model_factory import publish_lora_model, publish_tiny_model
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from bot.base_models import tiny_base_dir
from bot.config import Settings
from bot.generation.batch import DecodeBatch, Row
from bot.generation.engine import GenerationEngine
from bot.generation.registry import LoadedModel, ModelRegistry, ModelUnavailableError
from bot.generation.sampling import RowSampling
from bot.model_store import ModelStoreReader
from bot.training.publish import rollback

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["My dream is", "Coffee", "", "Nothing beats a long"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three adapters of different shapes on one tiny base, and a full fine-tune."""
    root = tmp_path_factory.mktemp("models")
    publish_lora_model(root, "plain", seed=1)
    publish_lora_model(root, "wide", seed=2, rank=8, alpha=4, use_rslora=True)
    publish_lora_model(
        root, "patterned", seed=3, targets=("c_attn", "c_fc"), rank_pattern={"c_fc": 2}
    )
    publish_tiny_model(root, "full", seed=4)
    return root


@pytest.fixture
def engine_for(
    make_settings: Callable[..., Settings], store: Path
) -> Callable[..., GenerationEngine]:
    engines: list[GenerationEngine] = []

    def factory(**generation: object) -> GenerationEngine:
        settings = make_settings(
            storage={"models_dir": str(store)}, generation={"novelty_guard": False, **generation}
        )
        engine = GenerationEngine(settings)
        engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()


def _registry(models_dir: Path) -> ModelRegistry:
    reader = ModelStoreReader(models_dir)
    return ModelRegistry(reader, torch.device("cpu"), torch.float32, 4, 16, quantize=False)


def _sampling(loaded: LoadedModel, *, greedy: bool, max_new: int = 16) -> RowSampling:
    return RowSampling(
        do_sample=not greedy,
        temperature=1.0,
        top_k=50,
        top_p=0.95,
        min_new_tokens=0,
        max_new_tokens=max_new,
        stops=loaded.stops,
    )


def _run(batch: DecodeBatch, rows: list[Row]) -> None:
    batch.add(rows)
    while batch.rows:
        batch.step()


def _prompt_ids(loaded: LoadedModel, prompt: str) -> list[int]:
    return loaded.prefix_ids + loaded.tokenizer.encode(prompt)


def test_rows_of_different_adapters_in_one_batch_get_what_peft_generates(store: Path) -> None:
    registry = _registry(store)
    names = ["plain", "wide", "patterned"]
    loaded = {name: registry.acquire(name) for name in names}
    runtime = loaded["plain"].runtime
    assert all(m.runtime is runtime for m in loaded.values())  # one base, shared
    rows = [
        Row(
            prompt=_prompt_ids(loaded[name], prompt),
            sampling=_sampling(loaded[name], greedy=True),
            seed=0,
            adapter=loaded[name].adapter,
            owner=(name, prompt),
        )
        for name in names
        for prompt in PROMPTS
    ]
    _run(DecodeBatch(runtime, capacity=16, max_new_tokens=16, sync_every=1), rows)
    base = tiny_base_dir(store)
    for name in names:
        peft = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), loaded[name].published.path
        ).eval()
        for row in [r for r in rows if r.owner[0] == name]:
            ids = torch.tensor([row.prompt])
            with torch.inference_mode():
                out = peft.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=16,
                    do_sample=False,
                    eos_token_id=sorted(loaded[name].stops.ids),
                    pad_token_id=0,
                )
            expected = out[0, ids.shape[1] :].tolist()
            stops = [i for i, t in enumerate(expected) if t in loaded[name].stops.ids]
            assert row.tokens == expected[: stops[0] if stops else None], row.owner


def test_a_batch_mixing_adapters_gives_each_row_the_tweets_of_its_adapter_alone(
    store: Path,
) -> None:
    registry = _registry(store)
    loaded = {name: registry.acquire(name) for name in ("plain", "wide", "patterned")}
    runtime = loaded["plain"].runtime

    def tweets(names: list[str]) -> dict[tuple[str, int], str]:
        rows = [
            Row(
                prompt=_prompt_ids(loaded[name], "My dream is"),
                sampling=_sampling(loaded[name], greedy=False),
                seed=100 + seed,
                adapter=loaded[name].adapter,
                owner=(name, seed),
            )
            for name in names
            for seed in range(3)
        ]
        _run(DecodeBatch(runtime, capacity=16, max_new_tokens=16, sync_every=1), rows)
        return {r.owner: loaded[r.owner[0]].tokenizer.decode(r.tokens) for r in rows}

    mixed = tweets(["plain", "wide", "patterned"])
    for name in ("plain", "wide", "patterned"):
        alone = tweets([name])
        assert alone == {key: text for key, text in mixed.items() if key[0] == name}
    assert len(set(mixed.values())) > 3  # the adapters (and seeds) really differ


async def test_lora_and_full_models_serve_concurrently(
    engine_for: Callable[..., GenerationEngine],
) -> None:
    engine = engine_for(batch_window_ms=50)
    asks = [(name, prompt) for name in ("plain", "wide", "patterned", "full") for prompt in PROMPTS]
    results = await asyncio.gather(*(engine.generate(n, p, count=2) for n, p in asks))
    for (name, prompt), result in zip(asks, results, strict=True):
        assert result.model.name == name
        assert len(result.tweets) == 2
        assert all(t.startswith(prompt) for t in result.tweets)
    stats = engine.stats()
    assert stats.batches_run <= 3  # one batch for the base's three adapters, one for full
    assert len(stats.loaded_bases) == 1
    assert sorted(stats.loaded_models) == ["full", "patterned", "plain", "wide"]


def test_adapters_have_their_own_bound_and_share_the_loaded_base(
    engine_for: Callable[..., GenerationEngine],
) -> None:
    engine = engine_for(max_loaded_adapters=2, max_loaded_models=1)
    for name in ("plain", "wide", "patterned", "plain"):
        engine.generate_sync(name, "Coffee")
    stats = engine.stats()
    assert stats.loaded_models == ["patterned", "plain"]
    assert len(stats.loaded_bases) == 1
    engine.generate_sync("full", "Coffee")  # the one big slot goes to the full model...
    stats = engine.stats()
    assert stats.loaded_bases == []  # ...and the base leaves, taking its adapters along
    assert stats.loaded_models == ["full"]
    assert len(engine.generate_sync("wide", "Coffee", count=2).tweets) == 2


def test_adapter_trained_on_another_base_is_refused_with_what_to_do(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(generation={"novelty_guard": False})
    publish_lora_model(settings.storage.models_dir, "stranger", base_fingerprint="0" * 64)
    with (
        GenerationEngine(settings) as engine,
        caplog.at_level(logging.ERROR),
        pytest.raises(ModelUnavailableError) as refused,
    ):
        engine.generate_sync("stranger", "hi")
    assert "model stranger is refused" in caplog.text
    message = str(refused.value)
    assert "'stranger' was trained on a different version of its base 'tiny'" in message
    assert "tweetlike train stranger" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("options", "named"),
    [({"use_dora": True}, "DoRA"), ({"bias": "lora_only"}, "trained biases")],
)
def test_lora_variants_that_compute_something_else_are_refused(
    make_settings: Callable[..., Settings], options: dict[str, object], named: str
) -> None:
    settings = make_settings(generation={"novelty_guard": False})
    publish_lora_model(settings.storage.models_dir, "variant", **options)
    with (
        GenerationEngine(settings) as engine,
        pytest.raises(ModelUnavailableError, match=f"cannot apply: .*{named}"),
    ):
        engine.generate_sync("variant", "hi")


def test_adapter_targeting_the_embeddings_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(generation={"novelty_guard": False})
    published = publish_lora_model(settings.storage.models_dir, "embeds", targets=("c_attn",))
    # Move one layer's weights onto the output layer, which this engine does not adapt.
    weights = load_file(published.path / "adapter_model.safetensors")
    moved = {k.replace("transformer.h.0.attn.c_attn", "lm_head"): v for k, v in weights.items()}
    save_file(moved, published.path / "adapter_model.safetensors")
    with (
        GenerationEngine(settings) as engine,
        pytest.raises(ModelUnavailableError, match="not linear projections of this base"),
    ):
        engine.generate_sync("embeds", "hi")


def test_republished_adapter_is_served_at_once_and_rollback_restores_the_old(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(generation={"novelty_guard": False})
    models_dir = settings.storage.models_dir
    old = publish_lora_model(models_dir, "swap", seed=1)
    with GenerationEngine(settings) as engine:
        first = engine.generate_sync("swap", "Coffee", count=3, seed=5)
        new = publish_lora_model(models_dir, "swap", seed=2)
        second = engine.generate_sync("swap", "Coffee", count=3, seed=5)
        rollback(models_dir, "swap")
        third = engine.generate_sync("swap", "Coffee", count=3, seed=5)
    assert (first.model.path, second.model.path, third.model.path) == (old.path, new.path, old.path)
    assert second.tweets != first.tweets  # another adapter speaks differently...
    assert third.tweets == first.tweets  # ...and the rolled-back one exactly as before


async def test_seeded_adapter_request_gets_the_same_tweets_whatever_else_runs(
    engine_for: Callable[..., GenerationEngine],
) -> None:
    engine = engine_for(batch_window_ms=20)
    alone = await engine.generate("plain", "Coffee", count=3, seed=11)
    crowd = [engine.generate(n, "Coffee", count=2) for n in ("wide", "plain", "patterned")]
    busy, *_ = await asyncio.gather(engine.generate("plain", "Coffee", count=3, seed=11), *crowd)
    assert busy.tweets == alone.tweets


def test_max_loaded_adapters_is_checked_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="max_loaded_adapters") as refused:
        Settings(generation={"max_loaded_adapters": 0})
    assert "greater than or equal to 1" in str(refused.value)
    assert Settings().generation.max_loaded_adapters >= 256
