"""Published models held in memory: lazy loading, an LRU bound, and hot swaps.

Only the engine's worker thread calls :meth:`ModelRegistry.acquire`, so loading never runs on
the event loop. Each call compares the model's serving version (a cheap ``realpath`` of the
``models/<name>`` link) with the loaded one and loads the new version when a training has
published it; a batch keeps the :class:`LoadedModel` it started with, so requests already
running finish on the old weights while the next batch uses the new ones.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import logging as hf_logging
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from bot.errors import ModelNotFoundError, TweetlikeError
from bot.generation.novelty import NoveltyIndex
from bot.generation.packing import can_pack, pack_linear_layers
from bot.generation.sampling import GenerationDefaults
from bot.model_store import NOVELTY_FILE, BrokenModelError, ModelStoreReader, PublishedModel

log = logging.getLogger(__name__)


class ModelUnavailableError(TweetlikeError):
    """The model's folder exists but cannot be served (broken or half-copied)."""


@dataclass(frozen=True)
class LoadedModel:
    published: PublishedModel
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    defaults: GenerationDefaults
    novelty: NoveltyIndex | None
    prefix_ids: list[int]
    stop_ids: torch.Tensor
    pad_id: int
    context_size: int


class ModelRegistry:
    def __init__(
        self, reader: ModelStoreReader, device: torch.device, dtype: torch.dtype, capacity: int
    ) -> None:
        self._reader = reader
        self._device = device
        self._dtype = dtype
        self._capacity = capacity
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def loaded_names(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def acquire(self, name: str) -> LoadedModel:
        """The serving version of ``name``, loading (and evicting) as needed."""
        serving = self._reader.serving_version_path(name)
        if serving is None:
            raise ModelNotFoundError(
                f"there is no model named '{name}': train it first (tweetlike train {name})"
            )
        with self._lock:
            current = self._loaded.get(name)
            if current is not None and current.published.path == serving:
                self._loaded.move_to_end(name)
                return current
        try:
            fresh = self._load(name)
        except BrokenModelError as exc:
            if current is not None:
                log.error(
                    "model %s: new version is broken, still serving %s: %s",
                    name,
                    current.published.path.name,
                    exc,
                )
                return current
            log.error("model %s is broken and skipped: %s", name, exc)
            raise ModelUnavailableError(
                f"the model '{name}' is damaged or incomplete; retrain it (tweetlike train {name})"
            ) from None
        with self._lock:
            self._loaded[name] = fresh
            self._loaded.move_to_end(name)
            evicted = []
            while len(self._loaded) > self._capacity:
                evicted.append(self._loaded.popitem(last=False)[0])
        if current is not None:
            log.info("model %s: now serving version %s", name, fresh.published.path.name)
        for old in evicted:
            log.info("model %s unloaded (generation.max_loaded_models = %d)", old, self._capacity)
        if evicted or current is not None:
            self._release_memory()
        return fresh

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
        self._release_memory()

    def _load(self, name: str) -> LoadedModel:
        published = self._reader.get(name)
        path = published.path
        try:
            defaults = GenerationDefaults.read(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = _quietly_load(path, self._dtype)
            model.to(self._device).eval()
            if can_pack(self._device, self._dtype):
                pack_linear_layers(model)
            novelty = _load_novelty(path)
        except Exception as exc:  # any failure to read the folder means it is unusable
            raise BrokenModelError(f"{path}: {_first_line(exc)}") from None
        eos_id = _eos_id(defaults, tokenizer, model)
        pad_id = defaults.pad_token_id if defaults.pad_token_id is not None else eos_id
        stops = {eos_id}
        if defaults.stop_at_newline:
            stops |= _newline_ids(tokenizer)
        log.info("model %s: loaded version %s on %s", name, path.name, self._device)
        return LoadedModel(
            published=published,
            model=model,
            tokenizer=tokenizer,
            defaults=defaults,
            novelty=novelty,
            prefix_ids=tokenizer.encode(defaults.prompt_prefix) if defaults.prompt_prefix else [],
            stop_ids=torch.tensor(sorted(stops), device=self._device),
            pad_id=pad_id,
            context_size=int(getattr(model.config, "n_positions", 0) or 1024),
        )

    def _release_memory(self) -> None:
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _quietly_load(path: Path, dtype: torch.dtype) -> PreTrainedModel:
    """Load weights without transformers' progress bars and notices filling the bot's log."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_novelty(folder: Path) -> NoveltyIndex | None:
    path = folder / NOVELTY_FILE
    if not path.is_file():
        log.warning("%s has no %s: generated tweets are not checked for copies", folder, path.name)
        return None
    return NoveltyIndex.load(path)


def _eos_id(
    defaults: GenerationDefaults, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
) -> int:
    candidates = [defaults.eos_token_id, tokenizer.eos_token_id, model.config.eos_token_id]
    for candidate in candidates:
        if isinstance(candidate, list) and candidate:
            return int(candidate[0])
        if isinstance(candidate, int):
            return candidate
    raise BrokenModelError("the model defines no end-of-text token")


def _newline_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of tokens that contain a line break (byte-level BPE spells it 'Ċ')."""
    vocab = tokenizer.get_vocab()
    return {i for token, i in vocab.items() if "Ċ" in token or "\n" in token}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
