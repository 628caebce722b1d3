"""X handles and the model names built from them.

X handles are case-insensitive, so everything downstream (data dir, model store, queues,
block list) works on the lower-cased form.
"""

import re
from collections.abc import Iterable

from bot.errors import BlockedHandleError, InvalidHandleError

HANDLE_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,15}$")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9_]{1,15}(-[a-z0-9_]{1,15})*$")
HANDLE_RULE = "1-15 letters, digits or underscores (a leading @ is fine)"


def normalize_handle(raw: str) -> str:
    """Return the canonical (lower-case, no ``@``) handle or raise InvalidHandleError."""
    handle = raw.strip()
    if handle.startswith("@"):
        handle = handle[1:]
    if not HANDLE_PATTERN.fullmatch(handle):
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        raise InvalidHandleError(f"'{shown}' is not an X handle: use {HANDLE_RULE}")
    return handle.lower()


def model_name(handles: Iterable[str]) -> str:
    """Name of the model trained on ``handles``: the sorted handles joined with ``-``."""
    unique = sorted({normalize_handle(h) for h in handles})
    if not unique:
        raise InvalidHandleError("at least one handle is needed")
    return "-".join(unique)


def handles_of(name: str) -> list[str]:
    """The handles a model name stands for (inverse of :func:`model_name`)."""
    return [normalize_handle(part) for part in name.split("-")]


def is_model_name(name: str) -> bool:
    return bool(MODEL_NAME_PATTERN.fullmatch(name))


def check_not_blocked(handles: Iterable[str], blocked: Iterable[str]) -> None:
    """Raise BlockedHandleError if any handle opted out."""
    blocked_set = {b.strip().lstrip("@").lower() for b in blocked}
    for handle in handles:
        if normalize_handle(handle) in blocked_set:
            raise BlockedHandleError(
                f"@{normalize_handle(handle)} has opted out of tweetlike; "
                "it is never downloaded, trained or imitated"
            )
