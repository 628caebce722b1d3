"""Secrets never reach the logs, whichever logger or exception carries them."""

import logging

from bot.config import Settings
from bot.logging_setup import setup_logging


def test_configured_secrets_are_redacted_from_messages_and_tracebacks(capsys) -> None:
    Settings(discord={"token": "tok-abc-123"}, x={"bearer_token": "bearer-xyz"})
    setup_logging()
    log = logging.getLogger("discord.client")
    log.warning("logging in with %s", "tok-abc-123")
    try:
        raise RuntimeError("bad header Bearer bearer-xyz")
    except RuntimeError:
        log.exception("request failed")
    err = capsys.readouterr().err
    assert "tok-abc-123" not in err and "bearer-xyz" not in err
    assert err.count("[redacted]") >= 2
