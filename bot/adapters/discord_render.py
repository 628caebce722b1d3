"""How core replies look in Discord: tweet-like embeds, text embeds, and safe mentions.

Only this module decides message shapes. Every payload carries an explicit
``allowed_mentions``, so generated text that contains ``@everyone`` or ``<@id>`` pings no
one even if a library default changes; the one exception is the ready-ping for a requester
whose queued model finished (:func:`only_user`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from bot.core.formatting import AI_LABEL, author_line, queued_text
from bot.core.replies import GeneratedTweets, Notice, QueuedForTraining, Reply, TextReply
from bot.redaction import redact
from bot.rules import MAX_COUNT, MIN_COUNT

NO_PINGS = discord.AllowedMentions.none()
TWEET_COLOUR = discord.Colour(0x1D9BF0)
CONTENT_LIMIT = 2000
DESCRIPTION_LIMIT = 4096
CUSTOM_ID_LIMIT = 100

# Regenerate buttons carry their request in the custom_id, so they work for anyone and keep
# working after a restart. Prompts that do not fit are carried as a length ("#12") and read
# back from the first embed, whose text begins with the prompt.
REGENERATE_TEMPLATE = (
    rf"tl:regen:(?P<count>[{MIN_COUNT}-{MAX_COUNT}]):(?P<temperature>[0-9.]*):(?P<model>[a-z0-9_-]+):"
    r"(?P<kind>[=#])(?P<prompt>.*)"
)
CANCEL_TEMPLATE = r"tl:cancel:(?P<job_id>[A-Za-z0-9_.:-]{1,80})"


def only_user(user_id: int) -> discord.AllowedMentions:
    """Mentions allowed in a ready-ping: that one user, nobody and nothing else."""
    return discord.AllowedMentions(
        everyone=False, users=[discord.Object(user_id)], roles=False, replied_user=False
    )


def clip(text: str, limit: int) -> str:
    """Text as Discord gets it: configured secrets redacted, cut to Discord's ``limit``.
    Everything the bot sends passes through here."""
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tweet_embeds(tweets: GeneratedTweets) -> list[discord.Embed]:
    """One embed per tweet: author (name and @handle, avatar), the text, the AI label."""
    embeds = []
    for text in tweets.tweets:
        embed = discord.Embed(description=clip(text, DESCRIPTION_LIMIT), colour=TWEET_COLOUR)
        embed.set_author(name=clip(author_line(tweets), 256), icon_url=tweets.avatar_url)
        embed.set_footer(text=AI_LABEL)
        embeds.append(embed)
    return embeds


def text_embed(reply: TextReply) -> discord.Embed:
    return discord.Embed(
        title=clip(reply.title, 256),
        description=clip("\n".join(reply.lines), DESCRIPTION_LIMIT) or None,
    )


@dataclass(frozen=True)
class RegenerateRequest:
    """What a Regenerate button asks for again."""

    model: str
    prompt: str
    count: int
    temperature: float | None


def regenerate_custom_id(tweets: GeneratedTweets) -> str:
    temperature = "" if tweets.temperature is None else f"{tweets.temperature:g}"
    head = f"tl:regen:{tweets.count}:{temperature}:{tweets.model}:"
    inline = f"{head}={tweets.prompt}"
    # Discord counts UTF-16 code units; an emoji can take two.
    fits = len(inline.encode("utf-16-le")) // 2 <= CUSTOM_ID_LIMIT
    return inline if fits else f"{head}#{len(tweets.prompt)}"


def parse_regenerate(match: re.Match[str], first_embed_text: str | None) -> RegenerateRequest:
    """Rebuild the request from a matched custom_id; ValueError if the prompt is lost."""
    prompt = match["prompt"]
    if match["kind"] == "#":
        length = int(prompt) if prompt.isdigit() else -1
        if first_embed_text is None or length < 0 or len(first_embed_text) < length:
            raise ValueError("the original prompt is no longer readable from this message")
        prompt = first_embed_text[:length]
    temperature = float(match["temperature"]) if match["temperature"] else None
    return RegenerateRequest(match["model"], prompt, int(match["count"]), temperature)


def cancel_custom_id(job_id: str) -> str:
    return f"tl:cancel:{job_id}"


@dataclass
class Payload:
    """Keyword arguments for send/followup/edit; ``allowed_mentions`` is always set."""

    content: str | None = None
    embeds: list[discord.Embed] | None = None
    ephemeral: bool = True

    def send_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"allowed_mentions": NO_PINGS, "ephemeral": self.ephemeral}
        if self.content is not None:
            kwargs["content"] = self.content
        if self.embeds:
            kwargs["embeds"] = self.embeds
        return kwargs


def render(reply: Reply) -> Payload:
    """Discord payload of a core reply (tweets get their button from the caller)."""
    if isinstance(reply, GeneratedTweets):
        return Payload(embeds=tweet_embeds(reply), ephemeral=False)
    if isinstance(reply, Notice):
        return Payload(content=clip(reply.text, CONTENT_LIMIT), ephemeral=reply.ephemeral)
    if isinstance(reply, QueuedForTraining):
        return Payload(content=clip(queued_text(reply), CONTENT_LIMIT), ephemeral=True)
    return Payload(embeds=[text_embed(reply)], ephemeral=reply.ephemeral)
