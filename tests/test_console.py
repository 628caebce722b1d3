"""The console transport: line parsing, answers through the core, and `run --console`."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from model_factory import publish_tiny_model
from service_doubles import RecordingJobControl

from bot.adapters.console import BANNER, HELP, PROMPT, ConsoleAdapter, ConsoleNotifier, parse_line
from bot.cli import main
from bot.config import Settings
from bot.core.formatting import AI_LABEL, reply_as_text
from bot.core.replies import GeneratedTweets
from bot.core.service import TweetlikeService
from bot.generation.engine import GenerationEngine

REPO = Path(__file__).resolve().parents[1]


def test_positional_words_form_the_prompt_and_known_options_are_options() -> None:
    parsed = parse_line("/tweetlike sample I don't sleep at time:8pm count:3")
    assert parsed is not None
    assert parsed.command == "tweetlike"
    assert parsed.args == ["sample", "I", "don't", "sleep", "at", "time:8pm"]
    assert parsed.options == {"count": "3"}


def test_double_quotes_keep_spaces_in_arguments_and_options() -> None:
    parsed = parse_line('/autopost add sample 42 cron:"0 9 * * *" prompt:"My dream is"')
    assert parsed is not None
    assert parsed.args == ["add", "sample", "42"]
    assert parsed.options == {"cron": "0 9 * * *", "prompt": "My dream is"}


def test_blank_line_is_not_a_command() -> None:
    assert parse_line("   ") is None


@pytest.fixture
def console(
    settings: Settings,
) -> Iterator[tuple[ConsoleAdapter, io.StringIO, RecordingJobControl]]:
    publish_tiny_model(settings.storage.models_dir, "sample")
    out = io.StringIO()
    jobs = RecordingJobControl()
    with GenerationEngine(settings) as engine:
        service = TweetlikeService(settings, engine, jobs)
        yield ConsoleAdapter(service, ConsoleNotifier(out)), out, jobs


async def test_tweetlike_line_prints_labelled_tweets_starting_with_the_prompt(console) -> None:
    adapter, _, _ = console
    text = await adapter.answer('/tweetlike sample "My dream is" count:2 seed:4')
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "Sample (@sample)"
    assert [line.startswith("  My dream is") for line in lines[1:3]] == [True, True]
    assert "AI-generated" in lines[3]


async def test_console_user_is_the_operator(console) -> None:
    adapter, _, jobs = console
    text = await adapter.answer("/train newbie")
    assert text is not None and text.startswith("Train of @newbie queued")
    assert jobs.trainings[0].requester is not None and jobs.trainings[0].requester.is_console


async def test_console_has_no_cooldown_between_lines(console) -> None:
    adapter, _, _ = console
    for seed in (1, 2):
        text = await adapter.answer(f"/tweetlike sample Hi seed:{seed}")
        assert text is not None and "  Hi" in text


async def test_bad_option_value_is_answered_not_raised(console) -> None:
    adapter, _, _ = console
    assert await adapter.answer("/tweetlike sample Hi count:many") == (
        "count must be a whole number, not 'many'"
    )


async def test_notifier_prints_auto_posts_and_reuses_the_progress_message(console) -> None:
    adapter, out, _ = console
    tweets = GeneratedTweets(model="sample", prompt="Hi", tweets=["Hi there"])
    await adapter.notifier.post_tweets(77, tweets)
    first = await adapter.notifier.post_progress(77, "j1", "50%", message_id=None)
    second = await adapter.notifier.post_progress(77, "j1", "100%", message_id=first)
    assert first == second
    assert out.getvalue().splitlines() == [
        "[channel 77] @sample",
        "  Hi there",
        f"  [{AI_LABEL}]",
        "[job j1] 50%",
        "[job j1] 100%",
    ]


def test_ai_label_reads_the_same_in_the_readme_and_the_console() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"**{AI_LABEL}**" in readme
    tweets = GeneratedTweets(model="sample", prompt="Hi", tweets=["Hi there"])
    assert reply_as_text(tweets).splitlines()[-1] == f"  [{AI_LABEL}]"


class TerminalInput(io.StringIO):
    """Lines typed at a terminal: the console must see a tty, as on a real one."""

    def isatty(self) -> bool:
        return True


async def test_on_a_terminal_the_console_greets_and_prompts_for_each_line(console) -> None:
    adapter, out, _ = console
    await adapter.run(TerminalInput("/help\n"), asyncio.Event())
    # The terminal echoes what the user types (and their Enter); at Ctrl-D the console ends
    # the prompt's line itself.
    assert out.getvalue() == f"{BANNER}\n{PROMPT}{HELP}\n{PROMPT}\n"


async def test_reading_a_pipe_the_console_prints_only_the_answers(console) -> None:
    adapter, out, _ = console
    await adapter.run(io.StringIO("/help\n\n/help\n"), asyncio.Event())
    assert out.getvalue() == f"{HELP}\n{HELP}\n"


async def test_a_post_arriving_at_the_prompt_goes_below_it_and_the_prompt_returns(
    console,
) -> None:
    adapter, out, _ = console
    adapter.notifier.show_prompt()
    await adapter.notifier.post_text(5, "hello")
    assert out.getvalue() == f"{PROMPT}\n[channel 5] hello\n{PROMPT}"


def test_run_without_token_or_console_exits_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "discord.token is not set" in err


def _console_process(tmp_path: Path) -> subprocess.Popen[str]:
    publish_tiny_model(tmp_path / "models", "sample")
    env = {**os.environ, "TWEETLIKE_GENERATION__DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--console"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_run_console_answers_piped_lines_quietly_and_ends_at_eof(tmp_path: Path) -> None:
    process = _console_process(tmp_path)
    out, err = process.communicate(
        "/tweetlike sample My dream is count:2\n/status\n/models\n", timeout=60
    )
    assert process.returncode == 0, err
    tweets = [line.strip() for line in out.splitlines() if line.startswith("  My dream is")]
    assert len(tweets) == 2
    assert "  device: cpu" in out and "  @sample: 3 tweets, base tiny" in out
    assert out.startswith("Sample (@sample)\n")  # no banner, no prompt: only the answers
    assert [line for line in err.splitlines() if " INFO " in line] == []


def test_run_console_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    process = _console_process(tmp_path)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("/tweetlike sample Hello count:1\n")
    process.stdin.flush()
    for line in process.stdout:
        if line.startswith("  Hello"):
            break
    else:
        pytest.fail("the console ended before answering")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert process.returncode == 0
    assert time.monotonic() - started < 20
    process.stdin.close()
    process.stdout.close()
    assert process.stderr is not None and "Traceback" not in process.stderr.read()
    process.stderr.close()
