"""Base models that LoRA adapters are trained on and served with.

A LoRA model (``training.method = "lora"``) is only an adapter: it means something on exactly
the base it was trained on. This module says where a base comes from and how to recognise it:

- ``base_source``: what to pass to ``from_pretrained`` for a ``training.base_model`` value. A
  Hub id stays an id, a local folder becomes its absolute path, and ``tiny`` becomes the
  shared tiny base kept in the model store (``models/.bases/tiny/``), built once, offline,
  and reused by every account, so that tests and the demo train real adapters on one base
  (pre-trained for a few seconds on the bundled sample tweets: see
  ``bot.training.tiny_base`` for why and what it buys).
- ``weights_fingerprint``: a digest of a model's weights as stored, recorded in each
  adapter's ``tweetlike.json`` and checked when serving, so an adapter is never applied to a
  different base (a re-downloaded or edited folder under the same name).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import TrainingError

if TYPE_CHECKING:
    from torch import nn

TINY_NAME = "tiny"
BASES_DIR = ".bases"
TINY_BASE_SEED = 42


def tiny_base_dir(models_dir: Path) -> Path:
    return Path(models_dir) / BASES_DIR / TINY_NAME


def is_local_path(base_model: str) -> bool:
    """Hub ids look like ``name`` or ``org/name``; paths are explicit or exist on disk."""
    return base_model.startswith((".", "/", "~")) or Path(base_model).expanduser().exists()


def check_base_model(base_model: str) -> None:
    """Catch a wrong local path before any work is done (Hub ids are checked by loading).

    It needs neither torch nor transformers, so the CLI can answer a mistyped folder before
    loading them."""
    if base_model == TINY_NAME or not is_local_path(base_model):
        return
    folder = Path(base_model).expanduser()
    if not folder.is_dir():
        raise TrainingError(
            f"base model folder {base_model} does not exist; "
            "use a Hugging Face id, a model folder or 'tiny'"
        )
    if not (folder / "config.json").is_file():
        raise TrainingError(
            f"{base_model} is not a Hugging Face model folder (no config.json); "
            "use a Hugging Face id, a model folder or 'tiny'"
        )


def base_source(base_model: str, models_dir: Path) -> str:
    """What ``from_pretrained`` loads for ``base_model`` (builds the tiny base if needed)."""
    if base_model == TINY_NAME:
        return str(ensure_tiny_base(models_dir).resolve())
    if is_local_path(base_model):
        return str(Path(base_model).expanduser().resolve())
    return base_model


def ensure_tiny_base(models_dir: Path) -> Path:
    """The shared tiny base folder, built on first use (atomically, once per store).

    Its tokenizer is trained on the bundled sample account's cleaned tweets and its weights,
    from a fixed seed, are pre-trained on them on one CPU thread, so a store gets the same
    base every time it is built on a given machine.
    """
    folder = tiny_base_dir(models_dir)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.parent / f".{TINY_NAME}.lock"):
        if (folder / "config.json").is_file():
            return folder
        staging = Path(tempfile.mkdtemp(prefix=f".{TINY_NAME}-", dir=folder.parent))
        try:
            _build_tiny_base_into(staging)
            for path in staging.iterdir():
                path.chmod(0o644)
            staging.chmod(0o755)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _remember_built(folder)
    return folder


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every weight's name, dtype, shape and bytes, in name order.

    Take it on the model as loaded from its folder (before casting or packing), so the same
    stored weights always give the same digest.
    """
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# The last tiny base this process built. Building is deterministic, so another store in the
# same process (tests make one per test) gets a copy instead of a second pre-training.
_built_here: Path | None = None


def _remember_built(folder: Path) -> None:
    global _built_here
    _built_here = folder.resolve()


def _build_tiny_base_into(staging: Path) -> None:
    if _built_here is not None and (_built_here / "config.json").is_file():
        for path in _built_here.iterdir():
            shutil.copy2(path, staging / path.name)
        return
    from bot.training.tiny_base import build_tiny_base

    model, tokenizer = build_tiny_base(_sample_tweets(), seed=TINY_BASE_SEED)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def _sample_tweets() -> list[str]:
    """The bundled sample account's tweets, cleaned as training cleans them."""
    from bot.sources.tweets import Tweet
    from bot.training.cleaning import clean_account

    asset = resources.files("bot") / "assets" / "sample_tweets.txt"
    lines = [line.strip() for line in asset.read_text(encoding="utf-8").splitlines()]
    tweets = [Tweet(id=str(n), text=text) for n, text in enumerate(lines, 1) if text]
    return clean_account(TINY_NAME, tweets).kept


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
