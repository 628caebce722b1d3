"""The model store: ``models/<name>/`` folders, each a complete Hugging Face model.

Layout (see docs/ARCHITECTURE.md):

    models/<name>               symlink -> .versions/<name>/<version>   (the serving version)
    models/.versions/<name>/<version>/   complete folders, newest kept for rollback
    models/.staging/            work folders of trainings in progress (never served)

Swapping the ``<name>`` symlink with ``os.replace`` is atomic, so a reader sees the old
complete model or the new complete one. This module holds the read side shared by the
generation engine, the service core and the CLI; publishing lives in
``bot.training.publish``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.errors import first_line

METADATA_FILE = "tweetlike.json"
NOVELTY_FILE = "novelty.bin"
VERSIONS_DIR = ".versions"
STAGING_DIR = ".staging"
# What a servable folder must hold besides tweetlike.json, by training method.
REQUIRED_FILES = {
    "full": ("config.json",),
    "lora": ("adapter_config.json", "adapter_model.safetensors"),
}


class HandleStats(BaseModel):
    tweets_downloaded: int
    retweets: int
    short_tweets: int
    tweets_kept: int


class ModelMetadata(BaseModel):
    """``tweetlike.json``: what a model was trained on and how (PRODUCT.md §4)."""

    model_config = ConfigDict(extra="allow")

    handles: list[str]
    tweets_downloaded: int
    retweets: int
    short_tweets: int
    tweets_kept: int
    per_handle: dict[str, HandleStats] = {}
    base_model: str
    # "full": every weight fine-tuned (a complete model folder); "lora": a PEFT adapter on
    # ``base_model``, valid only on the base whose weights hash to ``base_fingerprint``.
    method: Literal["full", "lora"] = "full"
    base_fingerprint: str | None = None
    version: str
    trained_at: str
    newest_tweet_id: str | None = None
    eval_loss: float | None = None
    display_names: dict[str, str] = {}
    avatar_urls: dict[str, str] = {}


@dataclass(frozen=True)
class PublishedModel:
    name: str
    path: Path  # the resolved version folder, stable while this version is kept
    metadata: ModelMetadata


class BrokenModelError(Exception):
    """A folder in the store is not a complete model; carries a one-line reason."""


class ModelStoreReader:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    def names(self) -> list[str]:
        """Names of entries that look like models (not hidden, not README)."""
        if not self.models_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.models_dir.iterdir()
            if not entry.name.startswith(".") and entry.is_dir()
        )

    def get(self, name: str) -> PublishedModel:
        """The serving version of ``name``; raises FileNotFoundError or BrokenModelError."""
        link = self.models_dir / name
        if not link.is_dir():
            raise FileNotFoundError(name)
        path = link.resolve()
        meta_path = path / METADATA_FILE
        try:
            metadata = ModelMetadata.model_validate_json(meta_path.read_bytes())
        except FileNotFoundError:
            raise BrokenModelError(f"{link} has no {METADATA_FILE}") from None
        except (ValidationError, OSError, json.JSONDecodeError) as exc:
            raise BrokenModelError(f"{meta_path} is unreadable: {first_line(exc)}") from None
        required = REQUIRED_FILES[metadata.method]
        missing = [f for f in required if not (path / f).is_file()]
        if metadata.method == "full" and not any(path.glob("*.safetensors")):
            missing.append("*.safetensors")
        if missing:
            raise BrokenModelError(f"{link} is incomplete ({', '.join(missing)} missing)")
        return PublishedModel(name=name, path=path, metadata=metadata)

    def list(self) -> tuple[list[PublishedModel], dict[str, str]]:
        """All readable models, plus {name: reason} for the broken ones."""
        models: list[PublishedModel] = []
        broken: dict[str, str] = {}
        for name in self.names():
            try:
                models.append(self.get(name))
            except BrokenModelError as exc:
                broken[name] = str(exc)
            except FileNotFoundError:
                continue
        return models, broken

    def serving_version_path(self, name: str) -> Path | None:
        """Where ``models/<name>`` points now; cheap enough to call per request."""
        link = self.models_dir / name
        try:
            return Path(os.path.realpath(link)) if link.is_dir() else None
        except OSError:
            return None
