"""``tweetlike generate NAME PROMPT [-n N] [--seed S] [--json]`` on a tiny model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_factory import publish_tiny_model

from bot.cli import main


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TWEETLIKE_STORAGE__MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("TWEETLIKE_GENERATION__DEVICE", "cpu")
    # Untrained: it writes noise, never a copy of these (the novelty guard is on), so what
    # these tests see does not depend on what a half-trained model happens to sample.
    publish_tiny_model(
        tmp_path / "models",
        "sample",
        ["my dream is to see the northern lights", "my dream is a house by the sea"],
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generate_prints_n_tweets_one_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "sample", "My dream is", "-n", "3", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("My dream is") for line in lines)


def test_generate_json_prints_a_list_that_a_seed_reproduces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = []
    for _ in range(2):
        assert main(["generate", "@Sample", "my dream", "-n", "2", "--seed", "5", "--json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 2
    assert all(isinstance(t, str) and t.startswith("my dream") for t in runs[0])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "sample", "hi", "-n", "9"], "count must be between 1 and 5, not 9"),
        (["generate", "sample", "hi", "--temperature", "5"], "temperature must be between"),
        (["generate", "sample", "x" * 201], "the limit is 200"),
        (["generate", "nobody", "hi"], "tweetlike train nobody"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if line.startswith("tweetlike:")]
    assert len(errors) == 1
    assert message in errors[0]
    assert "Traceback" not in captured.err
