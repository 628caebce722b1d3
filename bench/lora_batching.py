"""Rows of different LoRA adapters in one decoding step: PEFT's mixed batches against the
engine's per-row adapter buffers and two other batched routes, at 1, 4 and 16 distinct
adapters.

One decoding step of 16 rows on the GPT-2-small shape (``GPT2Config()``, random weights, no
download) with a 40-token KV cache; adapters of rank 8 on attention and MLP
(``c_attn``, ``c_proj``, ``c_fc``), random. The base is fp32 (unpacked, the same for every
variant) or, with ``--int8``, int8 as the engine serves it on a CPU. Variants:

- ``base``: no adapter at all (the floor);
- ``peft``: ``PeftModel`` with every adapter loaded, ``adapter_names=`` one per row (PEFT
  loops over the distinct adapters inside each projection);
- ``bank``: the batch's distinct adapters side by side,
  ``((x @ A_bank.T) * row_mask) @ B_bank`` per projection (no per-row copies, but every row
  multiplies by every adapter's columns);
- ``gather``: each row's ``A`` and ``B`` gathered at every step, then two batched matmuls
  (``bmm``) per projection;
- ``per-row buffers``: ``bot.generation.lora.RowAdapters``, what the engine runs: the same
  ``bmm`` on per-row copies of ``A`` and ``B`` kept from step to step (written when a row
  joins, moved when rows leave).

Rounds interleave the variants; the table shows each variant's median step time, counted as
CPU time of the calling thread: with one torch thread (the default) that thread does all
the work, and time spent waiting for a core that another process holds is not counted, so
a busy shared machine does not blur the comparison.

    .venv/bin/python bench/lora_batching.py
    .venv/bin/python bench/lora_batching.py --int8       # the base as the engine serves it
    .venv/bin/python bench/lora_batching.py --rounds 5   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.generation.lora import (
    LoraAdapter,
    LoraLinear,
    LoraRouter,
    Projection,
    RowAdapters,
    load_adapter,
    wrap_projections,
)
from bot.generation.quantize import quantize_int8

ROWS = 16
CONTEXT = 40
RANK = 8
TARGETS = ["c_attn", "c_proj", "c_fc"]
DISTINCT = (1, 4, 16)


def make_adapters(base: GPT2LMHeadModel, count: int, folder: Path) -> list[Path]:
    """``count`` random rank-8 PEFT adapters saved under ``folder``."""
    from peft import LoraConfig, get_peft_model

    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        config = LoraConfig(r=RANK, lora_alpha=16, target_modules=TARGETS, fan_in_fan_out=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
        path = folder / f"a{i}"
        peft.save_pretrained(path)
        base = peft.unload()  # the bare base again, for the next adapter
        paths.append(path)
    return paths


class BankLoraLinear(nn.Module):
    """The bank route: the distinct adapters' columns side by side, a column mask per row."""

    def __init__(self, wrapped: LoraLinear, rows: list[LoraAdapter]) -> None:
        super().__init__()
        self.base = wrapped.base
        index = wrapped.projection.index
        distinct = list(dict.fromkeys(rows))
        self.a = torch.cat([adapter.layers[index].a for adapter in distinct])  # [k, in]
        self.b = torch.cat([adapter.layers[index].b for adapter in distinct])  # [k, out]
        self.mask = torch.zeros(len(rows), 1, self.a.shape[0])
        for row, adapter in enumerate(rows):
            start = distinct.index(adapter) * RANK
            self.mask[row, 0, start : start + RANK] = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        low = (x @ self.a.t()) * self.mask
        width = out.shape[-1]
        return torch.addmm(out.reshape(-1, width), low.reshape(-1, low.shape[-1]), self.b).view_as(
            out
        )


class GatherLoraLinear(nn.Module):
    """The gather route: each row's own A and B stacked again at every step, two ``bmm``."""

    def __init__(self, wrapped: LoraLinear, rows: list[LoraAdapter]) -> None:
        super().__init__()
        self.base = wrapped.base
        index = wrapped.projection.index
        self.a = [adapter.layers[index].a for adapter in rows]  # each [r, in]
        self.b = [adapter.layers[index].b for adapter in rows]  # each [r, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.stack(self.a), torch.stack(self.b)
        return self.base(x) + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b)


