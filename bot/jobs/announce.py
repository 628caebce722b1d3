"""Answering the people who waited for a training, with new messages in their channels.

Interaction tokens expire after 15 minutes and a training takes longer, so every answer is a
fresh message that pings only the person it is for. Whoever asked with a prompt gets the
tweet generated for that prompt; an operator's ``/train`` gets a short "ready" line.
"""

from __future__ import annotations

import logging

from bot.core.formatting import handle_label
from bot.core.ports import Notifier
from bot.core.replies import GeneratedTweets
from bot.errors import TweetlikeError
from bot.generation.backends import Generator
from bot.jobs.state import PendingAnswer

log = logging.getLogger(__name__)


async def generate_tweets(
    engine: Generator, model: str, prompt: str, *, timeout: float | None = None
) -> GeneratedTweets:
    """One generated tweet, dressed with the account's display name and avatar."""
    result = await engine.generate(model, prompt, count=1, timeout=timeout)
    return GeneratedTweets.dressed(model, prompt, result.tweets, result.model.metadata)


async def answer_success(
    notifier: Notifier,
    engine: Generator,
    model: str,
    requesters: list[PendingAnswer],
    *,
    timeout: float | None,
) -> None:
    for person in requesters:
        try:
            if person.prompt is not None:
                tweets = await generate_tweets(engine, model, person.prompt, timeout=timeout)
                await notifier.post_tweets(
                    person.channel_id, tweets, mention_user_id=person.user_id
                )
            else:
                await notifier.post_text(
                    person.channel_id,
                    f"The model for {handle_label(model)} is ready: try /tweetlike {model}.",
                    mention_user_id=person.user_id,
                )
        except TweetlikeError as exc:
            await _post_quietly(
                notifier,
                person,
                f"The model for {handle_label(model)} is ready, but generating your tweet "
                f"failed: {exc}",
            )
        except Exception:
            log.exception("could not answer user %d about %s", person.user_id, model)


async def answer_failure(
    notifier: Notifier, model: str, requesters: list[PendingAnswer], reason: str
) -> None:
    for person in requesters:
        await _post_quietly(notifier, person, f"Training {handle_label(model)} failed: {reason}")


async def _post_quietly(notifier: Notifier, person: PendingAnswer, text: str) -> None:
    try:
        await notifier.post_text(person.channel_id, text, mention_user_id=person.user_id)
    except Exception:
        log.exception("could not tell user %d in channel %d", person.user_id, person.channel_id)
