"""Slash commands and buttons: thin handlers that turn interactions into core calls.

Every behaviour (validation, permissions, rate limits) is in :mod:`bot.core.service`; this
module only decides *how* Discord is answered. The rule for ``/tweetlike`` and Regenerate:
cheap checks run first, so a refusal is the ephemeral initial response; only a request
that will generate is deferred publicly ("thinking…"), and if generation then fails the
public placeholder is deleted and the error is sent ephemerally, leaving nothing behind.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.adapters.discord_render import (
    CANCEL_TEMPLATE,
    REGENERATE_TEMPLATE,
    RegenerateRequest,
    cancel_custom_id,
    parse_regenerate,
    regenerate_custom_id,
    render,
)
from bot.core.replies import GeneratedTweets, Notice, Reply, Requester
from bot.core.service import GenerationPlan, Plan, TweetlikeService
from bot.rules import (
    COUNT_HINT,
    MAX_COUNT,
    MAX_TEMPERATURE,
    MIN_COUNT,
    MIN_TEMPERATURE,
    TEMPERATURE_HINT,
)

if TYPE_CHECKING:
    from bot.adapters.discord_bot import TweetlikeBot

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side; it has been logged. Please try again."
RESTARTING = "The bot is restarting; try again in a minute."
_PUBLIC_PLACEHOLDER = "tweetlike_public_placeholder"


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    user = interaction.user
    roles = frozenset(r.id for r in user.roles) if isinstance(user, discord.Member) else frozenset()
    return Requester(
        user_id=user.id,
        name=str(user),
        channel_id=interaction.channel_id,
        guild_id=interaction.guild_id,
        role_ids=roles,
    )


def service_of(interaction: discord.Interaction[Any]) -> TweetlikeService:
    bot: TweetlikeBot = interaction.client
    return bot.service


def regenerate_view(tweets: GeneratedTweets) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegenerateButton.for_tweets(tweets))
    return view


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


async def send(interaction: discord.Interaction[Any], reply: Reply) -> None:
    """Answer with a core reply: initial response if still open, else a follow-up."""
    payload = render(reply)
    kwargs = payload.send_kwargs()
    if isinstance(reply, GeneratedTweets):
        kwargs["view"] = regenerate_view(reply)
    if not interaction.response.is_done():
        await interaction.response.send_message(**kwargs)
        return
    if payload.ephemeral and interaction.extras.pop(_PUBLIC_PLACEHOLDER, False):
        # A follow-up would turn the public "thinking…" into the error; remove it instead.
        await interaction.delete_original_response()
    else:
        interaction.extras.pop(_PUBLIC_PLACEHOLDER, None)
    await interaction.followup.send(**kwargs)


async def apologize(interaction: discord.Interaction[Any], text: str = APOLOGY) -> None:
    """Tell the user something failed, ephemerally; never raises (we are already failing)."""
    try:
        await send(interaction, Notice(text))
    except discord.DiscordException as exc:
        log.warning("could not send an apology for interaction %s: %s", interaction.id, exc)


async def answer_tweetlike(
    interaction: discord.Interaction[Any],
    handle: str,
    prompt: str,
    count: int,
    temperature: float | None,
) -> None:
    """/tweetlike and Regenerate: refuse ephemerally, or defer and generate."""
    bot: TweetlikeBot = interaction.client
    if bot.stopping:
        await send(interaction, Notice(RESTARTING))
        return

    async def defer(plan: Plan) -> None:
        public = isinstance(plan, GenerationPlan)
        await interaction.response.defer(ephemeral=not public, thinking=True)
        if public:
            interaction.extras[_PUBLIC_PLACEHOLDER] = True

    with bot.in_flight:
        reply = await bot.service.tweetlike(
            requester_of(interaction), handle, prompt, count, temperature, accepted=defer
        )
        await send(interaction, reply)


async def published_models(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """Handle autocomplete: the published models matching what has been typed."""
    return [
        app_commands.Choice(name=f"@{name}", value=name)
        for name in service_of(interaction).autocomplete_handles(current)
    ]


class RegenerateButton(discord.ui.DynamicItem[discord.ui.Button], template=REGENERATE_TEMPLATE):
    """🔁 under generated tweets: the same request again, for whoever presses it."""

    def __init__(
        self, custom_id: str, request: RegenerateRequest | None, problem: str = ""
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label="Regenerate",
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=custom_id,
            )
        )
        self.request = request
        self.problem = problem

    @classmethod
    def for_tweets(cls, tweets: GeneratedTweets) -> RegenerateButton:
        request = RegenerateRequest(tweets.model, tweets.prompt, tweets.count, tweets.temperature)
        return cls(regenerate_custom_id(tweets), request)

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button,
        match: re.Match[str],
        /,
    ) -> RegenerateButton:
        embeds = interaction.message.embeds if interaction.message else []
        first_text = embeds[0].description if embeds else None
        try:
            return cls(match.string, parse_regenerate(match, first_text))
        except ValueError as exc:
            return cls(match.string, None, str(exc))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        request = self.request
        if request is None:
            await send(interaction, Notice(f"Cannot regenerate: {self.problem}; use /tweetlike."))
            return
        try:
            await answer_tweetlike(
                interaction, request.model, request.prompt, request.count, request.temperature
            )
        except Exception:
            log.exception("Regenerate failed for %s", request.model)
            await apologize(interaction)


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=CANCEL_TEMPLATE):
    """Cancel on a training's progress message; operators only (checked by the core)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.danger,
                custom_id=cancel_custom_id(job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button,
        match: re.Match[str],
        /,
    ) -> CancelButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            # Stopping a running training, or asking the scheduler leader in another
            # process, can take longer than Discord's 3 s to answer.
            await interaction.response.defer(ephemeral=True, thinking=True)
            await send(
                interaction,
                await service_of(interaction).cancel(requester_of(interaction), self.job_id),
            )
        except Exception:
            log.exception("Cancel button failed for job %s", self.job_id)
            await apologize(interaction)


