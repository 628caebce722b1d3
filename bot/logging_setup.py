"""Standard-library logging in discord.py's ``setup_logging`` style, with secrets redacted.

Every configured secret value is replaced by ``[redacted]`` in every log record, whichever
library emitted it, so a token can never reach a log file even through an exception text.
"""

from __future__ import annotations

import logging
import sys

from bot.config import Settings

_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = message
        exc_text = record.exc_text
        for secret in self._secrets:
            redacted = redacted.replace(secret, "[redacted]")
            if exc_text:
                exc_text = exc_text.replace(secret, "[redacted]")
        record.msg, record.args, record.exc_text = redacted, None, exc_text
        return True


def secret_values(settings: Settings) -> list[str]:
    sections = (settings.discord, settings.x)
    return [
        value.get_secret_value()
        for section in sections
        for value in section.__dict__.values()
        if hasattr(value, "get_secret_value")
    ]


def setup_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Log to stderr (stdout belongs to command output and the progress protocol)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactSecrets(secret_values(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("discord.gateway", "apscheduler.executors", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
