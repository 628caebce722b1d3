"""`tweetlike demo` from a fresh directory: import, train with the tiny base, answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.adapters.console import PROMPT
from bot.core.formatting import AI_LABEL
from bot.demo import DEMO_LINE, WHAT_YOU_SEE


def _demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEETLIKE_")}
    env["OMP_NUM_THREADS"] = "2"
    return subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _tweets(stdout: str) -> list[str]:
    start = stdout.index(f"{PROMPT}{DEMO_LINE}\n")
    reply = stdout[start:].split(WHAT_YOU_SEE)[0].splitlines()[2:]
    return [line.strip() for line in reply if line.startswith("  ") and AI_LABEL not in line]


def test_demo_trains_the_sample_account_then_reuses_it(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "sample: 352 new tweets" in first.stdout
    assert "published models/sample" in first.stdout
    tweets = _tweets(first.stdout)
    assert len(tweets) == 3
    assert all(t.startswith("My dream is") for t in tweets)
    assert (tmp_path / "models" / "sample" / "tweetlike.json").is_file()
    # It says what the output is and how to get real tweets, and logs nothing below warning.
    assert first.stdout.endswith(WHAT_YOU_SEE + "\n")
    assert [line for line in first.stderr.splitlines() if " INFO " in line] == []

    second = _demo(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Using the trained model" in second.stdout
    assert all(t.startswith("My dream is") for t in _tweets(second.stdout))
