"""Rows of different LoRA adapters in one decoding step: PEFT's mixed batches against the
engine's adapter bank (and a gather-per-row variant), at 1, 4 and 16 distinct adapters.

One decoding step of 16 rows on the GPT-2-small shape (``GPT2Config()``, random weights, no
download) with a 40-token KV cache; adapters of rank 8 on attention and MLP
(``c_attn``, ``c_proj``, ``c_fc``), random. Variants, all in fp32 on unpacked weights so the
base costs the same everywhere:

- ``base``: no adapter at all (the floor);
- ``peft``: ``PeftModel`` with every adapter loaded, ``adapter_names=`` one per row (PEFT
  loops over the distinct adapters inside each projection);
- ``bank``: ``bot.generation.lora`` (what the engine runs): the batch's adapters side by side,
  ``((x @ A_bank.T) * row_mask) @ B_bank`` per projection;
- ``gather``: each row's ``A`` and ``B`` gathered per step, then two batched matmuls
  (``bmm``) per projection.

Rounds interleave the variants; the table shows each variant's median step time.

    .venv/bin/python bench/lora_batching.py
    .venv/bin/python bench/lora_batching.py --rounds 5    # quicker
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
    AdapterBank,
    LoraAdapter,
    LoraLinear,
    LoraRouter,
    Projection,
    load_adapter,
    wrap_projections,
)

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


class GatherLoraLinear(nn.Module):
    """The gather-per-row alternative: each row's own A and B, stacked every step."""

    def __init__(self, wrapped: LoraLinear, rows: list[LoraAdapter]) -> None:
        super().__init__()
        self.base = wrapped.base
        index = wrapped.projection.index
        self.a = torch.stack([adapter.layers[index].a for adapter in rows])  # [rows, r, in]
        self.b = torch.stack([adapter.layers[index].b for adapter in rows])  # [rows, r, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The gather: what a per-row route pays every step for its batch's current rows.
        a, b = self.a.clone(), self.b.clone()
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
            started = time.perf_counter()
            model(input_ids=token, past_key_values=cache, use_cache=True, **forward)
            seconds = time.perf_counter() - started
            cache.crop(-1)  # back to the same length for the next round
            return seconds

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    print(
        f"GPT-2-small shape, {ROWS} rows per step, {CONTEXT}-token cache, rank {RANK} on "
        f"{', '.join(TARGETS)}, fp32, torch {torch.__version__}, {torch.get_num_threads()} "
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
        adapters = [
            load_adapter(path, projections, torch.device("cpu"), torch.float32) for path in paths
        ]
        timers: dict[str, Callable[[], float]] = {}
        with peft.disable_adapter():
            timers["base"] = step_timer(peft)
        for distinct in DISTINCT:
            names = [f"a{i % distinct}" for i in range(ROWS)]
            timers[f"peft {distinct}"] = step_timer(peft, adapter_names=names)
            timers[f"bank {distinct}"] = bank_timer(served, router, projections, adapters, distinct)
            timers[f"gather {distinct}"] = gather_timer(served, adapters, distinct)
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                samples[name].append(timer())
    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    print("| adapters in the batch | PEFT adapter_names ms | bank ms | gather ms |")
    print("|---|---|---|---|")
    print(f"| none (bare base) | {median['base']:.1f} | {median['base']:.1f} | - |")
    for distinct in DISTINCT:
        print(
            f"| {distinct} | {median[f'peft {distinct}']:.1f} | {median[f'bank {distinct}']:.1f} "
            f"| {median[f'gather {distinct}']:.1f} |"
        )
    best = min(("bank", "gather", "peft"), key=lambda v: median[f"{v} {max(DISTINCT)}"])
    print(f"\nfastest at {max(DISTINCT)} distinct adapters: {best}")
    return 0


def bank_timer(
    model: nn.Module,
    router: LoraRouter,
    projections: dict[str, Projection],
    adapters: list[LoraAdapter],
    distinct: int,
) -> Callable[[], float]:
    """The engine's way: the batch's adapters in a bank, one column mask per row."""
    ordered = sorted(projections.values(), key=lambda p: p.index)
    bank = AdapterBank(ordered, ROWS, torch.device("cpu"), torch.float32)
    slots: list[int] = []
    for i in range(ROWS):
        slots.append(bank.slot_of(adapters[i % distinct], set(slots)))
    mask = bank.mask(slots)
    with router.using(bank, mask):
        timer = step_timer(model)

    def run() -> float:
        with router.using(bank, mask):
            return timer()

    return run


def gather_timer(
    model: nn.Module, adapters: list[LoraAdapter], distinct: int
) -> Callable[[], float]:
    rows = [adapters[i % distinct] for i in range(ROWS)]
    swaps = [
        (parent, name, child, GatherLoraLinear(child, rows))
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
