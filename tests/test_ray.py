"""Generation replicas (Ray Serve) and training workers (Ray tasks) on a real local cluster.

One cluster serves the whole module: a head node (2 CPUs, on loopback) started the way an
operator starts one, ``ray start --head``, in a mount namespace of its own where pytest's
temporary folder is an empty tmpfs. Every test keeps its bot's stores in that folder, so
nothing on the cluster can read them: a training that succeeds there needed no shared
filesystem. The generation replicas read a model store outside it, as a generation node
reads a shared or synced store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The cluster stays on loopback, and this process connects to it there, without a token.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
ray = pytest.importorskip(
    "ray", reason='Ray is not installed: pip install -e ".[ray]" (CI installs it)'
)

from fakes import WAIT_SECONDS  # noqa: E402
from jobs_support import (  # noqa: E402
    RecordingNotifier,
    finished,
    job_state,
    store_tweets,
    wait_until,
)
from model_factory import publish_lora_model, publish_tiny_model  # noqa: E402

from bot import ray_cluster  # noqa: E402
from bot.base_models import tiny_base_dir  # noqa: E402
from bot.cli import main  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.core.replies import Requester, TextReply  # noqa: E402
from bot.core.service import TweetlikeService  # noqa: E402
from bot.errors import (  # noqa: E402
    BlockedHandleError,
    EngineBusyError,
    GenerationTimeoutError,
    ModelNotFoundError,
    TweetlikeError,
)
from bot.generation.backends import make_generator  # noqa: E402
from bot.generation.engine import GenerationEngine  # noqa: E402
from bot.generation.ray_backend import RayGenerator, replica_payload  # noqa: E402
from bot.jobs.manager import JobManager  # noqa: E402
from bot.jobs.ray_runner import publish_trained  # noqa: E402
from bot.jobs.state import PendingAnswer  # noqa: E402
from bot.model_store import ModelStoreReader  # noqa: E402
from bot.training.remote import WORKSPACES, TrainedModel, pack_folder  # noqa: E402

APP = "tweetlike-test"
ALICE = Requester(user_id=111, channel_id=10)
HEAD_START_SECONDS = 120.0


@dataclass(frozen=True)
class Cluster:
    address: str
    client_port: int  # the head's Ray Client server
    serving_store: Path  # what the replicas read, outside the hidden folder
    hidden: Path | None  # pytest's temporary folder, as the cluster cannot see it

    def sees(self, path: Path) -> bool:
        """Whether a task on the cluster finds ``path``."""
        return bool(ray.get(_exists.remote(str(path))))


_exists = ray.remote(num_cpus=0)(os.path.exists)


def _can_hide() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and bool(shutil.which("unshare"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    hidden = tmp_path_factory.getbasetemp() if _can_hide() else None
    head_dir = Path(tempfile.mkdtemp(prefix="tl-ray-"))  # short: Ray's socket paths
    serving_store = Path(tempfile.mkdtemp(prefix="tweetlike-serving-")) / "models"
    port, client_port = _free_port(), _free_port()
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={port}",
        f"--ray-client-server-port={client_port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--object-store-memory={150 * 1024 * 1024}",
        f"--temp-dir={head_dir / 'ray'}",
        "--block",
    ]
    if hidden is not None:
        hide = f'mount -t tmpfs tweetlike-hidden "{hidden}" && exec "$@"'
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, "sh", *command]
    log_path = head_dir / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            command,
            cwd=head_dir,
            # As the README says to start a head for Ray Client: its client server loses
            # some new sessions to a gRPC race at fork otherwise (ray-project/ray#63202).
            env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_head(head, log_path)
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        yield Cluster(f"127.0.0.1:{port}", client_port, serving_store, hidden)
    finally:
        ray.shutdown()
        _stop(head)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(serving_store.parent, ignore_errors=True)


def _wait_for_head(head: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + HEAD_START_SECONDS
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if head.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the Ray head did not start:\n{tail}")
        time.sleep(0.2)


def _stop(head: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGINT)  # `ray start --block` stops its processes
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()


# -- without the cluster (first: the shared tiny base is built here once) ---------------


def test_a_cluster_that_does_not_answer_is_one_line_at_once() -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there

    with pytest.raises(TweetlikeError) as error:
        ray_cluster.connect(Settings(ray={"address": address}))

    assert str(error.value).startswith(
        f"could not reach the Ray cluster at {address} (ray.address): Connection refused"
    )
    assert not ray.is_initialized()


def test_an_adapter_goes_to_the_replicas_holding_its_base(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    publish_lora_model(settings.storage.models_dir, "loraone")
    publish_tiny_model(settings.storage.models_dir, "fullone")
    generator = RayGenerator(settings)

    assert generator.multiplexed_id("@LoraOne") == "base:tiny"
    assert generator.multiplexed_id("FullOne") == "fullone"
    assert generator.multiplexed_id("nobody") == "nobody"


def test_processes_serving_other_shards_or_roles_share_the_replicas(
    make_settings: Callable[..., Settings],
) -> None:
    leader = make_settings(discord={"shard_ids": [0], "shard_count": 2})
    gateway = make_settings(
        discord={"shard_ids": [1], "shard_count": 2, "token": "another-token"},
        scheduler={"enabled": False},
        training={"runner": "ray", "epochs": 3},
    )
    bigger = make_settings(generation={"max_batch_size": 4})

    assert replica_payload(leader) == replica_payload(gateway)
    assert replica_payload(leader) != replica_payload(bigger)


def test_an_adapter_from_a_worker_is_published_on_this_hosts_base(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    worker_store = tmp_path / "worker" / "models"
    trained = publish_lora_model(worker_store, "loraone", seed=3)
    settings = make_settings()  # this host has no tiny base yet: it keeps the worker's

    path = publish_trained(
        settings,
        TrainedModel(
            name="loraone",
            version=trained.metadata.version,
            folder=pack_folder(trained.path),
            tiny_base=pack_folder(tiny_base_dir(worker_store)),
        ),
    )

    config = json.loads((path / "adapter_config.json").read_text())
    here = tiny_base_dir(settings.storage.models_dir).resolve()
    assert config["base_model_name_or_path"] == str(here)
    with GenerationEngine(settings) as engine:
        result = engine.generate_sync("loraone", "My dream is", seed=1)
    assert result.model.metadata.version == trained.metadata.version
    assert result.tweets[0].startswith("My dream is")


# -- generation replicas -------------------------------------------------------------------


def serving_environment(cluster: Cluster, address: str) -> dict[str, str]:
    """``serving_settings`` as a bot process reads them from its environment."""
    return {
        f"TWEETLIKE_{key}": value
        for key, value in {
            "STORAGE__MODELS_DIR": str(cluster.serving_store),
            "GENERATION__DEVICE": "cpu",
            "GENERATION__BACKEND": "ray",
            "GENERATION__MAX_BATCH_SIZE": "2",
            "GENERATION__MAX_QUEUE": "2",
            "TRAINING__BLOCKED_HANDLES": '["blocked"]',
            "RAY__ADDRESS": address,
            "RAY__APP_NAME": APP,
        }.items()
    }


def serving_settings(cluster: Cluster, **generation: Any) -> Settings:
    return Settings(
        storage={"models_dir": str(cluster.serving_store)},
        generation={
            "device": "cpu",
            "backend": "ray",
            "max_batch_size": 2,
            "max_queue": 2,
            **generation,
        },
        training={"blocked_handles": ["blocked"]},
        ray={"address": cluster.address, "app_name": APP, "cpus_per_replica": 1},
    )


@pytest.fixture(scope="module")
def replicas(cluster: Cluster) -> Iterator[RayGenerator]:
    publish_tiny_model(cluster.serving_store, "alice", train_steps=20)
    publish_tiny_model(cluster.serving_store, "blocked")
    generator = make_generator(serving_settings(cluster))
    assert isinstance(generator, RayGenerator)
    generator.start()
    yield generator
    generator.close()


@pytest.fixture
def local_engine(cluster: Cluster, one_torch_thread: None) -> Iterator[GenerationEngine]:
    """The in-process engine on the same store, with the replica's one torch thread."""
    settings = serving_settings(cluster).model_copy(deep=True)
    settings.generation.backend = "local"
    with GenerationEngine(settings) as engine:
        yield engine


