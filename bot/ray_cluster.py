"""The Ray cluster behind ``generation.backend = "ray"`` and ``training.runner = "ray"``.

This module is cheap to import: Ray itself is imported by the functions that need it, so a
bot configured without Ray never loads it (``tweetlike[ray]`` is an optional extra).

One connection per process (``ray.init``), shared by the generation replicas' handle and the
training runner: ``ray.address`` names the cluster (``auto``, ``ray://host:10001`` or a head's
``host:port``), or, left empty, a cluster is started inside this process and ends with it.

What the cluster's processes get of the configuration is :func:`shipped_settings`: every
section they use, with absolute storage paths and without secrets (Discord token, X
credentials, the database URL): a replica or a training worker never talks to Discord, X or
the database. :func:`settings_from_payload` reads it back from the payload alone, so a node's
own ``TWEETLIKE_*`` variables cannot make it serve or train differently from the bot.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bot.config import Settings
from bot.errors import TweetlikeError, first_line

log = logging.getLogger(__name__)

# The sections a replica or a training worker reads; the rest stays with the bot.
_SHIPPED_EXCLUDE: dict[str, Any] = {
    "discord": {"token"},
    "x": True,
    "storage": {"database_url"},
    "autopost": True,
    "retrain": True,
    "scheduler": True,
}

_connect_lock = threading.Lock()
# How long the head has to accept a connection before the address is refused.
REACH_SECONDS = 10.0
# Sessions a Ray Client connection tries before giving up (see init_with_retries).
CLIENT_SESSION_ATTEMPTS = 3
# Ray Client relays every call through the head's client server, so the queue-length probe
# that a Serve handle sends a replica before routing a request outlasts Serve's 0.1 s
# default on new replicas (1 s too, on the idle 2-core VM). The timed-out probe is
# cancelled, and Ray Client's thread then logs a traceback when its answer arrives, and
# another at exit.
CLIENT_QUEUE_PROBE_SECONDS = "3.0"


def uses_ray(settings: Settings) -> bool:
    return settings.generation.backend == "ray" or settings.training.runner == "ray"


def uses_ray_client(settings: Settings) -> bool:
    return settings.ray.address.startswith("ray://")


def prepare_serve(settings: Settings) -> None:
    """Set what Serve reads once, when it is first imported: call it before that import."""
    if uses_ray_client(settings):
        os.environ.setdefault(
            "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", CLIENT_QUEUE_PROBE_SECONDS
        )


def connect(settings: Settings) -> None:
    """Join the configured cluster, or start one in this process (once per process).

    Blocks for seconds (a local start takes about 5 s): call it off the event loop.
    """
    import ray

    with _connect_lock:
        if ray.is_initialized():
            return
        address = settings.ray.address
        _check_reachable(address)
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if not address:
            options["include_dashboard"] = False
        attempts = CLIENT_SESSION_ATTEMPTS if uses_ray_client(settings) else 1
        try:
            # "local": a new cluster even when `ray start` left one running on this host.
            init_with_retries(
                lambda: ray.init(address=address or "local", **options), ray.shutdown, attempts
            )
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own
            where = f"at {address}" if address else "inside this process"
            raise TweetlikeError(
                f"could not {'reach' if address else 'start'} the Ray cluster {where} "
                f"(ray.address): {first_line(exc)}"
            ) from None
        log.info("connected to the Ray cluster %s", address or "started in this process")


def init_with_retries(init: Callable[[], object], undo: Callable[[], None], attempts: int) -> None:
    """``init()``, tried ``attempts`` times while the head fails to start the session.

    A Ray Client head starts one server process per client session, and Ray 2.60 loses
    some of them to a gRPC race at fork (ray-project/ray#63202: about 7% of sessions there;
    5 of 17 first sessions to heads started moments before, here). The client then gets
    ``ConnectionAbortedError`` after about 30 s, and a new session usually starts.
    """
    for attempt in range(1, attempts + 1):
        try:
            init()
            return
        except ConnectionAbortedError as exc:
            undo()
            if attempt == attempts:
                raise
            log.warning(
                "the Ray cluster did not start this client's session (%s); trying again (%d of %d)",
                first_line(exc),
                attempt + 1,
                attempts,
            )


def _check_reachable(address: str) -> None:
    """Refuse a head that does not answer at once: ``ray.init`` would retry for minutes."""
    if address in ("", "auto"):
        return
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise TweetlikeError(
            f"could not reach the Ray cluster at {address} (ray.address): "
            f"{exc.strerror or exc or 'no answer'}; is `ray start --head` running there?"
        ) from None


def gpus_or_auto(configured: float | None) -> float:
    """``None`` means one GPU when the cluster has any, none otherwise."""
    import ray

    if configured is not None:
        return configured
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def training_needs(settings: Settings) -> dict[str, float]:
    """The Ray resources one training takes: ``ray.cpus_per_training``, the GPUs and
    ``ray.training_resources`` (needs the connection, to see whether the cluster has GPUs)."""
    needs = {
        "CPU": settings.ray.cpus_per_training,
        "GPU": gpus_or_auto(settings.ray.gpus_per_training),
        **settings.ray.training_resources,
    }
    return {key: amount for key, amount in needs.items() if amount > 0}


def shipped_settings(settings: Settings) -> dict[str, Any]:
    """The configuration a replica or training worker needs, as plain JSON data."""
    payload = settings.model_dump(mode="json", exclude=_SHIPPED_EXCLUDE)
    storage = payload["storage"]
    storage["models_dir"] = str(settings.storage.models_dir.absolute())
    storage["data_dir"] = str(settings.storage.data_dir.absolute())
    return payload


class _PayloadSettings(Settings):
    """Settings made from a payload only: no environment, no file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_payload(payload: dict[str, Any]) -> Settings:
    return _PayloadSettings(**payload)


