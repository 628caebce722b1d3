"""Published models held in memory: lazy loading, LRU bounds, shared bases, and hot swaps.

Two kinds of published model are served:

- a full fine-tune (``"method": "full"``) is a complete set of weights, loaded on its own;
- a LoRA model (``"method": "lora"``) is an adapter of a few MB on a base model. The base is
  loaded once per process (``bot.base_models.base_source`` says from where) and shared by
  every adapter on it; loading an adapter reads its small files and nothing else, and its
  tokenizer is shared with every other model whose tokenizer files are byte-identical.

Full models and bases are bounded together by ``generation.max_loaded_models`` (they are the
big ones); adapters by ``generation.max_loaded_adapters``. Both are least recently used first
out. An adapter is served only on the base whose weights hash (``weights_fingerprint``, taken
as the base is read from its folder, before any packing or quantizing) to the fingerprint in
its ``tweetlike.json``.

Only the engine's worker thread calls :meth:`ModelRegistry.acquire`, so loading never runs on
the event loop. Each call compares the model's serving version (a cheap ``realpath`` of the
``models/<name>`` link) with the loaded one and loads the new version when a training has
published it (or a rollback has pointed the link back); requests already running keep the
:class:`LoadedModel` they started with.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import logging as hf_logging
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from bot.base_models import base_source, weights_fingerprint
from bot.errors import ModelNotFoundError, TweetlikeError, first_line
from bot.generation.batch import Runtime
from bot.generation.lora import LoraAdapter, UnsupportedAdapterError, load_adapter, wrap_projections
from bot.generation.novelty import NoveltyIndex
from bot.generation.packing import can_pack, pack_linear_layers
from bot.generation.quantize import quantize_int8
from bot.generation.sampling import GenerationDefaults, StopTokens
from bot.model_store import NOVELTY_FILE, BrokenModelError, ModelStoreReader, PublishedModel

log = logging.getLogger(__name__)

# Files that define a tokenizer; models whose copies are byte-identical share one instance.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


class ModelUnavailableError(TweetlikeError):
    """The model's folder exists but cannot be served (broken, half-copied, wrong base)."""


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer and what serving derives from it, shared by identical copies."""

    tokenizer: PreTrainedTokenizerBase
    newline_ids: frozenset[int]


@dataclass(frozen=True)
class LoadedModel:
    published: PublishedModel
    runtime: Runtime  # the weights it runs on: its own, or the shared base
    adapter: LoraAdapter | None
    tokenizer: PreTrainedTokenizerBase
    defaults: GenerationDefaults
    novelty: NoveltyIndex | None
    prefix_ids: list[int]
    stops: StopTokens
    context_size: int


@dataclass(eq=False)
class _Base:
    source: str
    runtime: Runtime
    fingerprint: str


class ModelRegistry:
    def __init__(
        self,
        reader: ModelStoreReader,
        device: torch.device,
        dtype: torch.dtype,
        capacity: int,
        adapter_capacity: int,
        quantize: bool,
    ) -> None:
        self._reader = reader
        self._device = device
        self._dtype = dtype
        self._capacity = capacity
        self._adapter_capacity = adapter_capacity
        self._quantize = quantize
        # full models by name and bases by source share `capacity`
        self._heavy: OrderedDict[tuple[str, str], LoadedModel | _Base] = OrderedDict()
        self._adapters: OrderedDict[str, LoadedModel] = OrderedDict()
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()

    def loaded_names(self) -> list[str]:
        """Loaded models (full ones, then adapters), least recently used first."""
        with self._lock:
            full = [name for kind, name in self._heavy if kind == "model"]
            return full + list(self._adapters)

    def loaded_bases(self) -> list[str]:
        with self._lock:
            return [source for kind, source in self._heavy if kind == "base"]

    def acquire(self, name: str) -> LoadedModel:
        """The serving version of ``name``, loading (and evicting) as needed."""
        serving = self._reader.serving_version_path(name)
        if serving is None:
            raise ModelNotFoundError(
                f"there is no model named '{name}': train it first (tweetlike train {name})"
            )
        current = self._current(name)
        if current is not None and current.published.path == serving:
            return current
        try:
            fresh = self._load(name)
        except (BrokenModelError, ModelUnavailableError) as exc:
            if current is not None:
                log.error(
                    "model %s: new version is broken, still serving %s: %s",
                    name,
                    current.published.path.name,
                    exc,
                )
                return current
            if isinstance(exc, ModelUnavailableError):
                log.error("model %s is refused: %s", name, exc)
                raise
            log.error("model %s is broken and skipped: %s", name, exc)
            raise ModelUnavailableError(
                f"the model '{name}' is damaged or incomplete; retrain it (tweetlike train {name})"
            ) from None
        self._keep(name, fresh)
        if current is not None:
            log.info("model %s: now serving version %s", name, fresh.published.path.name)
        return fresh

    def clear(self) -> None:
        with self._lock:
            self._heavy.clear()
            self._adapters.clear()
            self._tokenizers.clear()
        self._release_memory()

    # bookkeeping -------------------------------------------------------------------------

    def _current(self, name: str) -> LoadedModel | None:
        with self._lock:
            adapter = self._adapters.get(name)
            if adapter is not None:
                self._adapters.move_to_end(name)
                base_key = ("base", adapter.runtime.label)
                if base_key in self._heavy:
                    self._heavy.move_to_end(base_key)
                return adapter
            full = self._heavy.get(("model", name))
            if isinstance(full, LoadedModel):
                self._heavy.move_to_end(("model", name))
                return full
            return None

    def _keep(self, name: str, loaded: LoadedModel) -> None:
        evicted: list[str] = []
        with self._lock:
            self._adapters.pop(name, None)
            self._heavy.pop(("model", name), None)
            if loaded.adapter is not None:
                self._adapters[name] = loaded
                while len(self._adapters) > self._adapter_capacity:
                    evicted.append(self._adapters.popitem(last=False)[0])
            else:
                self._heavy[("model", name)] = loaded
            evicted += self._evict_heavy()
        for old in evicted:
            log.info("%s unloaded (least recently used)", old)
        if evicted:
            self._release_memory()

    def _evict_heavy(self) -> list[str]:
        """Drop least recently used full models and bases beyond capacity (lock held); a
        base takes its adapters with it."""
        evicted = []
        while len(self._heavy) > self._capacity:
            (kind, key), entry = self._heavy.popitem(last=False)
            evicted.append(f"{kind} {key}")
            if isinstance(entry, _Base):
                for name in [n for n, a in self._adapters.items() if a.runtime is entry.runtime]:
                    del self._adapters[name]
                    evicted.append(f"model {name}")
        live = {id(m.tokenizer) for m in self._adapters.values()} | {
            id(m.tokenizer) for m in self._heavy.values() if isinstance(m, LoadedModel)
        }
        for digest in [d for d, t in self._tokenizers.items() if id(t.tokenizer) not in live]:
            del self._tokenizers[digest]
        return evicted

    # loading -----------------------------------------------------------------------------

    def _load(self, name: str) -> LoadedModel:
        published = self._reader.get(name)
        if published.metadata.method == "lora":
            return self._load_adapter(name, published)
        path = published.path
        try:
            model = _quietly_load(str(path))
            runtime = self._runtime(f"model {name}", model, adapters=False)
            loaded = self._serving(published, runtime, adapter=None)
        except BrokenModelError:
            raise
        except Exception as exc:  # any failure to read the folder means it is unusable
            raise BrokenModelError(f"{path}: {first_line(exc)}") from None
        log.info("model %s: loaded version %s on %s", name, path.name, self._device)
        return loaded

    def _load_adapter(self, name: str, published: PublishedModel) -> LoadedModel:
        metadata = published.metadata
        base = self._base(metadata.base_model)
        if metadata.base_fingerprint != base.fingerprint:
            recorded = (metadata.base_fingerprint or "none")[:12]
            raise ModelUnavailableError(
                f"the model '{name}' was trained on a different version of its base "
                f"'{metadata.base_model}' than the one loaded here (base fingerprint "
                f"{recorded} vs {base.fingerprint[:12]}); retrain it on this base "
                f"(tweetlike train {name}) or restore the base it was trained on"
            )
        path = published.path
        try:
            adapter = load_adapter(path, base.runtime.projections, self._device, self._dtype)
            loaded = self._serving(published, base.runtime, adapter)
        except UnsupportedAdapterError as exc:
            raise ModelUnavailableError(
                f"the model '{name}' is a LoRA adapter this server cannot apply: {exc}; "
                f"retrain it with tweetlike train {name} --method lora"
            ) from None
        except BrokenModelError:
            raise
        except Exception as exc:
            raise BrokenModelError(f"{path}: {first_line(exc)}") from None
        log.info(
            "model %s: loaded adapter version %s (%.1f MB) on base %s",
            name,
            path.name,
            adapter.nbytes / 1e6,
            metadata.base_model,
        )
        return loaded

    def _base(self, base_model: str) -> _Base:
        """The shared base for ``base_model``, loaded (and fingerprinted) once."""
        source = base_source(base_model, self._reader.models_dir)
        with self._lock:
            entry = self._heavy.get(("base", source))
            if isinstance(entry, _Base):
                self._heavy.move_to_end(("base", source))
                return entry
        try:
            model = _quietly_load(source, published=False)
            fingerprint = weights_fingerprint(model)
            runtime = self._runtime(source, model, adapters=True)
        except Exception as exc:
            log.error("base model %s could not be loaded: %s", source, first_line(exc))
            raise ModelUnavailableError(
                f"the base model '{base_model}' could not be loaded: {first_line(exc)}"
            ) from None
        base = _Base(source=source, runtime=runtime, fingerprint=fingerprint)
        with self._lock:
            self._heavy[("base", source)] = base
            evicted = self._evict_heavy()
        for old in evicted:
            log.info("%s unloaded (least recently used)", old)
        log.info("base model %s loaded on %s", source, self._device)
        return base

    def _runtime(self, label: str, model: PreTrainedModel, *, adapters: bool) -> Runtime:
        """Move ``model`` to the serving device and precision, ready for batches."""
        model.to(device=self._device, dtype=self._dtype).eval()
        router, projections = None, {}
        if adapters:
            projections, router = wrap_projections(model)
        if self._quantize:
            quantize_int8(model)
        elif can_pack(self._device, self._dtype):
            pack_linear_layers(model)
        config = model.config
        return Runtime(
            label=label,
            model=model,
            device=self._device,
            dtype=self._dtype,
            context_size=int(getattr(config, "n_positions", 0) or 1024),
            vocab_size=int(config.vocab_size),
            router=router,
            projections=projections,
        )

    def _serving(
        self, published: PublishedModel, runtime: Runtime, adapter: LoraAdapter | None
    ) -> LoadedModel:
        path = published.path
        defaults = GenerationDefaults.read(path)
        shared = self._tokenizer(path)
        tokenizer = shared.tokenizer
        eos_id = _eos_id(defaults, tokenizer, runtime.model)
        stops = {eos_id}
        if defaults.stop_at_newline:
            stops |= shared.newline_ids
        return LoadedModel(
            published=published,
            runtime=runtime,
            adapter=adapter,
            tokenizer=tokenizer,
            defaults=defaults,
            novelty=_load_novelty(path),
            prefix_ids=tokenizer.encode(defaults.prompt_prefix) if defaults.prompt_prefix else [],
            stops=StopTokens(frozenset(stops)),
            context_size=runtime.context_size,
        )

    def _tokenizer(self, folder: Path) -> Tokenizer:
        digest = hashlib.sha256()
        for file in TOKENIZER_FILES:
            path = folder / file
            if path.is_file():
                digest.update(file.encode() + b"\0" + path.read_bytes())
        key = digest.hexdigest()
        with self._lock:
            shared = self._tokenizers.get(key)
        if shared is None:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            shared = Tokenizer(tokenizer, frozenset(_newline_ids(tokenizer)))
            with self._lock:
                self._tokenizers[key] = shared
        return shared

    def _release_memory(self) -> None:
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _quietly_load(source: str, *, published: bool = True) -> PreTrainedModel:
    """Load weights as stored, without transformers' progress bars and notices filling the
    bot's log (the caller casts them to the serving precision).

    A base named by Hub id is read from the local cache when it is there (its training put
    it there), so serving asks no network and waits on no retries; only a base never
    downloaded on this machine is fetched.
    """
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if published:
            return AutoModelForCausalLM.from_pretrained(source, use_safetensors=True)
        try:
            return AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
        except OSError:
            return AutoModelForCausalLM.from_pretrained(source)
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
