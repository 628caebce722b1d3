"""What the serving benchmarks share: the models they time, the sample account, the tables.

Every model here is a randomly initialised GPT-2 built on the spot (no download), which
writes junk but costs exactly what a trained one costs. ``GPT2Config()`` is GPT-2 small:
124M parameters with the full 50,257-token vocabulary. The tokenizer is a small byte-level
BPE trained on a few sentences and padded with one word per remaining id, so every id a
random model samples decodes to something and no reply is empty.

Scripts import this as ``support`` (``bench/`` is on ``sys.path`` when one of them runs) and
put the repository root on ``sys.path`` before importing ``bot``.

One thread of torch work at a time. PyTorch's OpenMP keeps a team of worker threads for
every thread that has run a parallel operation, for as long as that thread lives. With two
teams alive on a two-core machine, each team's parallel regions wait on the other's threads:
the engine's 16-request round took 1.2 s instead of 0.79 s once the main thread had run the
pipeline (OMP_NUM_THREADS=1 showed no difference, a thread that had ended none). In the bot
only the engine's worker thread runs torch, so a benchmark that runs a baseline in the main
thread beside the engine measures both slower than they are. The baselines here therefore
run their torch work on a thread that ends with the call (:func:`on_own_thread`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, pipeline  # noqa: E402
from transformers import logging as hf_logging  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.generation.novelty import NoveltyIndex  # noqa: E402
from bot.model_store import METADATA_FILE, NOVELTY_FILE, ModelMetadata  # noqa: E402
from bot.sources.archive import import_tweets  # noqa: E402
from bot.training.publish import new_version, publish, staging_dir  # noqa: E402
from bot.training.tiny import EOS, build_tiny_tokenizer  # noqa: E402

T = TypeVar("T")
SAMPLE_TWEETS = REPO / "bot" / "assets" / "sample_tweets.txt"
SAMPLE_HANDLE = "sample"
# Sixteen prompts of different lengths, so a batch is left-padded as real traffic would be.
PROMPTS = [
    "My dream is",
    "Today I learned",
    "Hot take:",
    "The best thing about",
    "I can't believe",
    "Never forget that",
    "Good morning to everyone who",
    "Unpopular opinion:",
    "Just finished",
    "Why does nobody talk about",
    "Reminder:",
    "If you ever",
    "The secret to",
    "Breaking:",
    "Thread about",
    "Someone please explain why",
]
CORPUS = [
    "my dream is to build a small cabin by the lake and write every morning",
    "today I learned that octopuses have three hearts and blue blood",
    "hot take: the best part of any trip is the train ride home",
    "the best thing about rainy days is staying in with tea and a book",
] * 8
SEED = 0
TOP_K, TOP_P = 50, 0.95


def quiet_transformers() -> None:
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def padded_tokenizer(vocab_size: int) -> GPT2TokenizerFast:
    """A small BPE with one word per id up to ``vocab_size``; ``<|endoftext|>`` is id 0."""
    tokenizer = build_tiny_tokenizer(CORPUS, vocab_size=2048)
    tokenizer.add_tokens([f" w{i}" for i in range(vocab_size - len(tokenizer))])
    tokenizer.model_max_length = 1024
    return tokenizer


def gpt2_small(vocab_size: int = GPT2Config().vocab_size, layers: int = 12) -> GPT2LMHeadModel:
    """GPT-2 small's shape at random init (seeded); 124M parameters with the full vocab."""
    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=vocab_size, n_layer=layers, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def publish_serving_model(
    models_dir: Path,
    name: str,
    new_tokens: int,
    model: GPT2LMHeadModel | None = None,
    base_label: str = "gpt2-small shape, random init",
) -> Path:
    """Publish ``model`` (default: GPT-2 small's shape) so that it always writes exactly
    ``new_tokens`` tokens.

    ``min_new_tokens = max_new_tokens`` makes every engine do the same work per request; the
    folder is a standard Hugging Face one, so the pipeline and CTranslate2 load it too.
    Returns the served folder.
    """
    model = model if model is not None else on_own_thread(gpt2_small)
    tokenizer = padded_tokenizer(model.config.vocab_size)
    folder = staging_dir(models_dir, name)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    eos = tokenizer.eos_token_id
    generation = {
        "do_sample": True,
        "top_k": TOP_K,
        "top_p": TOP_P,
        "temperature": 1.0,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "prompt_prefix": EOS,
        "stop_at_newline": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation))
    version = new_version()
    metadata = ModelMetadata(
        handles=[name],
        tweets_downloaded=len(CORPUS),
        retweets=0,
        short_tweets=0,
        tweets_kept=len(CORPUS),
        base_model=base_label,
        version=version,
        trained_at=datetime.now(UTC).isoformat(),
    )
    (folder / METADATA_FILE).write_text(metadata.model_dump_json())
    NoveltyIndex.build(CORPUS).save(folder / NOVELTY_FILE)
    publish(models_dir, name, folder, version, keep_versions=1)
    return (models_dir / name).resolve()


def on_own_thread(work: Callable[[], T]) -> T:
    """``work()`` on a new thread that ends with it, so its OpenMP team does too (see the
    module docstring)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="bench-baseline")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def huggingtweets_pipeline(folder: Path, device: str, dtype: torch.dtype) -> Callable[[str], None]:
    """The huggingtweets way: ``transformers.pipeline("text-generation")`` on the folder, one
    call per prompt (``<|endoftext|>`` + prompt, top-k 50 / top-p 0.95), warmed up. Each call
    runs :func:`on_own_thread`."""
    generator = on_own_thread(
        lambda: pipeline("text-generation", model=str(folder), device=device, dtype=dtype)
    )

    def generate(prompt: str) -> None:
        on_own_thread(lambda: generator(EOS + prompt, do_sample=True, top_k=TOP_K, top_p=TOP_P))

    generate("warm up")
    return generate


def save_base_folder(folder: Path, vocab_size: int, layers: int = 12) -> Path:
    """A local base model folder of GPT-2 small's shape, to fine-tune with ``--base-model``."""
    model = gpt2_small(vocab_size, layers)
    model.save_pretrained(folder)
    padded_tokenizer(vocab_size).save_pretrained(folder)
    return folder


def import_sample(settings: Settings) -> None:
    """The bundled sample account (352 tweets) as ``@sample`` in the settings' data dir."""
    import_tweets(settings, SAMPLE_HANDLE, SAMPLE_TWEETS)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, ready to paste into the README."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool, label: str) -> str:
    return f"{'MET   ' if met else 'MISSED'} {label}"


def machine(device: str = "cpu") -> str:
    """One line naming the hardware, the torch build and how busy the host was at the start
    (other processes on a shared machine slow every number down)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    return f"{model}, {cores} cores{gpu}, torch {torch.__version__}, load average {load:.1f}"
