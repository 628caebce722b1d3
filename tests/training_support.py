"""Shared pieces of the training tests: a workspace with its own config, data and CLI runs."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bot
from bot.cli import main
from bot.sources.store import TweetStore
from bot.sources.tweets import Tweet

REPO_ROOT = Path(bot.__file__).resolve().parent.parent
SAMPLE_LINES = (REPO_ROOT / "bot" / "assets" / "sample_tweets.txt").read_text("utf-8").splitlines()
SMALL_ACCOUNT = SAMPLE_LINES[:120]  # about 10,000 characters: trains, with the size warning


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def data(self) -> Path:
        return self.root / "data"


def write_config(root: Path, **training: Any) -> Path:
    lines = [
        "[storage]",
        f"models_dir = {json.dumps(str(root / 'models'))}",
        f"data_dir = {json.dumps(str(root / 'data'))}",
        f"database_url = {json.dumps('sqlite:///' + str(root / 'db.sqlite'))}",
        "[generation]",
        'device = "cpu"',
        "[training]",
        *(
            f"{key} = {json.dumps(value)}"
            for key, value in {"base_model": "tiny", **training}.items()
        ),
    ]
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def store(data_dir: Path, handle: str, texts: list[str], first_id: int = 1000) -> None:
    tweets = [Tweet(id=str(first_id + i), text=text) for i, text in enumerate(texts)]
    TweetStore(data_dir).merge(handle, tweets, source="import")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def train(ws: Workspace, *args: str) -> tuple[int, str, str]:
    return run_cli("--config", str(ws.config), "train", *args)
