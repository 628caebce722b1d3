"""A foreign exception's message cut to the one line a user is shown."""

from __future__ import annotations

import pytest

from bot.errors import first_line


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("disk full\nat line 3", "disk full"),
        (
            "Initialization failure from server:\nStarting Ray client server failed.\nmore",
            "Initialization failure from server: Starting Ray client server failed.",
        ),
        (
            "Initialization failure from server:\nTraceback (most recent call last):\n"
            '  File "proxier.py", line 770\nRuntimeError: Starting Ray client server failed.',
            "Initialization failure from server: RuntimeError: Starting Ray client server failed.",
        ),
        ("\n  bad header  \n", "bad header"),
        ("", "OSError"),
    ],
)
def test_the_first_line_is_shown_with_the_next_where_it_only_leads_in(
    message: str, shown: str
) -> None:
    assert first_line(OSError(message) if message else OSError()) == shown