@pytest.mark.parametrize(("prompt", "seed"), [("My dream is", 7), ("Coffee", 12345)])
async def test_serve_gives_the_local_engines_tweets_for_a_seed(
    replicas: RayGenerator, local_engine: GenerationEngine, prompt: str, seed: int
) -> None:
    local = await local_engine.generate("alice", prompt, count=3, seed=seed)
    remote = await replicas.generate("alice", prompt, count=3, seed=seed)

    assert remote.tweets == local.tweets
    assert remote.model.metadata.version == local.model.metadata.version


@pytest.mark.parametrize(
    ("model", "prompt", "error"),
    [
        ("nobody", "My dream is", ModelNotFoundError),
        ("../alice", "My dream is", ModelNotFoundError),
        ("blocked", "My dream is", BlockedHandleError),
        ("alice", "x" * 500, TweetlikeError),
    ],
)
async def test_serve_refuses_as_the_local_engine_does(
    replicas: RayGenerator,
    local_engine: GenerationEngine,
    model: str,
    prompt: str,
    error: type[TweetlikeError],
) -> None:
    with pytest.raises(error) as local:
        await local_engine.generate(model, prompt)
    with pytest.raises(error) as remote:
        await replicas.generate(model, prompt)

    assert type(remote.value) is type(local.value)
    assert str(remote.value) == str(local.value)


