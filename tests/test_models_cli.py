"""``tweetlike models [--json]``: the published models, their stats, and broken folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from bot.cli import main
from bot.model_store import METADATA_FILE, HandleStats, ModelMetadata
from bot.training import publish


def publish_folder(
    models_dir: Path,
    name: str,
    version: str,
    eval_loss: float | None,
    *,
    method: Literal["full", "lora"] = "full",
    base_model: str = "tiny",
) -> None:
    """A minimal folder the store accepts; listing reads metadata, never the weights."""
    handles = name.split("-")
    per_handle = {
        h: HandleStats(tweets_downloaded=100, retweets=10, short_tweets=20, tweets_kept=70)
        for h in handles
    }
    metadata = ModelMetadata(
        handles=handles,
        tweets_downloaded=100 * len(handles),
        retweets=10 * len(handles),
        short_tweets=20 * len(handles),
        tweets_kept=70 * len(handles),
        per_handle=per_handle,
        base_model=base_model,
        method=method,
        base_fingerprint="ab" * 32 if method == "lora" else None,
        version=version,
        trained_at="2026-11-25T12:00:00+00:00",
        newest_tweet_id="123",
        eval_loss=eval_loss,
    )
    folder = publish.staging_dir(models_dir, name)
    if method == "lora":
        (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
        (folder / "adapter_model.safetensors").write_bytes(b"adapter")
    else:
        (folder / "config.json").write_text("{}", encoding="utf-8")
        (folder / "model.safetensors").write_bytes(b"weights")
    (folder / METADATA_FILE).write_text(metadata.model_dump_json(), encoding="utf-8")
    publish.publish(models_dir, name, folder, version, keep_versions=3)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("TWEETLIKE_STORAGE__MODELS_DIR", str(folder))
    return folder


def test_models_json_lists_each_published_model_with_its_stats(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_folder(models_dir, "pip", "20260101T000000000000Z", 3.25)
    publish_folder(models_dir, "ann-pip", "20260102T000000000000Z", None)

    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)

    assert [m["name"] for m in listed] == ["ann-pip", "pip"]
    combined, single = listed
    assert combined["handles"] == ["ann", "pip"] and combined["eval_loss"] is None
    assert combined["per_handle"]["ann"]["tweets_kept"] == 70
    assert single["tweets_kept"] == 70 and single["tweets_downloaded"] == 100
    assert single["base_model"] == "tiny" and single["version"] == "20260101T000000000000Z"
    assert single["trained_at"] == "2026-11-25T12:00:00+00:00" and single["eval_loss"] == 3.25
    assert single["path"] == str(models_dir / ".versions" / "pip" / "20260101T000000000000Z")


def test_models_table_shows_counts_method_base_version_date_and_loss(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_folder(models_dir, "pip", "20260101T000000000000Z", 3.25)

    assert main(["models"]) == 0
    header, row = capsys.readouterr().out.splitlines()

    assert header.split()[:5] == ["NAME", "HANDLES", "KEPT/DOWNLOADED", "METHOD", "BASE"]
    assert row.split() == [
        "pip",
        "@pip",
        "70/100",
        "full",
        "tiny",
        "20260101T000000000000Z",
        "2026-11-25T12:00:00+00:00",
        "3.250",
    ]


def test_a_broken_model_is_reported_on_stderr_and_the_rest_still_listed(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_folder(models_dir, "pip", "20260101T000000000000Z", 3.25)
    (models_dir / "halfdone").mkdir()
    (models_dir / "halfdone" / "config.json").write_text("{}", encoding="utf-8")

    assert main(["models", "--json"]) == 0
    captured = capsys.readouterr()

    assert [m["name"] for m in json.loads(captured.out)] == ["pip"]
    assert "halfdone" in captured.err and METADATA_FILE in captured.err


def test_an_empty_store_lists_nothing_and_says_how_to_train(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["models"]) == 0
    assert "tweetlike train HANDLE" in capsys.readouterr().out


def test_a_lora_model_is_listed_with_its_method_base_and_fingerprint(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_folder(
        models_dir, "pip", "20260101T000000000000Z", 3.25, method="lora", base_model="gpt2"
    )

    assert main(["models"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[3:5] == ["lora", "gpt2"]
    assert main(["models", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["method"], listed["base_model"]) == ("lora", "gpt2")
    assert listed["base_fingerprint"] == "ab" * 32
