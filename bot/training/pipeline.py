"""``tweetlike train``: sources -> cleaning -> dataset -> trainer -> card -> atomic publish.

Nothing becomes visible under ``models/`` until the last step: the finished folder is
written in ``models/.staging/`` and swapped in by :func:`bot.training.publish.publish`.
A failure or a kill before that leaves the serving model untouched; a staging folder left
by a killed run is removed by the next training (its pid is dead).

Training runs on ``generation.device``: trainings share the GPU the bot serves from, one at
a time per device (``training.max_concurrent``), so there is no separate device setting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from bot.base_models import base_source, check_base_model, weights_fingerprint
from bot.config import Settings
from bot.errors import TrainingError, TweetlikeError
from bot.generation.novelty import NoveltyIndex
from bot.handles import check_not_blocked, model_name, normalize_handle
from bot.model_store import (
    METADATA_FILE,
    NOVELTY_FILE,
    BrokenModelError,
    ModelMetadata,
    ModelStoreReader,
)
from bot.rules import check_epochs
from bot.sources.store import TweetStore
from bot.training import publish
from bot.training.card import render_model_card
from bot.training.cleaning import CleanedAccount, clean_account
from bot.training.dataset import EOS, build_splits, check_size, pack, token_stream
from bot.training.hub import load_pretrained
from bot.training.lora import save_adapter, with_adapter
from bot.training.progress import BarReporter, JsonReporter, Reporter
from bot.training.recipes import Hyperparameters, LoraShape, Method, hyperparameters_for
from bot.training.trainer import (
    TrainResult,
    context_length,
    fine_tune,
    load_base_model,
    pick_device,
)

log = logging.getLogger(__name__)


class TrainingStopped(TrainingError):
    """SIGTERM arrived (a cancel or a shutdown); the previous model keeps serving."""


@dataclass(frozen=True)
class TrainingOutcome:
    name: str
    version: str
    path: Path
    metadata: ModelMetadata

    def summary(self) -> str:
        meta = self.metadata
        loss = "n/a" if meta.eval_loss is None else f"{meta.eval_loss:.3f}"
        trained = "LoRA adapter on" if meta.method == "lora" else "full fine-tune of"
        return (
            f"published models/{self.name} (version {self.version}): "
            f"{meta.tweets_kept} of {meta.tweets_downloaded} tweets kept, "
            f"{trained} base {meta.base_model}, eval loss {loss}"
        )


def train_command(
    settings: Settings,
    names: Sequence[str],
    *,
    base_model: str | None = None,
    method: Method | None = None,
    epochs: int | None = None,
    progress: Literal["bar", "json"] = "bar",
    fetch: bool = False,
) -> int:
    """The CLI entry: run a training and report it as a bar or as the JSON event stream.

    In JSON mode stdout carries only events: anything else printed while training is
    redirected to stderr, and failures become an ``error`` event with exit status 1.
    """
    hf_logging.disable_progress_bar()
    options = {"base_model": base_model, "method": method, "epochs": epochs, "fetch": fetch}
    if progress != "json":
        bar = BarReporter(sys.stderr)
        try:
            outcome = train_model(settings, names, reporter=bar, **options)
        except BaseException as exc:
            bar.error(str(exc))
            raise
        bar.done(outcome.name, outcome.version)
        print(outcome.summary())
        return 0

    events = JsonReporter(sys.stdout)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            outcome = train_model(settings, names, reporter=events, **options)
        except TweetlikeError as exc:
            events.error(str(exc))
            return 1
        except KeyboardInterrupt:
            events.error("training interrupted; the previous model keeps serving")
            raise
        except BaseException as exc:
            events.error(f"training crashed: {type(exc).__name__}: {exc}")
            raise
    events.done(outcome.name, outcome.version)
    return 0


@dataclass(frozen=True)
class _Request:
    handles: list[str]
    name: str
    base: str
    method: Method
    epochs: int | None


@dataclass(frozen=True)
class _LoraBase:
    """Where an adapter's base loads from (its adapter_config names it) and its digest."""

    source: str
    fingerprint: str


@dataclass(frozen=True)
class _Prepared:
    accounts: list[CleanedAccount]
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    hp: Hyperparameters
    train_blocks: torch.Tensor
    validation_blocks: torch.Tensor
    lora_base: _LoraBase | None


