"""The training subprocess plumbing: settings hand-over and dying with the bot."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from fakes import WAIT_SECONDS
from jobs_support import process_alive

from bot.config import Settings
from bot.jobs.runner import child_environment, training_command

SECRET = "sekrit-bearer-token-1234"


def test_the_child_sees_the_parents_effective_settings_without_secrets_on_its_command_line(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        x={"bearer_token": SECRET},
        training={"epochs": 3, "blocked_handles": ["nobody"]},
        autopost=[{"handle": "sample", "channel_id": "42", "every": "6h"}],
    )
    command = training_command(["sample"], fetch=True)
    probe = "from bot.config import load_settings; print(load_settings().model_dump_json())"

    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env=child_environment(settings, {"TWEETLIKE_TRAINING__EPOCHS": "9", "PATH": "/usr/bin"}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    child = Settings.model_validate(json.loads(shown) | {"x": {"bearer_token": SECRET}})
    assert child.model_dump(exclude={"x"}) == settings.model_dump(exclude={"x"})
    assert command[-4:] == ["sample", "--progress", "json", "--fetch"]
    assert SECRET not in " ".join(command)
    assert '"bearer_token":"**********"' in shown.replace(" ", "")


def test_a_training_subprocess_dies_with_a_killed_bot(tmp_path: object) -> None:
    bot = textwrap.dedent(
        """
        import asyncio, os, sys
        from bot.jobs.runner import TrainingProcess

        async def main():
            child = await TrainingProcess.start(
                [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ)
            )
            print(child.pid, flush=True)
            os._exit(0)  # no clean-up: as if the bot were SIGKILLed

        asyncio.run(main())
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", bot], capture_output=True, text=True, check=True, timeout=30
    )
    orphan = int(result.stdout.strip())

    deadline = time.monotonic() + WAIT_SECONDS
    while process_alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(orphan)