async def test_requests_past_the_queue_are_answered_busy(replicas: RayGenerator) -> None:
    # Each replica takes 2 batches of 2 rows and 2 more wait: 12 at once cannot all fit.
    outcomes = await asyncio.gather(
        *(replicas.generate("alice", "My dream is", count=5) for _ in range(12)),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, EngineBusyError)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert refused and len(refused) + len(served) == len(outcomes)


async def test_a_request_past_its_timeout_fails_with_the_timeout_message(
    replicas: RayGenerator,
) -> None:
    with pytest.raises(GenerationTimeoutError, match=r"longer than 0\.001 s"):
        await replicas.generate("alice", "My dream is", timeout=0.001)


async def test_a_republished_model_is_served_from_the_next_request(
    replicas: RayGenerator,
) -> None:
    await replicas.generate("alice", "My dream is")
    newer = publish_tiny_model(
        replicas.settings.storage.models_dir, "alice", seed=5, train_steps=20
    )

    result = await replicas.generate("alice", "My dream is")

    assert result.model.metadata.version == newer.metadata.version


async def test_status_shows_the_replicas_and_what_they_hold(
    cluster: Cluster, replicas: RayGenerator
) -> None:
    await replicas.generate("alice", "My dream is")
    await wait_until(lambda: "alice" in replicas.stats().loaded_models)

    lines = await asyncio.to_thread(ray_cluster.status_lines, replicas.settings, replicas)

    assert lines[0].startswith(f"ray cluster: {cluster.address}, 1 node, CPUs ")
    assert f"generation replicas: application '{APP}' running, 1 running (wanted 1)" in lines
    assert replicas.stats().device == "ray: 1 replica on cpu"
    (replica,) = replicas.replica_reports()
    assert f"replica {replica.replica} (node 127.0.0.1, pid {replica.pid}): cpu" in lines[-1]


async def test_slash_status_shows_each_replica_and_their_sum(replicas: RayGenerator) -> None:
    service = TweetlikeService(replicas.settings, replicas)
    await replicas.generate("alice", "My dream is")
    await wait_until(lambda: "alice" in replicas.stats().loaded_models)

    reply = await service.status(Requester(user_id=0, is_console=True))

    assert isinstance(reply, TextReply)
    (replica,) = replicas.replica_reports()
    assert "device: ray: 1 replica on cpu" in reply.lines
    assert "loaded models: @alice" in reply.lines
    assert "generation backend: ray" in reply.lines
    assert any(line.startswith(f"replica {replica.replica} (node ") for line in reply.lines)