def train_model(
    settings: Settings,
    names: Sequence[str],
    *,
    base_model: str | None = None,
    method: Method | None = None,
    epochs: int | None = None,
    fetch: bool = False,
    reporter: Reporter,
) -> TrainingOutcome:
    """Train and publish one model for ``names`` (several handles make a combined model).

    ``base_model`` and ``method`` win; otherwise a model that is already published is
    retrained with the base and method its tweetlike.json records, and a new one gets the
    config's (PRODUCT.md §3).
    """
    request = _validate(settings, names, base_model, method, epochs)
    models_dir = Path(settings.storage.models_dir)
    with _stop_on_sigterm():
        for stale in publish.clean_stale_staging(models_dir):
            log.info("removed %s left by an interrupted training", stale)
        if fetch:
            _fetch(settings, request.handles, reporter)
        store = TweetStore(settings.storage.data_dir)
        prepared = _prepare(settings, store, request, reporter)

        device = pick_device(settings.generation.device)
        blocks = len(prepared.train_blocks)
        reporter.progress("train", 0.0, f"{blocks} blocks on {device}")
        result = fine_tune(
            prepared.model,
            prepared.train_blocks,
            prepared.validation_blocks,
            prepared.hp,
            device,
            on_step=lambda step, total: reporter.progress("train", step / total),
        )

        reporter.progress("publish", 0.0)
        version = publish.new_version()
        metadata = _metadata(store, prepared, request, version, result, settings)
        path = _publish(settings, request.name, prepared, metadata, reporter)
        reporter.progress("publish", 1.0)
    return TrainingOutcome(name=request.name, version=version, path=path, metadata=metadata)


def _validate(
    settings: Settings,
    names: Sequence[str],
    base_model: str | None,
    method: Method | None,
    epochs: int | None,
) -> _Request:
    """Every check that needs no data, in the order a user should hear about problems."""
    handles = sorted({normalize_handle(n) for n in names})
    check_not_blocked(handles, settings.training.blocked_handles)
    name = model_name(handles)
    check_epochs(epochs)
    link = Path(settings.storage.models_dir) / name
    if link.exists() and not link.is_symlink():
        raise TrainingError(
            f"{link} is a folder tweetlike did not publish; move it away to train {name}"
        )
    recorded = _recorded(settings, name)
    if base_model is not None:
        base = base_model.strip()
    else:
        base = recorded.base_model if recorded else settings.training.base_model
    if not base:
        raise TrainingError("--base-model is empty: give a Hugging Face id, a folder or 'tiny'")
    try:
        check_base_model(base)
    except TrainingError as exc:
        if base_model is None and recorded is not None:
            raise TrainingError(
                f"{exc} (models/{name} was trained on it; give --base-model to retrain it on "
                "another base)"
            ) from None
        raise
    chosen = method or (recorded.method if recorded else settings.training.method)
    return _Request(handles=handles, name=name, base=base, method=chosen, epochs=epochs)


def _recorded(settings: Settings, name: str) -> ModelMetadata | None:
    """The published model's metadata, so a retrain keeps its base and method."""
    try:
        return ModelStoreReader(settings.storage.models_dir).get(name).metadata
    except (FileNotFoundError, BrokenModelError):
        return None


def _prepare(
    settings: Settings, store: TweetStore, request: _Request, reporter: Reporter
) -> _Prepared:
    """Clean, size-check, split and balance the tweets; load the base model; pack blocks."""
    reporter.progress("prepare", 0.0, "cleaning tweets")
    accounts = [_load_account(store, h, settings) for h in request.handles]
    for account in accounts:
        warning = check_size(account)
        if warning:
            reporter.warning(warning)
    hp = hyperparameters_for(settings, request.base, request.method, request.epochs)
    splits = build_splits(accounts, settings.training.validation_fraction, hp.seed)

    reporter.progress("prepare", 0.3, f"loading base model {request.base} ({request.method})")
    lora_base = None
    if hp.lora is not None:
        model, tokenizer, lora_base = _lora_model(settings, request.base, hp.lora, hp.seed)
    else:
        kept = [t for a in accounts for t in a.kept]
        model, tokenizer = load_base_model(request.base, kept, hp.seed)
    hp = replace(hp, block_size=min(hp.block_size, context_length(model)))

    reporter.progress("prepare", 0.7, "tokenizing")
    train_blocks = pack(token_stream(splits.train, tokenizer), hp.block_size)
    validation_blocks = pack(token_stream(splits.validation, tokenizer), hp.block_size)
    reporter.progress("prepare", 1.0)
    return _Prepared(accounts, model, tokenizer, hp, train_blocks, validation_blocks, lora_base)


