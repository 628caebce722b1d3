"""A training on a Ray worker (``training.runner = "ray"``): the worker's side.

The worker shares no filesystem with the bot. It gets a :class:`TrainingOrder` through the
object store (the configuration without secrets, the accounts' stored tweets, and the shared
``tiny`` base when the bot has one), runs ``tweetlike train NAME --progress json`` in its own
process against a private workspace (a throwaway model store and data folder), and sends the
event lines to the bot through a Ray queue as they come, exactly the stream the training
subprocess prints. It answers with the published version folder as a tar archive
(:class:`TrainedModel`), which the bot publishes atomically into its own store
(:mod:`bot.jobs.ray_runner`); the workspace is deleted either way.

A failure is reported as the subprocess reports it (an ``error`` event) and answered with
``None``. A cancel (``ray.cancel``) interrupts the training like a SIGTERM: the workspace is
removed and nothing reaches the bot's store. A worker killed outright leaves its workspace
behind; the next training on that node removes it (its process is gone).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.queue import Queue

from bot.base_models import tiny_base_dir
from bot.model_store import ModelStoreReader
from bot.ray_cluster import settings_from_payload
from bot.training import publish
from bot.training.progress import DoneEvent, parse_event
from bot.training.recipes import Method

# Put on the queue after the last event line, whatever happened.
END_OF_EVENTS = None
# Where workers keep their private workspaces; a killed worker's is removed by the next.
WORKSPACES = Path(tempfile.gettempdir()) / "tweetlike-training"


@dataclass(frozen=True)
class TrainingOrder:
    """Everything a worker needs, shipped from the bot."""

    settings: dict[str, Any]  # bot.ray_cluster.shipped_settings, without storage paths
    handles: list[str]
    base_model: str | None  # a flag or a retrain's recorded recipe (None: the config's)
    method: Method | None
    epochs: int | None
    accounts: dict[str, bytes]  # handle -> tar of data/<handle>/
    tiny_base: bytes | None  # tar of the bot's shared tiny base, when it has one


@dataclass(frozen=True)
class TrainedModel:
    name: str
    version: str
    folder: bytes  # tar of the published version folder
    tiny_base: bytes | None  # the tiny base this worker built, when the bot sent none


def pack_folder(folder: Path) -> bytes:
    """A folder's files as an uncompressed tar (weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(Path(folder).rglob("*")):
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack_into(data: bytes, folder: Path) -> None:
    """Extract :func:`pack_folder`'s archive; nothing may land outside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(folder, filter="data")


class _QueueStream(io.TextIOBase):
    """stdout for the training: each complete line goes to the bot through the queue."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._partial = ""
        self.sent: list[str] = []

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._queue.put(line)
                self.sent.append(line)
        return len(text)


@ray.remote(max_retries=0)
def train_on_worker(order: TrainingOrder, events: Queue) -> TrainedModel | None:
    """Run the training in a private workspace; events go to ``events`` as JSON lines."""
    import torch

    from bot.training.pipeline import train_command

    publish.clean_stale_staging(WORKSPACES)  # left by workers killed mid-training
    workspace = publish.staging_dir(WORKSPACES, "workspace")
    stream = _QueueStream(events)
    try:
        models_dir, data_dir = workspace / "models", workspace / "data"
        for handle, account in order.accounts.items():
            unpack_into(account, data_dir / handle)
        if order.tiny_base is not None:
            unpack_into(order.tiny_base, tiny_base_dir(models_dir))
        payload = dict(order.settings)
        payload["storage"] = {
            **payload.get("storage", {}),
            "models_dir": str(models_dir),
            "data_dir": str(data_dir),
        }
        # The GPU this task was given is the only one it sees; "auto" finds it.
        payload["generation"] = {**payload.get("generation", {}), "device": "auto"}
        settings = settings_from_payload(payload)
        threads = settings.training.threads or max(1, int(settings.ray.cpus_per_training))
        torch.set_num_threads(threads)
        with contextlib.redirect_stdout(stream):
            code = train_command(
                settings,
                order.handles,
                base_model=order.base_model,
                method=order.method,
                epochs=order.epochs,
                progress="json",
            )
        done = _done_event(stream.sent)
        if code != 0 or done is None:
            return None
        folder = ModelStoreReader(models_dir).serving_version_path(done.model)
        assert folder is not None, "train_command reported done without publishing"
        built_base = tiny_base_dir(models_dir)
        return TrainedModel(
            name=done.model,
            version=done.version,
            folder=pack_folder(folder),
            tiny_base=pack_folder(built_base)
            if order.tiny_base is None and (built_base / "config.json").is_file()
            else None,
        )
    finally:
        with contextlib.suppress(RayError):  # the bot is gone: nobody is listening
            events.put(END_OF_EVENTS)
        shutil.rmtree(workspace, ignore_errors=True)


def _done_event(lines: list[str]) -> DoneEvent | None:
    for line in reversed(lines):
        event = parse_event(line)
        if isinstance(event, DoneEvent):
            return event
    return None
