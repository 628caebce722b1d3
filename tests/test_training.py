"""``tweetlike train`` end to end with the ``tiny`` base model on CPU.

One model trained on the bundled sample account is shared by the module (``published``);
tests that change the store work on a copy of it (``served``) or on a small account of
their own (``workspace``), so each training here stays a few seconds at most.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from fakes.x_api import BEARER_TOKEN, FakeXApi
from training_support import (
    REPO_ROOT,
    SAMPLE_LINES,
    SMALL_ACCOUNT,
    Workspace,
    store,
    train,
    write_config,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed
from transformers import pipeline as hf_pipeline

from bot.config import Settings
from bot.core.formatting import AI_LABEL
from bot.generation.novelty import NoveltyIndex
from bot.model_store import ModelStoreReader
from bot.training import publish
from bot.training.dataset import EOS
from bot.training.progress import DoneEvent, ErrorEvent, ProgressEvent, WarningEvent, parse_event
from bot.training.recipes import HUGGINGTWEETS, TINY_FULL, TINY_LORA, hyperparameters_for


def snapshot(folder: Path) -> list[tuple[str, str]]:
    """Every path under ``folder`` (hidden ones too) with what it is or points to."""
    return sorted(
        (
            str(path.relative_to(folder)),
            os.readlink(path) if path.is_symlink() else str(path.stat().st_size),
        )
        for path in folder.rglob("*")
        if not path.is_dir() or path.is_symlink()
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("published")
    ws = Workspace(root, write_config(root))
    store(ws.data, "sample", SAMPLE_LINES)
    code, out, err = train(ws, "sample", "--epochs", "2")
    assert code == 0, err
    (root / "stdout.txt").write_text(out, encoding="utf-8")
    return ws


@pytest.fixture
def served(published: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the published store, to change or to try to break."""
    root = tmp_path / "served"
    shutil.copytree(published.root, root, symlinks=True)
    return Workspace(root, write_config(root))


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    ws = Workspace(root, write_config(root))
    store(ws.data, "pip", SMALL_ACCOUNT)
    return ws


def test_published_folder_loads_with_transformers_pipeline_and_generates(
    published: Workspace,
) -> None:
    generator = hf_pipeline("text-generation", model=str(published.models / "sample"))
    set_seed(0)
    # At least one new token whatever is sampled: a first token that ends the text is allowed
    # to a model, and would leave nothing to check.
    text = generator("My dream is", max_new_tokens=12, min_new_tokens=1)[0]["generated_text"]
    assert text.startswith("My dream is") and len(text) > len("My dream is")


def test_summary_line_names_the_model_and_its_counts(published: Workspace) -> None:
    out = (published.root / "stdout.txt").read_text(encoding="utf-8")
    assert out.startswith("published models/sample (version ")
    assert "334 of 352 tweets kept" in out


def test_models_dir_shows_only_the_served_link(published: Workspace) -> None:
    visible = [p.name for p in published.models.iterdir() if not p.name.startswith(".")]
    assert visible == ["sample"]
    assert (published.models / "sample").is_symlink()


