"""Argument and config mistakes are answered before torch or transformers is imported.

Loading them takes seconds, so a mistake found after that is a slow answer. Each test runs
the real CLI in a fresh interpreter under ``-X importtime``, which lists every module the
run imported, and asserts the one-line error and that no heavy module is in that list (a
property of the code path, not of how fast this machine is).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main

HEAVY = ("torch", "transformers", "peft")


def run_cli(
    cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m bot ARGV``; the result and the modules it imported."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TWEETLIKE_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot", *argv],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return done, modules


def messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


def assert_nothing_heavy(modules: set[str]) -> None:
    assert "bot.cli" in modules  # the probe works: the run's imports are listed
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == []


BLOCKED = {"TWEETLIKE_TRAINING__BLOCKED_HANDLES": '["optedout"]'}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["generate", "sample", "hi", "-n", "0"], {}, "count must be between 1 and 5, not 0"),
        (["generate", "sample", "hi", "--temperature", "9"], {}, "temperature must be between"),
        (["generate", "sample", "x" * 201], {}, "the limit is 200"),
        (["generate", "not a name!", "hi"], {}, "is not an X handle"),
        (["generate", "@OptedOut", "hi"], BLOCKED, "@optedout has opted out"),
        (["train", "sample", "--epochs", "0"], {}, "--epochs must be between 1 and 100 (got 0)"),
        (["train", "sample", "bad handle!"], {}, "is not an X handle"),
        (["train", "optedout"], BLOCKED, "@optedout has opted out"),
        (["train", "sample", "--base-model", "./no/such"], {}, "folder ./no/such does not exist"),
        (["train", "sample", "--base-model", "."], {}, "is not a Hugging Face model folder"),
        (["run"], {}, "config error: discord.token is not set"),
        (["models"], {"TWEETLIKE_GENERATON__DEVICE": "cpu"}, "unknown section 'generaton'"),
    ],
)
def test_mistake_is_one_line_before_torch_is_imported(
    argv: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    done, modules = run_cli(tmp_path, *argv, env=env)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = messages(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("tweetlike: error: "), lines
    assert expected in lines[0]
    assert_nothing_heavy(modules)


def test_train_mistake_in_json_mode_is_an_error_event_before_torch(tmp_path: Path) -> None:
    done, modules = run_cli(tmp_path, "train", "sample", "--epochs", "0", "--progress", "json")
    assert done.returncode == 1
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"event": "error", "message": "--epochs must be between 1 and 100 (got 0)"}
    ]
    assert messages(done.stderr) == []
    assert_nothing_heavy(modules)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, put back as it was: the CLI configures it for the whole process."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["models"], logging.WARNING),
        (["-v", "models"], logging.INFO),
        (["models", "-v"], logging.INFO),
        (["models", "-vv"], logging.DEBUG),
        (["run"], logging.INFO),
        (["run", "-vv"], logging.DEBUG),
    ],
)
def test_logs_are_warnings_only_unless_asked_or_serving_discord(
    argv: list[str], level: int, root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    main(argv)
    assert root_logger.level == level
    capsys.readouterr()


def test_config_option_is_accepted_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[generation]\nmax_queue = 0\n", encoding="utf-8")
    assert main(["models", "--config", str(path)]) == 2
    assert "generation.max_queue" in capsys.readouterr().err
