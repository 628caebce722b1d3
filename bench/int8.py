"""int8 serving on a CPU: one decoding step of the GPT-2-small shape in each precision the
engine can serve it in, at 1, 4 and 16 rows.

- ``fp32``: plain ``Conv1D`` / ``Linear`` layers (MKL ``sgemm``);
- ``fp32 packed``: weights pre-packed for oneDNN (``generation.quantize = "none"``);
- ``int8``: ``bot.generation.quantize`` (``generation.quantize = "auto"`` on a CPU), output
  layer included;
- ``int8, fp32 head``: the same with the output layer left in fp32, pre-packed (the
  alternative the engine did not take);
- ``torchao ...``: torchao's eager int8 configs (weight-only, and dynamic activations), the
  successor torch points to; only when torchao is installed (``pip install torchao``, for
  this benchmark only: it is no dependency of tweetlike).

Random weights (``GPT2Config()``, no download), a 40-token KV cache, forward pass only.
Rounds interleave the variants; medians of the calling thread's CPU time (one torch thread
does all the work, so other processes on a shared machine do not blur the comparison).

    .venv/bin/python bench/int8.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers import logging as hf_logging
from transformers.pytorch_utils import Conv1D

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.generation.packing import pack_linear_layers
from bot.generation.quantize import as_linear, quantize_int8

CONTEXT = 40
ROWS = (1, 4, 16)


def variants(base: GPT2LMHeadModel) -> dict[str, nn.Module]:
    packed = copy.deepcopy(base)
    pack_linear_layers(packed)
    int8 = copy.deepcopy(base)
    quantize_int8(int8)
    fp32_head = copy.deepcopy(base)
    head, fp32_head.lm_head = fp32_head.lm_head, nn.Identity()
    quantize_int8(fp32_head)
    fp32_head.lm_head = head
    pack_linear_layers(fp32_head)  # only the output layer is left to pack
    models = {"fp32": base, "fp32 packed": packed, "int8": int8, "int8, fp32 head": fp32_head}
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        return models
    for name, config in (
        ("torchao weight-only", Int8WeightOnlyConfig()),
        ("torchao dynamic", Int8DynamicActivationInt8WeightConfig()),
    ):
        model = copy.deepcopy(base)
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, Conv1D):
                    setattr(parent, child_name, as_linear(child))
        quantize_(model, config)
        models[name] = model
    return models


def step_timer(model: nn.Module, rows: int) -> Callable[[], float]:
    prompt = torch.randint(0, 50000, (rows, CONTEXT))
    token = torch.randint(0, 50000, (rows, 1))
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)

    def run() -> float:
        with torch.inference_mode():
            started = time.thread_time()
            model(input_ids=token, past_key_values=cache, use_cache=True)
            seconds = time.thread_time() - started
            cache.crop(-1)
            return seconds

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    models = variants(GPT2LMHeadModel(GPT2Config()).eval())
    print(
        f"GPT-2-small shape, {CONTEXT}-token cache, torch {torch.__version__}, "
        f"{torch.backends.quantized.engine} int8 engine, 1 thread, median of {args.rounds} "
        "interleaved rounds (CPU time)\n"
    )
    print("| rows | " + " | ".join(f"{name} ms" for name in models) + " |")
    print("|---|" + "---|" * len(models))
    for rows in ROWS:
        timers = {name: step_timer(model, rows) for name, model in models.items()}
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                samples[name].append(timer())
        cells = [f"{statistics.median(samples[name]) * 1000:.1f}" for name in models]
        print(f"| {rows} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
