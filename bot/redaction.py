"""Secrets never leave the process: one redactor for logs and for every user-facing message.

Every :class:`bot.config.Settings` registers its secret values here when it is built, so
whichever way settings were made (file, environment, a test), the same :func:`redact` hides
them in log records (:class:`bot.logging_setup.RedactSecrets`), in error messages
(:class:`bot.errors.TweetlikeError`), on the CLI's stderr, in progress events, in job records
and in what Discord and the console show. A secret can reach us inside text we did not write
(an API error reply echoing a header), so redaction is applied where text leaves, not only
where we build it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter values ("", "x") would blank out ordinary words; real tokens are far longer.
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secrets(values: Iterable[str]) -> None:
    """Add values to hide from now on (longest first, so a secret containing another is
    replaced whole)."""
    global _secrets
    fresh = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
    if not fresh - set(_secrets):
        return
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | fresh, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
