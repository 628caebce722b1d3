"""``tweetlike models``: what is published, as a table for people or JSON for scripts.

A broken folder in the store is reported on stderr and skipped, so one bad model never
hides the good ones.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bot.config import Settings
from bot.model_store import ModelStoreReader, PublishedModel

COLUMNS = (
    "NAME",
    "HANDLES",
    "KEPT/DOWNLOADED",
    "METHOD",
    "BASE",
    "VERSION",
    "TRAINED",
    "EVAL LOSS",
)


def model_summary(model: PublishedModel) -> dict[str, Any]:
    """The JSON form: every ``tweetlike.json`` field plus the name and the serving folder."""
    return {"name": model.name, "path": str(model.path), **model.metadata.model_dump(mode="json")}


def _row(model: PublishedModel) -> tuple[str, ...]:
    meta = model.metadata
    return (
        model.name,
        " ".join(f"@{h}" for h in meta.handles),
        f"{meta.tweets_kept}/{meta.tweets_downloaded}",
        meta.method,
        meta.base_model,
        meta.version,
        meta.trained_at,
        "-" if meta.eval_loss is None else f"{meta.eval_loss:.3f}",
    )


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def print_models(settings: Settings, *, as_json: bool = False) -> int:
    models, broken = ModelStoreReader(settings.storage.models_dir).list()
    for name, reason in broken.items():
        print(f"tweetlike: warning: skipping broken model {name}: {reason}", file=sys.stderr)
    if as_json:
        print(json.dumps([model_summary(m) for m in models], indent=2, ensure_ascii=False))
    elif models:
        print(format_table([COLUMNS, *(_row(m) for m in models)]))
    else:
        print(
            f"no published models in {settings.storage.models_dir}: "
            "train one with `tweetlike train HANDLE`"
        )
    return 0