class TweetlikeCog(commands.Cog):
    """Commands for everyone."""

    def __init__(self, bot: TweetlikeBot) -> None:
        self.bot = bot

    @app_commands.command(name="tweetlike", description="Generate tweets in an X account's voice")
    @app_commands.describe(
        handle="The X account (a trained model)",
        prompt="How the tweet starts",
        count=f"How many tweets ({COUNT_HINT})",
        temperature=f"Randomness, {TEMPERATURE_HINT} (low: safe, high: wild); default: the model's",
    )
    @app_commands.autocomplete(handle=published_models)
    async def tweetlike(
        self,
        interaction: discord.Interaction[Any],
        handle: str,
        prompt: str,
        count: app_commands.Range[int, MIN_COUNT, MAX_COUNT] = MIN_COUNT,
        temperature: app_commands.Range[float, MIN_TEMPERATURE, MAX_TEMPERATURE] | None = None,
    ) -> None:
        await answer_tweetlike(interaction, handle, prompt, count, temperature)

    @app_commands.command(name="models", description="List the accounts I can imitate")
    async def models(self, interaction: discord.Interaction[Any]) -> None:
        await send(interaction, self.bot.service.models())


class OperatorCog(commands.Cog):
    """Operator commands. ``default_permissions`` hides them from members who cannot manage
    the server; the core still checks operator rights on every call."""

    autopost = app_commands.Group(
        name="autopost",
        description="Scheduled posts of generated tweets",
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: TweetlikeBot) -> None:
        self.bot = bot

    @app_commands.command(name="train", description="Train a model for an X account")
    @app_commands.describe(handle="One handle, or several (a b) for a combined model")
    @app_commands.default_permissions(manage_guild=True)
    async def train(self, interaction: discord.Interaction[Any], handle: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await send(interaction, await self.bot.service.train(requester_of(interaction), handle))

    @app_commands.command(name="retrain", description="Fetch new tweets and retrain a model")
    @app_commands.describe(handle="A trained model")
    @app_commands.autocomplete(handle=published_models)
    @app_commands.default_permissions(manage_guild=True)
    async def retrain(self, interaction: discord.Interaction[Any], handle: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await self.bot.service.retrain(requester_of(interaction), handle)
        await send(interaction, reply)

    @app_commands.command(name="jobs", description="Queued, running and recent jobs")
    @app_commands.default_permissions(manage_guild=True)
    async def jobs(self, interaction: discord.Interaction[Any]) -> None:
        await send(interaction, await self.bot.service.jobs_list(requester_of(interaction)))

    @app_commands.command(name="cancel", description="Cancel a queued or running job")
    @app_commands.describe(job="The job id shown by /jobs")
    @app_commands.default_permissions(manage_guild=True)
    async def cancel(self, interaction: discord.Interaction[Any], job: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await send(interaction, await self.bot.service.cancel(requester_of(interaction), job))

    @app_commands.command(name="status", description="Models, device, queue and jobs")
    @app_commands.default_permissions(manage_guild=True)
    async def status(self, interaction: discord.Interaction[Any]) -> None:
        await send(interaction, await self.bot.service.status(requester_of(interaction)))

    @autopost.command(name="add", description="Post generated tweets to a channel on a schedule")
    @app_commands.describe(
        handle="The X account (a trained model)",
        channel="Where to post",
        every="How often, e.g. 30m, 6h, 1d",
        cron="Or a crontab expression, e.g. 0 9 * * * (UTC)",
        prompt="How each post starts (empty: free generation)",
        post_to_x="Also post to the configured X account",
    )
    @app_commands.autocomplete(handle=published_models)
    async def autopost_add(
        self,
        interaction: discord.Interaction[Any],
        handle: str,
        channel: discord.TextChannel,
        every: str | None = None,
        cron: str | None = None,
        prompt: str | None = None,
        post_to_x: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await self.bot.service.autopost_add(
            requester_of(interaction),
            handle,
            channel.id,
            every=every,
            cron=cron,
            prompt=prompt,
            post_to_x=post_to_x,
        )
        await send(interaction, reply)

    @autopost.command(name="list", description="List scheduled posts")
    async def autopost_list(self, interaction: discord.Interaction[Any]) -> None:
        await send(interaction, await self.bot.service.autopost_list(requester_of(interaction)))

    @autopost.command(name="remove", description="Remove a scheduled post")
    @app_commands.describe(id="The id shown by /autopost list")
    async def autopost_remove(self, interaction: discord.Interaction[Any], id: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await self.bot.service.autopost_remove(requester_of(interaction), id)
        await send(interaction, reply)


class TweetlikeTree(app_commands.CommandTree):
    """Logs handler errors and apologises ephemerally; the bot keeps serving."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /
    ) -> None:
        if isinstance(error, app_commands.CommandInvokeError):
            log.error(
                "/%s failed",
                interaction.command.qualified_name if interaction.command else "?",
                exc_info=error.original,
            )
            await apologize(interaction)
        else:
            log.info("rejected input for interaction %s: %s", interaction.id, error)
            await apologize(interaction, f"That input was not accepted: {error}")
