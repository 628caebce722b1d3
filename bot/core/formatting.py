"""Plain-text wording shared by every transport.

The Discord renderer builds embeds from the same pieces, so the AI label, the author line
and queue wording read the same in Discord, the console and scheduled posts.
"""

from __future__ import annotations

from typing import assert_never

from bot.core.replies import GeneratedTweets, Notice, QueuedForTraining, Reply, TextReply
from bot.handles import handles_of

# The one wording of the AI label: the console, Discord embed footers, the README and the
# model card all show exactly this.
AI_LABEL = "AI-generated · not a real tweet"


def handle_label(model: str) -> str:
    """``@fdgwhite``, or ``@a · @b`` for a combined model."""
    return " · ".join(f"@{h}" for h in handles_of(model))


def author_line(tweets: GeneratedTweets) -> str:
    """What a tweet header shows: display name and handle, like X does."""
    label = handle_label(tweets.model)
    if tweets.display_name:
        return f"{tweets.display_name} ({label})"
    return label


def queue_position(position: int) -> str:
    if position <= 0:
        return "training now"
    if position == 1:
        return "next in the training queue"
    return f"number {position} in the training queue"


def queued_text(reply: QueuedForTraining) -> str:
    label = handle_label(reply.model)
    start = (
        f"{label} was already queued for training"
        if reply.already_queued
        else f"There is no model for {label} yet, so I queued its training"
    )
    return (
        f"{start} (job {reply.job_id}, {queue_position(reply.position)}). "
        "Progress is shown in this channel, and you will be pinged with your tweet when "
        "the model is ready."
    )


def reply_as_text(reply: Reply) -> str:
    """The whole reply as terminal text."""
    if isinstance(reply, GeneratedTweets):
        lines = [author_line(reply)]
        lines += [f"  {tweet}" for tweet in reply.tweets]
        lines.append(f"  [{AI_LABEL}]")
        return "\n".join(lines)
    if isinstance(reply, QueuedForTraining):
        return queued_text(reply)
    if isinstance(reply, Notice):
        return reply.text
    if isinstance(reply, TextReply):
        return "\n".join([reply.title, *(f"  {line}" for line in reply.lines)])
    assert_never(reply)