def test_model_card_has_front_matter_and_the_four_counts(published: Workspace) -> None:
    card = (published.models / "sample" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlanguage: en\nthumbnail: ")
    assert "tags:\n- huggingtweets\n" in card
    assert 'widget:\n- text: "My dream is"\n---' in card
    assert (
        "| Data | @sample |\n| --- | --- |\n"
        "| Tweets downloaded | 352 |\n| Retweets | 10 |\n"
        "| Short tweets | 8 |\n| Tweets kept | 334 |"
    ) in card
    assert "## How does it work?" in card and "## Limitations and bias" in card
    assert "generator = pipeline('text-generation', model='models/sample')" in card
    assert "AI-generated" in card
    assert "- Epochs: 2" in card and "`tiny`" in card


def test_card_names_an_account_without_display_name_once_per_place(published: Workspace) -> None:
    card = (published.models / "sample" / "README.md").read_text(encoding="utf-8")
    header = card[card.index('<div class="inline-flex') : card.index("</div>\n\n")]
    assert header.count("@sample") == 1
    assert "imitating the\npublic tweets of @sample, and nothing" in card


def test_card_of_a_tiny_model_describes_tiny_not_gpt2_and_carries_the_ai_label(
    published: Workspace,
) -> None:
    card = (published.models / "sample" / "README.md").read_text(encoding="utf-8")
    limitations = card[card.index("## Limitations and bias") :]
    assert "GPT-2" not in limitations and "knows no English beyond the account's own" in card
    assert f"**{AI_LABEL}.**" in card


def test_metadata_has_the_keys_product_spec_promises(published: Workspace) -> None:
    folder = published.models / "sample"
    meta = json.loads((folder / "tweetlike.json").read_text(encoding="utf-8"))
    assert meta["handles"] == ["sample"]
    counts = [meta[k] for k in ("tweets_downloaded", "retweets", "short_tweets", "tweets_kept")]
    assert counts == [352, 10, 8, 334]
    assert meta["base_model"] == "tiny"
    assert meta["version"] == folder.resolve().name
    assert datetime.fromisoformat(meta["trained_at"]).tzinfo is not None
    assert meta["newest_tweet_id"] == str(1000 + len(SAMPLE_LINES) - 1)
    assert isinstance(meta["eval_loss"], float)
    assert meta["hyperparameters"]["epochs"] == 2
    assert meta["hyperparameters"]["learning_rate"] == TINY_FULL.learning_rate
    assert meta["method"] == "full" and meta["base_fingerprint"] is None


def test_generation_config_carries_huggingtweets_sampling_defaults(published: Workspace) -> None:
    folder = published.models / "sample"
    config = GenerationConfig.from_pretrained(folder)
    eos = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(EOS)
    assert (config.do_sample, config.top_p, config.temperature) == (True, 0.95, 1.0)
    assert config.max_new_tokens == 60
    assert config.bos_token_id == config.eos_token_id == config.pad_token_id == eos
    assert config.prompt_prefix == EOS and config.stop_at_newline is True


def test_novelty_index_knows_the_kept_training_tweets(published: Workspace) -> None:
    index = NoveltyIndex.load(published.models / "sample" / "novelty.bin")
    assert len(index) == 334
    assert index.is_copy(SAMPLE_LINES[0])


def test_json_progress_stream_parses_and_ends_with_done(workspace: Workspace) -> None:
    code, out, _ = train(workspace, "pip", "--epochs", "3", "--progress", "json")
    events = [parse_event(line) for line in out.splitlines()]
    assert code == 0 and events and None not in events
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    stages = [e.stage for e in progress]
    assert stages == sorted(stages, key=["prepare", "train", "publish"].index)
    train_fractions = [e.fraction for e in progress if e.stage == "train"]
    assert train_fractions[-1] == 1.0
    assert all(b - a >= 0.01 for a, b in itertools.pairwise(train_fractions))
    assert any(isinstance(e, WarningEvent) and "40,000" in e.message for e in events)
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.model == "pip"
    assert done.version == (workspace.models / "pip").resolve().name


def test_fetch_flag_downloads_first_and_reports_a_fetch_stage(
    tmp_path: Path, fake_x: FakeXApi
) -> None:
    fake_x.add_user("alice", name="Alice Example")
    first = fake_x.add_tweet("alice", SMALL_ACCOUNT[0])
    for text in SMALL_ACCOUNT[1:]:
        fake_x.add_tweet("alice", text)
    fake_x.add_retweet("alice", first, "someone")
    ws = Workspace(tmp_path, write_config(tmp_path))
    with ws.config.open("a", encoding="utf-8") as config:
        config.write(f'[x]\nbearer_token = "{BEARER_TOKEN}"\napi_base_url = "{fake_x.base_url}"\n')

    code, out, err = train(ws, "alice", "--fetch", "--epochs", "1", "--progress", "json")

    assert code == 0, err
    events = [parse_event(line) for line in out.splitlines()]
    stages = [e.stage for e in events if isinstance(e, ProgressEvent)]
    assert stages[0] == "fetch" and stages.index("prepare") > stages.index("fetch")
    assert isinstance(events[-1], DoneEvent)
    meta = json.loads((ws.models / "alice" / "tweetlike.json").read_text(encoding="utf-8"))
    assert (meta["tweets_downloaded"], meta["retweets"]) == (len(SMALL_ACCOUNT) + 1, 1)
    assert meta["display_names"] == {"alice": "Alice Example"}
    assert "Alice Example (@alice)" in (ws.models / "alice" / "README.md").read_text("utf-8")


def test_json_mode_reports_a_failure_as_an_error_event(workspace: Workspace) -> None:
    code, out, _ = train(workspace, "nobody", "--progress", "json")
    events = [parse_event(line) for line in out.splitlines()]
    assert code == 1
    assert None not in events and isinstance(events[-1], ErrorEvent)
    assert "tweetlike import nobody" in events[-1].message
    assert not any(isinstance(e, DoneEvent) for e in events)


def test_training_is_deterministic_on_cpu(workspace: Workspace) -> None:
    for _ in range(2):
        assert train(workspace, "pip", "--epochs", "1")[0] == 0
    first, second = publish.list_versions(workspace.models, "pip")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_combined_model_is_named_by_sorted_handles_with_a_column_each(
    workspace: Workspace,
) -> None:
    store(workspace.data, "zed", SAMPLE_LINES[120:240], first_id=5000)
    code, _, err = train(workspace, "Zed", "pip", "--epochs", "1")
    assert code == 0, err
    folder = workspace.models / "pip-zed"
    meta = json.loads((folder / "tweetlike.json").read_text(encoding="utf-8"))
    assert meta["handles"] == ["pip", "zed"]
    per = meta["per_handle"]
    assert meta["tweets_kept"] == per["pip"]["tweets_kept"] + per["zed"]["tweets_kept"]
    assert meta["newest_tweet_id"] == "5119"
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "| Data | @pip | @zed |\n| --- | --- | --- |\n" in card
    kept_row = f"| Tweets kept | {per['pip']['tweets_kept']} | {per['zed']['tweets_kept']} |"
    assert kept_row in card


def test_each_base_and_method_gets_its_recipe_only_where_the_config_is_silent(
    make_settings: Callable[..., Settings],
) -> None:
    silent = make_settings()
    for base, method, recipe in [
        ("tiny", "full", TINY_FULL),
        ("tiny", "lora", TINY_LORA),
        ("gpt2", "full", HUGGINGTWEETS),
    ]:
        hp = hyperparameters_for(silent, base, method, epochs=None)
        assert (hp.epochs, hp.learning_rate) == (recipe.epochs, recipe.learning_rate)
    configured = make_settings(training={"epochs": 3, "learning_rate": 0.01})
    chosen = hyperparameters_for(configured, "tiny", "full", epochs=None)
    assert (chosen.epochs, chosen.learning_rate) == (3, 0.01)
    assert hyperparameters_for(configured, "tiny", "full", epochs=7).epochs == 7


def test_without_a_validation_split_eval_loss_is_null(workspace: Workspace) -> None:
    write_config(workspace.root, validation_fraction=0.0)
    assert train(workspace, "pip", "--epochs", "1")[0] == 0
    folder = workspace.models / "pip"
    assert json.loads((folder / "tweetlike.json").read_text("utf-8"))["eval_loss"] is None
    assert "Eval loss on held-out tweets: n/a" in (folder / "README.md").read_text("utf-8")


def test_a_local_model_folder_can_be_the_base_model(
    workspace: Workspace, published: Workspace
) -> None:
    base = str(published.models / "sample")
    code, _, err = train(workspace, "pip", "--base-model", base, "--epochs", "1")
    assert code == 0, err
    folder = workspace.models / "pip"
    meta = json.loads((folder / "tweetlike.json").read_text(encoding="utf-8"))
    assert meta["base_model"] == base
    assert meta["hyperparameters"]["learning_rate"] == HUGGINGTWEETS.learning_rate
    card = (folder / "README.md").read_text("utf-8")
    assert "the pre-trained model in `sample`" in card
    assert "limitations and biases of its base model, `sample`" in card
    hf_pipeline("text-generation", model=str(folder))


def test_keep_versions_prunes_old_versions_and_rollback_serves_the_previous(
    workspace: Workspace,
) -> None:
    config = workspace.config.read_text(encoding="utf-8")
    workspace.config.write_text(
        config.replace("[generation]", "keep_versions = 2\n[generation]"), encoding="utf-8"
    )
    for _ in range(3):
        assert train(workspace, "pip", "--epochs", "1")[0] == 0
    versions = publish.list_versions(workspace.models, "pip")
    assert len(versions) == 2
    assert (workspace.models / "pip").resolve() == versions[-1]

    previous = publish.rollback(workspace.models, "pip")
    assert previous == versions[0]
    served = ModelStoreReader(workspace.models).get("pip")
    assert served.metadata.version == versions[0].name
    AutoModelForCausalLM.from_pretrained(served.path)


def test_stale_staging_of_a_dead_training_is_removed(workspace: Workspace) -> None:
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    staging = workspace.models / ".staging"
    stale = staging / f"pip-{dead_pid.pid}-abcd1234"
    alive = staging / f"pip-{os.getpid()}-keepme_1"
    for folder in (stale, alive):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half written")
    assert train(workspace, "pip", "--epochs", "1")[0] == 0
    assert not stale.exists()
    assert alive.exists()


def signal_mid_training(ws: Workspace, signum: int) -> tuple[int, list[str]]:
    """Run ``python -m bot train`` as the job runner does; send ``signum`` once training
    has made progress. Returns the exit status and every stdout line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "bot", "--config", str(ws.config), "train", "sample"]
    child = subprocess.Popen(
        [*command, "--epochs", "100", "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        for line in child.stdout:
            lines.append(line)
            event = parse_event(line)
            if isinstance(event, ProgressEvent) and event.stage == "train" and event.fraction > 0:
                child.send_signal(signum)
                lines.extend(child.stdout)
                break
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    return child.returncode, lines


@pytest.mark.timeout(120)
def test_killed_training_leaves_the_previous_version_serving(served: Workspace) -> None:
    before = snapshot(served.models)
    serving = (served.models / "sample").resolve()

    code, lines = signal_mid_training(served, signal.SIGKILL)

    assert code == -signal.SIGKILL, lines
    assert (served.models / "sample").resolve() == serving
    assert [p for p in snapshot(served.models) if not p[0].startswith(".staging")] == before
    assert ModelStoreReader(served.models).get("sample").path == serving
    hf_pipeline("text-generation", model=str(served.models / "sample"))


@pytest.mark.timeout(120)
def test_sigterm_stops_training_with_an_error_event_and_publishes_nothing(
    served: Workspace,
) -> None:
    before = snapshot(served.models)

    code, lines = signal_mid_training(served, signal.SIGTERM)

    assert code == 1, lines
    last = parse_event(lines[-1])
    assert isinstance(last, ErrorEvent) and "SIGTERM" in last.message
    assert snapshot(served.models) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "no tweets stored for @nobody: run `tweetlike fetch nobody`"),
        (["not a handle!"], "is not an X handle"),
        (["sample", "--epochs", "0"], "--epochs must be between 1 and 100"),
        (["sample", "--base-model", "./no/such/model"], "does not exist"),
        (["sample", "--base-model", "{root}/empty"], "is not a Hugging Face model folder"),
        (["sample", "--base-model", "{root}/broken"], "cannot load base model from"),
        (["few"], "@few has only 12 usable tweets"),
        (["blocked_one"], "@blocked_one has opted out"),
    ],
)
def test_bad_train_input_fails_in_one_line_and_changes_nothing(
    served: Workspace, args: list[str], message: str
) -> None:
    write_config(served.root, blocked_handles=["blocked_one"])
    store(served.data, "few", [f"tweet number {i} has words" for i in range(12)])
    store(served.data, "blocked_one", SMALL_ACCOUNT)
    (served.root / "empty").mkdir()
    (served.root / "broken").mkdir()
    (served.root / "broken" / "config.json").write_text("{}", encoding="utf-8")
    args = [a.replace("{root}", str(served.root)) for a in args]
    before = snapshot(served.models)

    code, out, err = train(served, *args)

    assert code != 0
    assert out == ""
    last_line = err.splitlines()[-1]
    assert last_line.startswith("tweetlike: error: ") and message in last_line, err
    assert "Traceback" not in err and err.count("tweetlike: error") == 1
    assert snapshot(served.models) == before
