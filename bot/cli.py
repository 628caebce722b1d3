"""``tweetlike`` / ``python -m bot``: the command line (PRODUCT.md §3).

Each handler is thin: parse, call the package that owns the behaviour, print. Failures a
user can fix arrive as :class:`bot.errors.TweetlikeError` and become one line on stderr
with a non-zero exit status; anything else is a bug and keeps its traceback.

Importing torch and transformers takes seconds, so handlers import the packages that need
them only after checking their arguments with the shared rules (:mod:`bot.rules`,
:mod:`bot.handles`, the block list): a mistake is answered at once, before anything heavy
loads. Those packages check again, for their other callers.

By default a command prints what it was asked for and logs only warnings (on stderr);
``-v`` adds info and ``-vv`` debug. ``tweetlike run`` serving Discord is read through its
log, so it logs info by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.base_models import check_base_model
from bot.config import Settings, load_settings
from bot.errors import ConfigError, TweetlikeError
from bot.handles import check_not_blocked, handles_of, normalize_handle
from bot.logging_setup import log_level, setup_logging
from bot.rules import RequestRules, check_epochs

Handler = Callable[[argparse.Namespace, Settings], int]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.console and not settings.discord.token.get_secret_value():
        raise ConfigError(
            "discord.token is not set: export TWEETLIKE_DISCORD__TOKEN=<bot token> "
            "(or try it in a terminal with `tweetlike run --console`)"
        )
    from bot.app import run_service

    return run_service(settings, console=args.console)


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from bot.sources.x_api import fetch_tweets

    result = fetch_tweets(settings, args.handle)
    print(result.summary())
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from bot.sources.archive import import_tweets

    result = import_tweets(settings, args.handle, Path(args.path))
    print(result.summary())
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    try:
        handles = [normalize_handle(name) for name in args.names]
        check_not_blocked(handles, settings.training.blocked_handles)
        check_epochs(args.epochs)
        if args.base_model:
            check_base_model(args.base_model.strip())
    except TweetlikeError as exc:
        if args.progress != "json":
            raise
        from bot.training.progress import JsonReporter

        JsonReporter(sys.stdout).error(str(exc))
        return 1
    if settings.training.runner == "ray":
        from bot.jobs.ray_runner import train_command_on_ray as train_command
    else:
        from bot.training.pipeline import train_command

    return train_command(
        settings,
        args.names,
        base_model=args.base_model,
        method=args.method,
        epochs=args.epochs,
        progress=args.progress,
        fetch=args.fetch,
    )


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    check_not_blocked(handles_of(args.name), settings.training.blocked_handles)
    rules = RequestRules.from_settings(settings)
    rules.prompt(args.prompt)
    rules.count(args.n)
    rules.temperature(args.temperature)
    rules.seed(args.seed)
    from bot.generation.backends import generate_once

    tweets = generate_once(
        settings,
        args.name,
        args.prompt,
        count=args.n,
        seed=args.seed,
        temperature=args.temperature,
    )
    if args.json:
        print(json.dumps(tweets, ensure_ascii=False))
    else:
        for tweet in tweets:
            print(tweet)
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from bot.training.listing import print_models

    return print_models(settings, as_json=args.json)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from bot.core.status import status_lines
    from bot.jobs.membership import read_deployment
    from bot.jobs.state import open_database
    from bot.ray_cluster import status_lines as ray_lines
    from bot.ray_cluster import uses_ray

    database = open_database(settings.storage.database_url)
    try:
        deployment = read_deployment(database, settings.scheduler.lease_seconds)
    finally:
        database.dispose()
    cluster = ray_lines(settings) if uses_ray(settings) else []
    for line in status_lines(settings, deployment, cluster=cluster):
        print(line)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot.demo import run_demo

    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tweetlike",
        description="A Discord bot that speaks in the voice of X/Twitter accounts.",
    )
    _add_common_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the bot (Discord, scheduler, generation engine)")
    run.add_argument(
        "--console",
        action="store_true",
        help="use the terminal instead of Discord: type /tweetlike lines",
    )
    run.set_defaults(handler=cmd_run)

    fetch = sub.add_parser("fetch", help="download an account's tweets from the X API")
    fetch.add_argument("handle")
    fetch.set_defaults(handler=cmd_fetch)

    imp = sub.add_parser("import", help="import tweets from an archive, CSV, JSONL or text file")
    imp.add_argument("handle")
    imp.add_argument("path")
    imp.set_defaults(handler=cmd_import)

    train = sub.add_parser("train", help="fine-tune and publish models/<name>/")
    train.add_argument(
        "names", nargs="+", metavar="NAME", help="handle(s); several make one combined model"
    )
    train.add_argument("--base-model", metavar="M", help="Hub id, local path or 'tiny'")
    train.add_argument(
        "--method",
        choices=["full", "lora"],
        help="full fine-tune or LoRA adapter (default: the model's own, else training.method)",
    )
    train.add_argument("--epochs", type=int, metavar="N")
    train.add_argument("--progress", choices=["bar", "json"], default="bar")
    train.add_argument("--fetch", action="store_true", help="fetch new tweets from the X API first")
    train.set_defaults(handler=cmd_train)

    gen = sub.add_parser("generate", help="print generated tweets")
    gen.add_argument("name")
    gen.add_argument("prompt", nargs="?", default="")
    gen.add_argument("-n", type=int, default=1, metavar="N", help="how many (1-5)")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--json", action="store_true", help="print a JSON list of strings")
    gen.set_defaults(handler=cmd_generate)

    models = sub.add_parser("models", help="list published models")
    models.add_argument("--json", action="store_true")
    models.set_defaults(handler=cmd_models)

    status = sub.add_parser(
        "status", help="show the backend, the runner, the scheduler leader and the shards"
    )
    status.set_defaults(handler=cmd_status)

    demo = sub.add_parser("demo", help="train the bundled sample account and answer a prompt")
    demo.set_defaults(handler=cmd_demo)
    for command in sub.choices.values():
        _add_common_options(command, top_level=False)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``--config`` and ``-v`` before or after the command; given after it, they win."""
    unset = None if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=unset,
        help="TOML config file (default: "
        "$TWEETLIKE_CONFIG, else ./config.toml, else built-in defaults)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top_level else argparse.SUPPRESS,
        help="log more on stderr: -v info, -vv debug (default: warnings only; "
        "info for `run` serving Discord)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        serving = args.handler is cmd_run and not args.console
        setup_logging(log_level(args.verbose, service=serving))
        return args.handler(args, settings)
    except TweetlikeError as exc:
        print(f"tweetlike: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tweetlike: interrupted", file=sys.stderr)
        return 130