def status_lines(settings: Settings, generator: object = None) -> list[str]:
    """What ``tweetlike status`` and ``/status`` say about the cluster: its nodes, the
    generation replicas (one line each when ``generator`` is this process's Ray generator)
    and the nodes that can take a training.

    Blocks on the cluster (call it off the event loop). A process that has not joined the
    cluster joins it here, except that an empty ``ray.address`` names a cluster only the bot
    process itself can see.
    """
    import ray

    if not ray.is_initialized():
        if not settings.ray.address:
            return [
                "ray cluster: started inside the bot process (ray.address is empty); "
                "/status in the bot shows its replicas and workers"
            ]
        try:
            connect(settings)
        except TweetlikeError as exc:
            return [f"ray cluster: unreachable: {exc}"]
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    total, free = ray.cluster_resources(), ray.available_resources()
    lines = [
        f"ray cluster: {settings.ray.address or 'inside this process'}, {len(nodes)} "
        f"node{'s' if len(nodes) != 1 else ''}, CPUs {_share(free, total, 'CPU')}, "
        f"GPUs {_share(free, total, 'GPU')}"
    ]
    if settings.generation.backend == "ray":
        lines.append(_replicas_line(settings))
        lines += _replica_report_lines(generator)
    if settings.training.runner == "ray":
        lines.append(_workers_line(nodes, training_needs(settings)))
    return lines


def _share(free: dict[str, float], total: dict[str, float], key: str) -> str:
    return f"{free.get(key, 0):g} free of {total.get(key, 0):g}"


def _replicas_line(settings: Settings) -> str:
    from ray import serve

    name = settings.ray.app_name
    try:
        app = serve.status().applications.get(name)
    except Exception as exc:  # Serve not started on this cluster, or unreachable
        return f"generation replicas: unknown ({first_line(exc)})"
    if app is None:
        return f"generation replicas: Serve application '{name}' is not deployed"
    states: dict[str, int] = {}
    for deployment in app.deployments.values():
        for state, count in deployment.replica_states.items():
            states[_named(state)] = states.get(_named(state), 0) + count
    shown = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    return (
        f"generation replicas: application '{name}' {_named(app.status)}, "
        f"{shown or 'none'} (wanted {settings.ray.replicas})"
    )


def _replica_report_lines(generator: object) -> list[str]:
    from bot.generation.ray_backend import RayGenerator

    if not isinstance(generator, RayGenerator):
        return []
    return [report.line() for report in generator.replica_reports()]


def _workers_line(nodes: Sequence[dict[str, Any]], needs: dict[str, float]) -> str:
    able = [
        node
        for node in nodes
        if all(node.get("Resources", {}).get(key, 0) >= amount for key, amount in needs.items())
    ]
    wanted = ", ".join(f"{key} {amount:g}" for key, amount in needs.items()) or "nothing"
    return (
        f"training workers: {len(able)} of {len(nodes)} node{'s' if len(nodes) != 1 else ''} "
        f"can take a training ({wanted})"
    )


def _named(state: object) -> str:
    """A Serve status enum (or its string) as a lower-case word."""
    return str(getattr(state, "value", state)).lower()
