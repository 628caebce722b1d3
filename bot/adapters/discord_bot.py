"""The Discord client: an ``AutoShardedBot`` that serves the slash commands and posts for jobs.

It asks for no privileged intents (only ``guilds``, for channel and role caches): slash
commands and buttons arrive as interactions whatever the intents. As an
``AutoShardedBot`` it takes its gateway URL from ``GET /gateway/bot`` on the configured REST
base, so pointing ``discord.api_base_url`` elsewhere moves the whole connection.

The bot is also the :class:`bot.core.ports.Notifier` of the job runner: auto-posts, ready
answers and training progress are posted as new messages (interaction tokens expire).

Several processes can split the gateway (``discord.shard_ids`` of ``discord.shard_count``):
Discord sends each guild's events and interactions to the shard ``(guild_id >> 22) %
shard_count``, and posting over REST works from any process. The process serving shard 0
syncs the slash commands; the others would only repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import discord
import yarl
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from bot.adapters.discord_cogs import (
    CancelButton,
    OperatorCog,
    RegenerateButton,
    TweetlikeCog,
    TweetlikeTree,
    cancel_view,
    regenerate_view,
)
from bot.adapters.discord_render import CONTENT_LIMIT, NO_PINGS, clip, only_user, tweet_embeds
from bot.adapters.discord_startup import START_UP_RETRIES, RetryPolicy, retry_start_up
from bot.config import Settings
from bot.core.replies import GeneratedTweets
from bot.core.service import TweetlikeService
from bot.errors import TweetlikeError

log = logging.getLogger(__name__)


class InFlight:
    """Counts interactions being answered, so shutdown can let them finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        self._count += 1
        self._idle.clear()

    def __exit__(self, *exc_info: object) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True if everything in flight finished within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class TweetlikeBot(commands.AutoShardedBot):
    def __init__(
        self,
        settings: Settings,
        service: TweetlikeService,
        *,
        start_up_retries: RetryPolicy = START_UP_RETRIES,
    ) -> None:
        # discord.py reads the REST base from this class attribute on every request.
        discord.http.Route.BASE = settings.discord.api_base_url.rstrip("/")
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=NO_PINGS,
            help_command=None,
            tree_cls=TweetlikeTree,
            shard_ids=settings.discord.shard_ids,
            shard_count=settings.discord.shard_count,
        )
        self.settings = settings
        self.service = service
        self.in_flight = InFlight()
        self.stopping = False
        self.start_up_retries = start_up_retries

    async def setup_hook(self) -> None:
        # Runs once per login attempt; a retried login must not add the cogs twice.
        if not self.cogs:
            await self.add_cog(TweetlikeCog(self))
            await self.add_cog(OperatorCog(self))
            self.add_dynamic_items(RegenerateButton, CancelButton)
        if self.shard_ids is None or 0 in self.shard_ids:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Sync to each configured guild (instant), or globally when none is configured."""
        guild_ids = self.settings.discord.guild_ids
        if not guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
            return
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            try:
                synced = await self.tree.sync(guild=guild)
            except discord.Forbidden:
                raise TweetlikeError(
                    f"Discord refused the slash commands for guild {guild_id} "
                    "(discord.guild_ids): invite the bot to that server with the "
                    "applications.commands scope (README: Creating the Discord application), "
                    "or remove the id"
                ) from None
            log.info("synced %d commands to guild %d", len(synced), guild_id)

    async def launch_shards(self) -> None:
        """Take the gateway URL from ``GET /gateway/bot`` on the configured REST base.

        Given a ``shard_count``, discord.py skips that request and dials its built-in
        ``wss://gateway.discord.gg``; it reads that from this class attribute, as it reads
        the REST base from ``Route.BASE``.
        """
        if self.shard_count is not None:
            _, url, _ = await self.http.get_bot_gateway()
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        await super().launch_shards()

    async def on_ready(self) -> None:
        log.info("connected as %s to %d guilds", self.user, len(self.guilds))

    async def log_in(self, token: str) -> None:
        """Authenticate over REST; from here on the bot can post, before the gateway connects.

        The job runner starts after this and before :meth:`serve`, so an auto-post that is
        due at start-up (a coalesced misfire) can already be delivered. Outages are retried
        (:mod:`bot.adapters.discord_startup`); what cannot be fixed by waiting fails in one
        line.
        """

        async def attempt() -> None:
            try:
                await self.login(token)
            except Exception:
                # The next attempt opens a fresh HTTP session; this one would leak.
                await self.http.close()
                self.http.connector = discord.utils.MISSING
                raise

        await retry_start_up(
            attempt,
            "logging in to Discord",
            self.settings.discord.api_base_url,
            self.start_up_retries,
        )

    async def _connect(self) -> None:
        """The gateway connection; fetching its URL (GET /gateway/bot) is retried like the
        login. Every error ``connect`` raises before the first shard starts comes from that
        fetch: once shards run, discord.py reconnects them itself."""
        await retry_start_up(
            lambda: self.connect(reconnect=True),
            "connecting to the Discord gateway",
            self.settings.discord.api_base_url,
            self.start_up_retries,
        )

    async def serve(self, stop: asyncio.Event, grace_seconds: float) -> None:
        """Stay connected to the gateway (reconnecting as needed) until ``stop`` is set.

        Call after :meth:`log_in`. On stop, new requests are refused and those in flight get
        ``grace_seconds`` to finish before the connection closes.
        """
        connection = asyncio.create_task(self._connect())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if connection.done():
                _raise_connection_end(connection)
                return
            self.stopping = True
            if not await self.in_flight.wait_idle(grace_seconds):
                log.warning("shutting down with requests still in flight")
        finally:
            stopping.cancel()
            await self.close()
            # connect() ends on close()'s clean-close event; a shard still reconnecting
            # is cut short instead.
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection

    # ----- Notifier ---------------------------------------------------------------------

    async def post_tweets(
        self, channel_id: int, tweets: GeneratedTweets, *, mention_user_id: int | None = None
    ) -> None:
        channel = self.get_partial_messageable(channel_id)
        await channel.send(
            content=f"<@{mention_user_id}>" if mention_user_id else None,
            embeds=tweet_embeds(tweets),
            view=regenerate_view(tweets),
            allowed_mentions=only_user(mention_user_id) if mention_user_id else NO_PINGS,
        )

    async def post_text(
        self, channel_id: int, text: str, *, mention_user_id: int | None = None
    ) -> None:
        prefix = f"<@{mention_user_id}> " if mention_user_id else ""
        await self.get_partial_messageable(channel_id).send(
            content=clip(prefix + text, CONTENT_LIMIT),
            allowed_mentions=only_user(mention_user_id) if mention_user_id else NO_PINGS,
        )

    async def post_progress(
        self,
        channel_id: int,
        job_id: str,
        text: str,
        *,
        message_id: int | None,
        finished: bool = False,
    ) -> int | None:
        channel = self.get_partial_messageable(channel_id)
        content = clip(text, CONTENT_LIMIT)
        view = None if finished else cancel_view(job_id)
        if message_id is not None:
            try:
                await channel.get_partial_message(message_id).edit(
                    content=content, view=view, allowed_mentions=NO_PINGS
                )
                return message_id
            except discord.NotFound:
                log.info("progress message %d of job %s is gone; posting anew", message_id, job_id)
        message = await channel.send(content=content, view=view, allowed_mentions=NO_PINGS)
        return message.id


def _raise_connection_end(connection: asyncio.Task[None]) -> None:
    """The gateway gave up for good (e.g. a revoked token): say why on one line."""
    try:
        connection.result()
    except discord.DiscordException as exc:
        log.error("the Discord connection ended", exc_info=exc)
        raise TweetlikeError(f"the Discord connection ended: {exc}") from None