def test_tweetlike_status_shows_the_cluster_and_its_replicas(
    cluster: Cluster,
    replicas: RayGenerator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TWEETLIKE_GENERATION__BACKEND", "ray")
    monkeypatch.setenv("TWEETLIKE_TRAINING__RUNNER", "ray")
    monkeypatch.setenv("TWEETLIKE_RAY__ADDRESS", cluster.address)
    monkeypatch.setenv("TWEETLIKE_RAY__APP_NAME", APP)

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert f"generation replicas: application '{APP}' running, 1 running (wanted 1)" in lines
    assert "training workers: 1 of 1 node can take a training (CPU 1)" in lines


def test_tweetlike_generate_answers_through_the_replicas(
    cluster: Cluster,
    replicas: RayGenerator,
    local_engine: GenerationEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in serving_environment(cluster, cluster.address).items():
        monkeypatch.setenv(key, value)

    assert main(["generate", "alice", "My dream is", "-n", "3", "--seed", "7", "--json"]) == 0

    local = local_engine.generate_sync("alice", "My dream is", count=3, seed=7)
    assert json.loads(capsys.readouterr().out) == local.tweets


def test_a_bot_off_the_cluster_is_served_through_ray_client(
    cluster: Cluster, replicas: RayGenerator, local_engine: GenerationEngine, tmp_path: Path
) -> None:
    """``ray.address = "ray://HEAD:10001"``: the bot is no node of the cluster."""
    address = f"ray://127.0.0.1:{cluster.client_port}"
    command = ["generate", "alice", "My dream is", "-n", "3", "--seed", "7", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "bot", *command],
        cwd=tmp_path,
        env={**os.environ, **serving_environment(cluster, address)},
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS * 2,
    )

    assert result.returncode == 0, result.stderr
    local = local_engine.generate_sync("alice", "My dream is", count=3, seed=7)
    assert json.loads(result.stdout) == local.tweets
    assert "Traceback" not in result.stderr
    assert "LongPollClient" not in result.stderr  # the connection ends with the process


async def test_a_replica_killed_mid_request_fails_cleanly_or_retries(
    replicas: RayGenerator,
) -> None:
    (replica,) = replicas.replica_reports()
    os.kill(replica.pid, signal.SIGSTOP)  # the request is sure to be in flight there
    request = asyncio.ensure_future(replicas.generate("alice", "My dream is", timeout=20))
    await asyncio.sleep(0.5)
    os.kill(replica.pid, signal.SIGKILL)

    done, _ = await asyncio.wait({request}, timeout=WAIT_SECONDS)

    assert done, "the request hung after its replica died"
    error = request.exception()
    assert error is None or isinstance(error, TweetlikeError)


# -- training workers -------------------------------------------------------------------


class Leader:
    """Job managers on the bot's host, training on the cluster; stops what it started."""

    def __init__(self, cluster: Cluster, make_settings: Callable[..., Settings]) -> None:
        self.cluster = cluster
        self.make_settings = make_settings
        self.notifier = RecordingNotifier()
        self.managers: list[JobManager] = []
        self.engines: list[GenerationEngine] = []

    def settings(self, **training: Any) -> Settings:
        return self.make_settings(
            training={"epochs": 1, "runner": "ray", **training},
            ray={"address": self.cluster.address, "app_name": APP},
        )

    async def manager(self, settings: Settings) -> JobManager:
        engine = GenerationEngine(settings)
        engine.start()
        self.engines.append(engine)
        manager = JobManager(settings, engine, self.notifier, progress_interval=0.0)
        self.managers.append(manager)
        await manager.start()
        return manager

    async def close(self) -> None:
        for manager in self.managers:
            await manager.stop()
        for engine in self.engines:
            engine.close()


@pytest.fixture
async def leader(cluster: Cluster, make_settings: Callable[..., Settings]) -> AsyncIterator[Leader]:
    built = Leader(cluster, make_settings)
    yield built
    await built.close()


async def test_a_training_runs_on_the_cluster_without_the_store_and_is_published_here(
    leader: Leader, tmp_path: Path
) -> None:
    if leader.cluster.hidden is None:
        pytest.skip("hiding the bot's files from the cluster needs root and unshare(1)")
    settings = leader.settings()
    store_tweets(settings, "newhandle", 200)
    assert not leader.cluster.sees(tmp_path / "data" / "newhandle" / "tweets.jsonl")
    manager = await leader.manager(settings)

    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(finished(manager, ticket.job_id))

    assert job_state(manager, ticket.job_id) == "succeeded"
    published = ModelStoreReader(settings.storage.models_dir).get("newhandle")
    assert published.metadata.handles == ["newhandle"]
    assert published.metadata.tweets_downloaded == 200
    assert any("fine-tuning" in call.text for call in leader.notifier.progress)
    (answer,) = leader.notifier.tweets
    assert (answer.channel_id, answer.mention_user_id) == (10, 111)
    assert answer.tweets.tweets[0].startswith("My dream is")


async def test_cancelling_a_ray_training_stops_it_and_publishes_nothing(
    leader: Leader,
) -> None:
    settings = leader.settings(epochs=100)
    store_tweets(settings, "newhandle", 200)
    manager = await leader.manager(settings)
    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(lambda: any("fine-tuning" in c.text for c in leader.notifier.progress))

    assert await manager.cancel(ticket.job_id)

    assert job_state(manager, ticket.job_id) == "cancelled"
    assert not (Path(settings.storage.models_dir) / "newhandle").exists()
    assert [t.mention_user_id for t in leader.notifier.texts] == [111]
    assert "cancelled" in leader.notifier.texts[0].text


async def test_a_failed_ray_training_keeps_the_old_model_serving(leader: Leader) -> None:
    settings = leader.settings()
    publish_tiny_model(settings.storage.models_dir, "newhandle")
    serving = ModelStoreReader(settings.storage.models_dir).serving_version_path("newhandle")
    store_tweets(settings, "newhandle", 5)  # far too few to train on
    manager = await leader.manager(settings)

    retrain = await manager.request_training(
        ["newhandle"], reason="retrain", requester=ALICE, prompt=None
    )
    await wait_until(finished(manager, retrain.job_id))

    assert job_state(manager, retrain.job_id) == "failed"
    reader = ModelStoreReader(settings.storage.models_dir)
    assert reader.serving_version_path("newhandle") == serving
    (told,) = leader.notifier.texts
    assert "tweets" in told.text and "previous model keeps serving" in told.text


async def test_a_ray_training_past_the_timeout_is_stopped_and_reported(leader: Leader) -> None:
    settings = leader.settings(epochs=100, timeout_minutes=0.01)
    store_tweets(settings, "newhandle", 200)
    manager = await leader.manager(settings)

    ticket = await manager.request_training(
        ["newhandle"], reason="new_user", requester=ALICE, prompt="My dream is"
    )
    await wait_until(finished(manager, ticket.job_id))

    record = manager.state.job(ticket.job_id)
    assert record is not None and record.state == "failed"
    assert record.error is not None and "timeout_minutes" in record.error
    assert not (Path(settings.storage.models_dir) / "newhandle").exists()


async def test_a_ray_training_running_when_the_leader_died_is_requeued_and_finished(
    leader: Leader,
) -> None:
    settings = leader.settings()
    store_tweets(settings, "newhandle", 200)
    dead = JobManager(settings, GenerationEngine(settings), leader.notifier)
    job = dead.state.add_job(
        kind="new_user",
        model="newhandle",
        handles=["newhandle"],
        fetch=False,
        requesters=[PendingAnswer(111, 10, "My dream is")],
    )
    dead.state.update_job(job.id, state="running")  # a Ray training has no local pid
    dead.database.dispose()

    manager = await leader.manager(settings)
    await wait_until(finished(manager, job.id))

    assert job_state(manager, job.id) == "succeeded"
    assert ModelStoreReader(settings.storage.models_dir).get("newhandle").metadata.version
    assert [(p.channel_id, p.mention_user_id) for p in leader.notifier.tweets] == [(10, 111)]


def test_tweetlike_train_trains_on_the_cluster_and_publishes_here(
    cluster: Cluster,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    store_tweets(settings, "clihandle", 200)
    for key, value in {
        "STORAGE__MODELS_DIR": str(settings.storage.models_dir),
        "STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "TRAINING__BASE_MODEL": "tiny",
        "TRAINING__RUNNER": "ray",
        "RAY__ADDRESS": cluster.address,
    }.items():
        monkeypatch.setenv(f"TWEETLIKE_{key}", value)

    assert main(["train", "clihandle", "--epochs", "1", "--progress", "json"]) == 0

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    published = ModelStoreReader(settings.storage.models_dir).get("clihandle")
    assert events[-1] == {
        "event": "done",
        "model": "clihandle",
        "version": published.metadata.version,
    }
    assert {"train", "publish"} <= {e["stage"] for e in events if e["event"] == "progress"}
    assert (published.metadata.model_extra or {})["hyperparameters"]["epochs"] == 1


async def test_a_workspace_left_by_a_killed_worker_is_removed_by_the_next_training(
    leader: Leader,
) -> None:
    finished_process = subprocess.Popen(["true"])
    finished_process.wait()
    left_behind = WORKSPACES / ".staging" / f"workspace-{finished_process.pid}-killed"
    left_behind.mkdir(parents=True)
    settings = leader.settings()
    store_tweets(settings, "newhandle", 5)  # fails fast: the cleanup comes first
    manager = await leader.manager(settings)

    ticket = await manager.request_training(
        ["newhandle"], reason="train", requester=ALICE, prompt=None
    )
    await wait_until(finished(manager, ticket.job_id))

    assert job_state(manager, ticket.job_id) == "failed"
    assert not left_behind.exists()
