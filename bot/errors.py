"""Errors that carry a one-line message meant for the person using tweetlike.

Anything derived from :class:`TweetlikeError` is a user-facing failure (bad input, missing
data, a refused request). The CLI prints its message on one line and exits non-zero; the
Discord and console adapters show it to the requester. Other exceptions are bugs and are
logged with their traceback.

The message is redacted whenever it is shown (:mod:`bot.redaction`): it may quote text from
elsewhere, such as an API's error reply echoing a request header.
"""

import os

from bot.redaction import redact


class TweetlikeError(Exception):
    """A failure whose message is fit to show to a user as-is, on one line."""

    exit_code = 1

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(TweetlikeError):
    """The configuration file or environment holds a bad value.

    Whichever check finds the problem, the message reads
    ``config error (<file or $VARIABLE>): <key> = <value>: <what is allowed>``, so an
    operator recognises it, and scripts see the same exit status, for every config failure.
    """

    exit_code = 2

    def __init__(self, message: str, origin: str | os.PathLike[str] | None = None) -> None:
        where = f" ({origin})" if origin else ""
        super().__init__(f"config error{where}: {message}")


class InvalidHandleError(TweetlikeError):
    """Not an X handle (1-15 letters, digits or underscores)."""


class BlockedHandleError(TweetlikeError):
    """The account opted out (``training.blocked_handles``)."""


class DataError(TweetlikeError):
    """Input tweets are missing, corrupt or wrongly shaped."""


class SourceError(TweetlikeError):
    """The X API refused or failed (auth, unknown/protected/suspended account, network)."""


class TrainingError(TweetlikeError):
    """Training cannot run or did not finish (too few tweets, bad base model, crash)."""


class ModelNotFoundError(TweetlikeError):
    """No published model has that name."""


class EngineBusyError(TweetlikeError):
    """The generation queue is full; the caller should try again shortly."""


class GenerationTimeoutError(TweetlikeError):
    """A generation request waited or ran longer than allowed."""


TRACEBACK_HEADER = "Traceback (most recent call last):"


def first_line(exc: BaseException) -> str:
    """A foreign exception's message, cut to one line for a :class:`TweetlikeError`: its
    first line, with what it leads in to where it ends in a colon (Ray Client's
    "Initialization failure from server:" quotes the server's traceback, whose last line
    says what failed); the class name when there is no message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        cause = lines[-1] if lines[1] == TRACEBACK_HEADER else lines[1]
        return f"{lines[0]} {cause}"
    return lines[0]