def step_timer(model: nn.Module, **forward: object) -> Callable[[], float]:
    """A function that runs one 16-row decoding step and returns its seconds."""
    torch.manual_seed(0)
    prompt = torch.randint(0, 50000, (ROWS, CONTEXT))
    token = torch.randint(0, 50000, (ROWS, 1))
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=prompt, past_key_values=cache, use_cache=True, **forward)

    def run() -> float:
        with torch.inference_mode():
            started = time.thread_time()
            model(input_ids=token, past_key_values=cache, use_cache=True, **forward)
            seconds = time.thread_time() - started
            cache.crop(-1)  # back to the same length for the next round
            return seconds

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--int8", action="store_true", help="base weights in int8, as the engine serves on CPU"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    print(
        f"GPT-2-small shape, {ROWS} rows per step, {CONTEXT}-token cache, rank {RANK} on "
        f"{', '.join(TARGETS)}, base {'int8' if args.int8 else 'fp32'}, adapters fp32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, median of {args.rounds} interleaved rounds\n"
    )
    from peft import PeftModel

    base = GPT2LMHeadModel(GPT2Config()).eval()
    with tempfile.TemporaryDirectory(prefix="tweetlike-lora-bench-") as tmp:
        paths = make_adapters(base, max(DISTINCT), Path(tmp))
        served = GPT2LMHeadModel(GPT2Config()).eval()
        served.load_state_dict(base.state_dict())
        projections, router = wrap_projections(served)
        peft = PeftModel.from_pretrained(base, paths[0], adapter_name="a0")
        for i, path in enumerate(paths[1:], start=1):
            peft.load_adapter(path, adapter_name=f"a{i}")
        peft.eval()
        if args.int8:
            quantize_int8(served)
            quantize_int8(peft.base_model.model)  # PEFT's own small LoRA layers stay fp32
        adapters = [
            load_adapter(path, projections, torch.device("cpu"), torch.float32) for path in paths
        ]
        timers: dict[str, Callable[[], float]] = {}
        with peft.disable_adapter():
            timers["base"] = step_timer(peft)
        for distinct in DISTINCT:
            names = [f"a{i % distinct}" for i in range(ROWS)]
            timers[f"peft {distinct}"] = step_timer(peft, adapter_names=names)
            timers[f"bank {distinct}"] = swapped_timer(served, BankLoraLinear, adapters, distinct)
            timers[f"gather {distinct}"] = swapped_timer(
                served, GatherLoraLinear, adapters, distinct
            )
            timers[f"rows {distinct}"] = rows_timer(served, router, projections, adapters, distinct)
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                samples[name].append(timer())
    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    print(
        "| adapters in the batch | PEFT adapter_names ms | bank ms | gather per step ms "
        "| per-row buffers (engine) ms |"
    )
    print("|---|---|---|---|---|")
    print(f"| none (bare base) | {median['base']:.1f} | {median['base']:.1f} | - | - |")
    for distinct in DISTINCT:
        print(
            f"| {distinct} | {median[f'peft {distinct}']:.1f} | {median[f'bank {distinct}']:.1f} "
            f"| {median[f'gather {distinct}']:.1f} | {median[f'rows {distinct}']:.1f} |"
        )
    best = min(("bank", "gather", "rows", "peft"), key=lambda v: median[f"{v} {max(DISTINCT)}"])
    print(f"\nfastest at {max(DISTINCT)} distinct adapters: {best}")
    return 0


def rows_timer(
    model: nn.Module,
    router: LoraRouter,
    projections: dict[str, Projection],
    adapters: list[LoraAdapter],
    distinct: int,
) -> Callable[[], float]:
    """The engine's route: per-row buffers written once, as rows join a batch."""
    ordered = sorted(projections.values(), key=lambda p: p.index)
    buffers = RowAdapters(ordered, torch.device("cpu"), torch.float32)
    for row in range(ROWS):
        buffers.put(row, adapters[row % distinct])
    with router.using(buffers, slice(0, ROWS)):
        timer = step_timer(model)

    def run() -> float:
        with router.using(buffers, slice(0, ROWS)):
            return timer()

    return run


def swapped_timer(
    model: nn.Module, route: type[nn.Module], adapters: list[LoraAdapter], distinct: int
) -> Callable[[], float]:
    """A route of this benchmark's own, swapped in for the engine's wrappers while it runs."""
    rows = [adapters[i % distinct] for i in range(ROWS)]
    swaps = [
        (parent, name, child, route(child, rows))
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoraLinear)
    ]
    with _swapped(swaps):
        timer = step_timer(model)

    def run() -> float:
        with _swapped(swaps):
            return timer()

    return run


@contextmanager
def _swapped(swaps: list[tuple[nn.Module, str, nn.Module, nn.Module]]) -> Iterator[None]:
    for parent, name, _, replacement in swaps:
        setattr(parent, name, replacement)
    try:
        yield
    finally:
        for parent, name, original, _ in swaps:
            setattr(parent, name, original)


if __name__ == "__main__":
    sys.exit(main())
