"""Continuous batching's KV cache: a re-padded ``DynamicCache`` against the engine's per-slot
cache (``bot.generation.kv_cache.SlotKVCache``).

GPT-2-small shape (random weights, no download), int8 as the engine serves it on a CPU, 16
rows whose caches hold ``--length`` positions. Three costs:

- join: a new row's prompt (8 tokens) has been run; putting its keys and values into the
  batch. ``DynamicCache``: every layer's cache is re-padded to a common length and
  concatenated with the new row's (a copy of the whole batch's cache); slot cache: the row
  is written into its slot;
- leave: a row ends. ``DynamicCache``: every other row is gathered into a new cache
  (``batch_select_indices``); slot cache: the last row is copied into the freed slot;
- step: one decoding step of the 16 rows (forward pass only). ``DynamicCache``: rows
  left-padded to a common length with a padding mask; slot cache: each row at its own
  position, a per-row mask over a view of the preallocated buffers.

Rounds interleave the variants; medians are shown, counted as CPU time of the calling
thread: with one torch thread (the default) that thread does all the work, and time spent
waiting for a core that another process holds is not counted.

    .venv/bin/python bench/kv_cache.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.generation.kv_cache import SlotKVCache
from bot.generation.quantize import quantize_int8

ROWS = 16
PROMPT = 8


def dynamic_cache(model: GPT2LMHeadModel, rows: int, length: int) -> DynamicCache:
    cache = DynamicCache()
    ids = torch.randint(0, 50000, (rows, length))
    with torch.inference_mode():
        model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


def slot_cache(model: GPT2LMHeadModel, rows: int, length: int) -> SlotKVCache:
    cache = SlotKVCache(torch.device("cpu"), torch.float32)
    ids = torch.randint(0, 50000, (rows, length))
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = torch.zeros(rows, 1, length, length).masked_fill(~causal, torch.finfo(torch.float32).min)
    cache.prefill(0, rows, length)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
    cache.reserve(ROWS + 1, length + 2)
    return cache


def join_dynamic(batch: DynamicCache, new: DynamicCache) -> Callable[[], None]:
    def run() -> None:
        for old_layer, new_layer in zip(batch.layers, new.layers, strict=True):
            width = old_layer.keys.shape[2]
            pad = width - new_layer.keys.shape[2]
            keys = torch.nn.functional.pad(new_layer.keys, (0, 0, pad, 0))
            values = torch.nn.functional.pad(new_layer.values, (0, 0, pad, 0))
            torch.cat([old_layer.keys, keys])
            torch.cat([old_layer.values, values])

    return run


def join_slot(cache: SlotKVCache, model: GPT2LMHeadModel) -> Callable[[], None]:
    config = model.config
    keys = torch.randn(1, config.n_head, PROMPT, config.n_embd // config.n_head)

    def run() -> None:
        cache.prefill(ROWS, 1, PROMPT)
        for layer in range(config.n_layer):
            cache.update(keys, keys, layer)

    return run


def leave_dynamic(batch: DynamicCache) -> Callable[[], None]:
    keep = torch.arange(1, ROWS)

    def run() -> None:
        for layer in batch.layers:
            layer.keys.index_select(0, keep)
            layer.values.index_select(0, keep)

    return run


def leave_slot(cache: SlotKVCache, length: int) -> Callable[[], None]:
    def run() -> None:
        cache.move_row(ROWS - 1, 0, length)

    return run


def step_dynamic(model: GPT2LMHeadModel, cache: DynamicCache, length: int) -> Callable[[], None]:
    token = torch.randint(0, 50000, (ROWS, 1))
    mask = torch.ones(ROWS, length + 1, dtype=torch.long)
    mask[:, : length // 4] = 0  # rows of different ages are left-padded
    positions = torch.full((ROWS, 1), length)

    def run() -> None:
        with torch.inference_mode():
            model(
                input_ids=token,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
        cache.crop(-1)  # back to ``length`` for the next round

    return run


def step_slot(model: GPT2LMHeadModel, cache: SlotKVCache, length: int) -> Callable[[], None]:
    token = torch.randint(0, 50000, (ROWS, 1))
    lengths = torch.full((ROWS,), length)
    starts = torch.arange(ROWS) % (length // 4)  # rows of different ages
    where = torch.arange(length + 1)
    visible = (where[None, :] >= starts[:, None]) & (where[None, :] <= lengths[:, None])
    mask = torch.zeros(ROWS, 1, 1, length + 1).masked_fill(
        ~visible[:, None, None, :], torch.finfo(torch.float32).min
    )
    positions = (lengths - starts)[:, None]

    def run() -> None:
        cache.decode(lengths, length + 1)
        with torch.inference_mode():
            model(
                input_ids=token,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )

    return run


def timed(run: Callable[[], None]) -> float:
    with torch.inference_mode():
        started = time.thread_time()
        run()
        return time.thread_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--lengths", default="40,120", help="cache lengths, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    quantize_int8(model)
    print(
        f"GPT-2-small shape, int8, {ROWS} rows, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds\n"
    )
    print("| cache length | operation | re-padded DynamicCache ms | slot cache ms |")
    print("|---|---|---|---|")
    for length in [int(x) for x in args.lengths.split(",")]:
        batch = dynamic_cache(model, ROWS, length)
        new = dynamic_cache(model, 1, PROMPT)
        slots = slot_cache(model, ROWS, length)
        variants = {
            ("join", "dynamic"): join_dynamic(batch, new),
            ("join", "slot"): join_slot(slots, model),
            ("leave", "dynamic"): leave_dynamic(batch),
            ("leave", "slot"): leave_slot(slots, length),
            ("step", "dynamic"): step_dynamic(model, batch, length),
            ("step", "slot"): step_slot(model, slots, length),
        }
        for run in variants.values():
            timed(run)  # warm-up
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
        for _ in range(args.rounds):
            for key, run in variants.items():
                samples[key].append(timed(run))
        for operation in ("join", "leave", "step"):
            dynamic = statistics.median(samples[(operation, "dynamic")]) * 1000
            slot = statistics.median(samples[(operation, "slot")]) * 1000
            print(f"| {length} | {operation} | {dynamic:.2f} | {slot:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
