"""``tweetlike run --console``: the service core driven by slash-command lines on stdin.

The console user is the operator (they run the process). Replies, auto-posts and training
progress are printed to stdout; stdin EOF ends the run cleanly. On a terminal it greets the
user and shows a ``> `` prompt for each line; reading a pipe, it prints only the answers.

Line syntax: positional words, with ``"double quotes"`` keeping spaces together, and
``name:value`` options (``count:3``, ``temperature:0.8``, ``prompt:"My dream is"``)::

    /tweetlike sample My dream is
    /tweetlike sample "My dream is" count:3 temperature:0.9 seed:1
    /models
    /train sample            /retrain sample
    /autopost add sample 123456789012345678 every:6h prompt:"My dream is"
    /autopost list           /autopost remove <id>
    /jobs   /cancel <job>    /status   /help

A word that looks like an option but names no option of its command (``time:8pm``) stays
part of the prompt. Apostrophes need no quoting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from bot.core.formatting import reply_as_text
from bot.core.replies import GeneratedTweets, Reply, Requester
from bot.core.service import TweetlikeService
from bot.redaction import redact
from bot.rules import COUNT_HINT, TEMPERATURE_HINT

log = logging.getLogger(__name__)

CONSOLE_REQUESTER = Requester(user_id=0, name="console", channel_id=0, is_console=True)

HELP = f"""\
Commands (options are name:value; quote text with spaces as "like this"):
  /tweetlike HANDLE PROMPT... [count:{COUNT_HINT}] [temperature:{TEMPERATURE_HINT}] [seed:N]
  /models
  /train HANDLE...            /retrain HANDLE
  /autopost add HANDLE CHANNEL_ID every:6h|cron:"0 9 * * *" [prompt:"..."] [post_to_x:true]
  /autopost list              /autopost remove ID
  /jobs                       /cancel JOB_ID
  /status                     /help
End with Ctrl-D (EOF)."""

PROMPT = "> "
BANNER = "tweetlike console: type /help for commands, Ctrl-D to quit."

_TOKEN = re.compile(r'(?:(?P<key>[a-z_]+):)?"(?P<quoted>[^"]*)"|(?P<word>\S+)')
_OPTION_WORD = re.compile(r"(?P<key>[a-z_]+):(?P<value>.+)")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ConsoleInputError(ValueError):
    """A line the console cannot parse; its message is shown as the reply."""


@dataclass
class ParsedLine:
    command: str
    args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


_OPTIONS: dict[str, set[str]] = {
    "tweetlike": {"count", "temperature", "seed", "prompt", "handle"},
    "autopost": {"every", "cron", "prompt", "post_to_x", "channel", "handle"},
}


def parse_line(line: str) -> ParsedLine | None:
    """Split a console line into command, positional words and known options."""
    tokens = list(_TOKEN.finditer(line.strip()))
    if not tokens:
        return None
    head = tokens[0].group("word") or tokens[0].group("quoted") or ""
    command = head.lstrip("/").lower()
    known = _OPTIONS.get(command, set())
    parsed = ParsedLine(command)
    for token in tokens[1:]:
        key, quoted, word = token.group("key"), token.group("quoted"), token.group("word")
        if quoted is not None:
            if key in known:
                parsed.options[key] = quoted
            else:
                parsed.args.append(f"{key}:{quoted}" if key else quoted)
            continue
        option = _OPTION_WORD.fullmatch(word)
        if option and option.group("key") in known:
            parsed.options[option.group("key")] = option.group("value")
        else:
            parsed.args.append(word)
    return parsed


class ConsoleNotifier:
    """Prints what Discord would post: auto-posts, ready answers and job progress."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._message_ids = itertools.count(1)
        self._prompting = False

    def write(self, text: str) -> None:
        """Print ``text`` on lines of its own; an auto-post or progress update arriving while
        the prompt waits goes below it, and the prompt is shown again after it."""
        if self._prompting:
            self._out.write("\n")
        print(redact(text), file=self._out, flush=True)
        if self._prompting:
            self.show_prompt()

    def show_prompt(self) -> None:
        self._out.write(PROMPT)
        self._out.flush()
        self._prompting = True

    def prompt_answered(self, *, echoed: bool) -> None:
        """The user ended a line (``echoed``: the terminal moved to the next line itself)."""
        if self._prompting and not echoed:
            self._out.write("\n")
            self._out.flush()
        self._prompting = False

    async def post_tweets(
        self, channel_id: int, tweets: GeneratedTweets, *, mention_user_id: int | None = None
    ) -> None:
        self.write(_channel_prefix(channel_id) + reply_as_text(tweets))

    async def post_text(
        self, channel_id: int, text: str, *, mention_user_id: int | None = None
    ) -> None:
        self.write(_channel_prefix(channel_id) + text)

    async def post_progress(
        self,
        channel_id: int,
        job_id: str,
        text: str,
        *,
        message_id: int | None,
        finished: bool = False,
    ) -> int | None:
        self.write(f"[job {job_id}] {text}")
        return message_id if message_id is not None else next(self._message_ids)