def _lora_model(
    settings: Settings, base: str, shape: LoraShape, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, _LoraBase]:
    """The shared base (``tiny``: the store's one tiny base) with a fresh adapter on it.

    The base's own tokenizer is kept as it is: an adapter must read the same tokens as
    every other adapter on that base.
    """
    source = base_source(base, Path(settings.storage.models_dir))
    model, tokenizer = load_pretrained(source)
    if EOS not in tokenizer.get_vocab():
        raise TrainingError(
            f"LoRA needs a base whose tokenizer has {EOS} (the GPT-2 family), and {base} has "
            "none; use --method full"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOS
    fingerprint = weights_fingerprint(model)  # as stored, before anything wraps it
    torch.manual_seed(seed)  # the adapter's initial A matrices
    return with_adapter(model, shape, base), tokenizer, _LoraBase(source, fingerprint)


def _publish(
    settings: Settings,
    name: str,
    prepared: _Prepared,
    metadata: ModelMetadata,
    reporter: Reporter,
) -> Path:
    models_dir = Path(settings.storage.models_dir)
    staging = publish.staging_dir(models_dir, name)
    try:
        _write_model_folder(staging, name, prepared, metadata)
        reporter.progress("publish", 0.8)
        return publish.publish(
            models_dir, name, staging, metadata.version, settings.storage.keep_versions
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fetch(settings: Settings, handles: list[str], reporter: Reporter) -> None:
    from bot.sources.x_api import fetch_tweets

    reporter.progress("fetch", 0.0)
    for done, handle in enumerate(handles):

        def on_progress(fraction: float, done: int = done, handle: str = handle) -> None:
            reporter.progress("fetch", (done + fraction) / len(handles), f"@{handle}")

        fetch_tweets(settings, handle, on_progress=on_progress)


def _load_account(store: TweetStore, handle: str, settings: Settings) -> CleanedAccount:
    tweets = store.load(handle)
    if not tweets:
        raise TrainingError(
            f"no tweets stored for @{handle}: run `tweetlike fetch {handle}` "
            f"or `tweetlike import {handle} PATH` first"
        )
    return clean_account(handle, tweets, collapse_newlines=settings.training.collapse_newlines)


def _metadata(
    store: TweetStore,
    prepared: _Prepared,
    request: _Request,
    version: str,
    result: TrainResult,
    settings: Settings,
) -> ModelMetadata:
    accounts, hp = prepared.accounts, prepared.hp
    display_names: dict[str, str] = {}
    avatar_urls: dict[str, str] = {}
    for account in accounts:
        info = store.account(account.handle)
        if info and info.display_name:
            display_names[account.handle] = info.display_name
        if info and info.avatar_url:
            avatar_urls[account.handle] = info.avatar_url
    newest_ids = {a.handle: a.newest_tweet_id for a in accounts if a.newest_tweet_id}
    newest = max(newest_ids.values(), key=int, default=None)
    return ModelMetadata(
        handles=[a.handle for a in accounts],
        tweets_downloaded=sum(a.downloaded for a in accounts),
        retweets=sum(a.retweets for a in accounts),
        short_tweets=sum(a.short for a in accounts),
        tweets_kept=sum(len(a.kept) for a in accounts),
        per_handle={a.handle: a.stats for a in accounts},
        base_model=request.base,
        method=request.method,
        base_fingerprint=prepared.lora_base.fingerprint if prepared.lora_base else None,
        version=version,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        newest_tweet_id=newest,
        eval_loss=result.eval_loss,
        display_names=display_names,
        avatar_urls=avatar_urls,
        newest_tweet_ids=newest_ids,
        hyperparameters={
            **asdict(hp),
            "validation_fraction": settings.training.validation_fraction,
            "collapse_newlines": settings.training.collapse_newlines,
        },
        training_run={
            "steps": result.steps,
            "train_loss": result.train_loss,
            "device": result.device,
            "precision": result.precision,
            "seconds": round(result.seconds, 2),
        },
    )


def _write_model_folder(
    folder: Path, name: str, prepared: _Prepared, metadata: ModelMetadata
) -> None:
    """A standard Hugging Face folder (full weights, or a PEFT adapter) plus the card,
    tweetlike.json and the novelty index."""
    model, tokenizer = prepared.model, prepared.tokenizer
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    generation_config = GenerationConfig(
        do_sample=True,
        top_p=0.95,
        temperature=1.0,
        max_new_tokens=60,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        prompt_prefix=EOS,
        stop_at_newline=True,
    )
    if prepared.lora_base is not None:
        save_adapter(model, folder, prepared.lora_base.source)
        generation_config.save_pretrained(folder)
    else:
        model.generation_config = generation_config
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    card = render_model_card(name, metadata, prepared.hp)
    (folder / "README.md").write_text(card, encoding="utf-8")
    (folder / METADATA_FILE).write_text(
        json.dumps(metadata.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    kept = (t for a in prepared.accounts for t in a.kept)
    NoveltyIndex.build(kept).save(folder / NOVELTY_FILE)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, like KeyboardInterrupt, so that
    library code catching Exception (download retry loops, model loaders) cannot swallow it."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception so cleanup runs and the parent gets an error event.

    Signal handlers can only be set from the main thread; elsewhere (a test, an embedding
    application) the process's own handling stays in charge. A second SIGTERM, arriving
    during cleanup, gets the previous handling back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        raise TrainingStopped(
            "training stopped (SIGTERM); the previous model keeps serving"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
