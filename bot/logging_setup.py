"""Standard-library logging in discord.py's ``setup_logging`` style, with secrets redacted.

Every configured secret value is replaced by ``[redacted]`` in every log record, whichever
library emitted it, so a token can never reach a log file even through an exception text.
The same :func:`bot.redaction.redact` cleans every message shown to users.
"""

from __future__ import annotations

import logging
import sys

from bot.redaction import redact

_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def log_level(verbosity: int, *, service: bool) -> int:
    """WARNING unless asked (``-v`` INFO, ``-vv`` DEBUG): a command's output is what the
    user asked for, and log lines interleaved with it are noise. A service serving Discord
    has no output but its log, which operators read, so it starts at INFO."""
    if verbosity >= 2:
        return logging.DEBUG
    if verbosity == 1 or service:
        return logging.INFO
    return logging.WARNING


def setup_logging(level: int = logging.WARNING) -> None:
    """Log to stderr (stdout belongs to command output and the progress protocol)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("discord.gateway", "apscheduler.executors", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