class ConsoleAdapter:
    def __init__(self, service: TweetlikeService, notifier: ConsoleNotifier) -> None:
        self.service = service
        self.notifier = notifier
        self._handlers: dict[str, Callable[[ParsedLine], Awaitable[Reply | str]]] = {
            "tweetlike": self._tweetlike,
            "models": self._models,
            "train": self._train,
            "retrain": self._retrain,
            "autopost": self._autopost,
            "jobs": self._jobs,
            "cancel": self._cancel,
            "status": self._status,
            "help": self._help,
        }

    async def answer(self, line: str) -> str | None:
        """The text to print for one input line (None for a blank line)."""
        parsed = parse_line(line)
        if parsed is None:
            return None
        handler = self._handlers.get(parsed.command)
        if handler is None:
            return f"Unknown command '/{parsed.command}'. Type /help for the list."
        try:
            reply = await handler(parsed)
        except ConsoleInputError as exc:
            return str(exc)
        return reply if isinstance(reply, str) else reply_as_text(reply)

    async def run(self, stdin: TextIO, stop: asyncio.Event) -> None:
        """Answer lines until EOF or ``stop``; a line being answered is finished first."""
        lines = _read_lines_in_thread(stdin)
        interactive = stdin.isatty()
        if interactive:
            self.notifier.write(BANNER)
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                if interactive:
                    self.notifier.show_prompt()
                next_line = asyncio.create_task(lines.get())
                await asyncio.wait({next_line, stopping}, return_when=asyncio.FIRST_COMPLETED)
                line = next_line.result() if next_line.done() else None
                self.notifier.prompt_answered(echoed=line is not None)
                if line is None:
                    next_line.cancel()
                    return
                try:
                    text = await self.answer(line)
                except Exception:
                    log.exception("console command failed: %s", line.strip())
                    text = "Sorry, that failed unexpectedly; the details are in the log."
                if text is not None:
                    self.notifier.write(text)
        finally:
            stopping.cancel()

    async def _tweetlike(self, line: ParsedLine) -> Reply:
        args = list(line.args)
        handle = line.options.get("handle") or (args.pop(0) if args else "")
        if not handle:
            raise ConsoleInputError("Usage: /tweetlike HANDLE PROMPT... [count:N]")
        prompt = line.options.get("prompt", " ".join(args))
        return await self.service.tweetlike(
            CONSOLE_REQUESTER,
            handle,
            prompt,
            count=_int(line.options.get("count", "1"), "count"),
            temperature=_float_or_none(line.options.get("temperature"), "temperature"),
            seed=_int_or_none(line.options.get("seed"), "seed"),
        )

    async def _models(self, line: ParsedLine) -> Reply:
        return self.service.models()

    async def _train(self, line: ParsedLine) -> Reply:
        return await self.service.train(CONSOLE_REQUESTER, " ".join(_need(line.args, "/train")))

    async def _retrain(self, line: ParsedLine) -> Reply:
        return await self.service.retrain(CONSOLE_REQUESTER, _need(line.args, "/retrain")[0])

    async def _autopost(self, line: ParsedLine) -> Reply:
        action, *rest = line.args or [""]
        if action == "list":
            return await self.service.autopost_list(CONSOLE_REQUESTER)
        if action == "remove":
            return await self.service.autopost_remove(
                CONSOLE_REQUESTER, _need(rest, "/autopost remove")[0]
            )
        if action != "add":
            raise ConsoleInputError("Usage: /autopost add|list|remove ... (see /help)")
        handle = line.options.get("handle") or (rest.pop(0) if rest else "")
        channel = line.options.get("channel") or (rest.pop(0) if rest else "")
        if not handle or not channel:
            raise ConsoleInputError("Usage: /autopost add HANDLE CHANNEL_ID every:6h")
        return await self.service.autopost_add(
            CONSOLE_REQUESTER,
            handle,
            _int(channel.lstrip("#"), "channel"),
            every=line.options.get("every"),
            cron=line.options.get("cron"),
            prompt=line.options.get("prompt"),
            post_to_x=_bool(line.options.get("post_to_x", "false"), "post_to_x"),
        )

    async def _jobs(self, line: ParsedLine) -> Reply:
        return await self.service.jobs_list(CONSOLE_REQUESTER)

    async def _cancel(self, line: ParsedLine) -> Reply:
        return await self.service.cancel(CONSOLE_REQUESTER, _need(line.args, "/cancel")[0])

    async def _status(self, line: ParsedLine) -> Reply:
        return await self.service.status(CONSOLE_REQUESTER)

    async def _help(self, line: ParsedLine) -> str:
        return HELP


def _read_lines_in_thread(stdin: TextIO) -> asyncio.Queue[str | None]:
    """Feed stdin lines into a queue from a daemon thread (None at EOF).

    A blocking read never runs on the event loop, and a daemon thread stuck in ``readline``
    cannot hold up shutdown the way a pool worker would.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            try:
                for line in stdin:
                    loop.call_soon_threadsafe(queue.put_nowait, line)
            except (OSError, ValueError) as exc:
                log.warning("stopped reading stdin: %s", exc)
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
    return queue


def _channel_prefix(channel_id: int) -> str:
    return "" if channel_id == CONSOLE_REQUESTER.channel_id else f"[channel {channel_id}] "


def _need(args: list[str], usage: str) -> list[str]:
    if not args:
        raise ConsoleInputError(f"Usage: {usage} NAME (see /help)")
    return args


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConsoleInputError(f"{name} must be a whole number, not '{value}'") from None


def _int_or_none(value: str | None, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _float_or_none(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConsoleInputError(f"{name} must be a number, not '{value}'") from None


def _bool(value: str, name: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConsoleInputError(f"{name} must be true or false, not '{value}'")
