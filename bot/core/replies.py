"""What the service core answers with, independent of the transport that shows it.

The Discord adapter turns these into embeds and ephemeral messages, the console into lines
of text; scheduled jobs hand them to a :class:`bot.core.ports.Notifier`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.model_store import ModelMetadata


@dataclass(frozen=True)
class Requester:
    """Who asked, and where. Operator rights are decided by the core, per call."""

    user_id: int
    name: str = ""
    channel_id: int | None = None
    guild_id: int | None = None
    role_ids: frozenset[int] = frozenset()
    is_console: bool = False


@dataclass(frozen=True)
class GeneratedTweets:
    """Tweets generated for one request, in the voice of ``model`` (a handle or combo)."""

    model: str
    prompt: str
    tweets: list[str]
    display_name: str = ""
    avatar_url: str | None = None
    seed: int | None = None
    count: int = 1
    temperature: float | None = None

    @classmethod
    def dressed(
        cls,
        model: str,
        prompt: str,
        tweets: list[str],
        metadata: ModelMetadata,
        *,
        seed: int | None = None,
        count: int = 1,
        temperature: float | None = None,
    ) -> GeneratedTweets:
        """Tweets with the account's display name(s) and, for a single account, its avatar."""
        handles = metadata.handles or [model]
        names = [metadata.display_names.get(h, "") for h in handles]
        avatar = metadata.avatar_urls.get(handles[0]) if len(handles) == 1 else None
        return cls(
            model=model,
            prompt=prompt,
            tweets=list(tweets),
            display_name=" & ".join(n for n in names if n),
            avatar_url=avatar or None,
            seed=seed,
            count=count,
            temperature=temperature,
        )


@dataclass(frozen=True)
class Notice:
    """A message for the requester: errors and refusals are ephemeral (only they see it)."""

    text: str
    ephemeral: bool = True
    is_error: bool = True


@dataclass(frozen=True)
class QueuedForTraining:
    """An unknown handle was queued for training; the requester learns their place."""

    model: str
    job_id: str
    position: int
    already_queued: bool = False
    prompt: str = ""


@dataclass(frozen=True)
class TextReply:
    """Plain information (model lists, jobs, status) shown as text or a simple embed."""

    title: str
    lines: list[str] = field(default_factory=list)
    ephemeral: bool = False


Reply = GeneratedTweets | Notice | QueuedForTraining | TextReply
