"""Sampling settings and the batched sampling loop.

Defaults come from the model's own ``generation_config.json`` (huggingtweets: ``do_sample``,
``top_p`` 0.95, ``temperature`` 1.0, prompt prefixed with ``<|endoftext|>``, cut at the first
newline); a request may override the count and temperature within bounds.

The loop is written out rather than calling ``model.generate`` so that a whole batch shares
one ``torch.Generator`` (a seeded request gets its own batch and so its own stream, whatever
else is queued), rows stop as soon as they end their tweet, and the per-token overhead stays
small enough for batching to pay off on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import DynamicCache, PreTrainedModel

from bot.rules import RequestRules


class GenerationDefaults(BaseModel):
    """The parts of ``generation_config.json`` the engine honours (same meaning as HF)."""

    model_config = ConfigDict(extra="ignore")

    do_sample: bool = True
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(50, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    prompt_prefix: str = ""
    stop_at_newline: bool = False
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @classmethod
    def read(cls, folder: Path) -> GenerationDefaults:
        """Defaults of the model in ``folder``; HF's own defaults when the file is absent."""
        path = folder / "generation_config.json"
        if not path.is_file():
            return cls()
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is invalid: {str(exc).splitlines()[0]}") from None


@dataclass(frozen=True)
class RequestOptions:
    """A request's validated overrides; ``temperature`` None means the model's default."""

    prompt: str
    count: int
    temperature: float | None
    seed: int | None


def validate_options(
    rules: RequestRules, prompt: str, count: int, temperature: float | None, seed: int | None
) -> RequestOptions:
    """Check what a user may set against ``rules``; the message says what is allowed."""
    return RequestOptions(
        prompt=rules.prompt(prompt),
        count=rules.count(count),
        temperature=rules.temperature(temperature),
        seed=rules.seed(seed),
    )


@dataclass(frozen=True)
class SamplingPlan:
    """Everything one batched sampling call needs besides the prompts."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int
    min_new_tokens: int
    stop_ids: torch.Tensor  # tokens that end a tweet (EOS, and newlines when cut there)
    pad_id: int


def sample_batch(
    model: PreTrainedModel,
    prompts: list[list[int]],
    plan: SamplingPlan,
    generator: torch.Generator,
) -> list[list[int]]:
    """New token ids per prompt row, without the stop token; rows are left-padded together."""
    device = plan.stop_ids.device
    width = max(len(row) for row in prompts)
    input_ids = torch.tensor(
        [[plan.pad_id] * (width - len(row)) + row for row in prompts], device=device
    )
    mask = torch.tensor(
        [[0] * (width - len(row)) + [1] * len(row) for row in prompts], device=device
    )
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = len(prompts)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.full((rows,), plan.max_new_tokens, dtype=torch.long, device=device)
    cache = DynamicCache()
    steps: list[torch.Tensor] = []
    with torch.inference_mode():
        logits = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        for step in range(plan.max_new_tokens):
            if step < plan.min_new_tokens:
                logits[:, plan.stop_ids] = float("-inf")
            token = _choose(logits.float(), plan, generator)
            token = torch.where(finished, plan.pad_id, token)
            steps.append(token)
            stopped = torch.isin(token, plan.stop_ids) & ~finished
            lengths = torch.where(stopped, step, lengths)
            finished |= stopped
            if step + 1 == plan.max_new_tokens or bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], 1)
            positions = positions[:, -1:] + 1
            logits = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            ).logits[:, -1, :]
    tokens = torch.stack(steps, dim=1).tolist()
    return [row[:length] for row, length in zip(tokens, lengths.tolist(), strict=True)]


def _choose(logits: torch.Tensor, plan: SamplingPlan, generator: torch.Generator) -> torch.Tensor:
    """One token per row: greedy, or temperature + top-k + top-p (nucleus) sampling."""
    if not plan.do_sample:
        return logits.argmax(-1)
    logits = logits / plan.temperature
    vocab = logits.shape[-1]
    if 0 < plan.top_k < vocab:
        values, indices = logits.topk(plan.top_k, dim=-1)
    else:
        values, indices = logits.sort(dim=-1, descending=True)
    probs = values.softmax(-1)
    if plan.top_p < 1.0:
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before > plan.top_p, 0.0)
    picked = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(-1, picked).squeeze(-1)
