"""Sampling settings, and choosing each row's next token.

Defaults come from the model's own ``generation_config.json`` (huggingtweets: ``do_sample``,
``top_p`` 0.95, ``temperature`` 1.0, prompt prefixed with ``<|endoftext|>``, cut at the first
newline); a request may override the count and temperature within bounds.

Tokens are chosen here rather than by ``model.generate`` so that rows with different
settings (temperature, an adapter's own ``generation_config.json``) share a batch, join and
leave it at any step (:mod:`bot.generation.batch`), and each row draws from its own random
numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.errors import first_line
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
            raise ValueError(f"{path} is invalid: {first_line(exc)}") from None


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
class StopTokens:
    """Token ids that end a tweet (EOS, and newlines when tweets are cut there)."""

    ids: frozenset[int]


@dataclass(frozen=True)
class RowSampling:
    """How one row samples; rows with different settings share a batch."""

    do_sample: bool
    temperature: float
    top_k: int  # 0: no top-k cut
    top_p: float
    min_new_tokens: int
    max_new_tokens: int
    stops: StopTokens


@dataclass(frozen=True)
class SamplingTensors:
    """Per-row settings of a batch, as tensors on its device (rebuilt when rows change)."""

    greedy: torch.Tensor  # [rows] bool
    temperature: torch.Tensor  # [rows]
    top_k: torch.Tensor  # [rows], vocabulary size where there is no cut
    top_p: torch.Tensor  # [rows]
    widest_k: int  # candidates kept for every row before the per-row cuts
    uniforms: torch.Tensor  # [rows, steps]: each row's own random numbers, one per step

    @classmethod
    def build(
        cls, rows: list[RowSampling], uniforms: torch.Tensor, vocab: int, device: torch.device
    ) -> SamplingTensors:
        top_k = [s.top_k if 0 < s.top_k < vocab else vocab for s in rows]
        return cls(
            greedy=torch.tensor([not s.do_sample for s in rows], device=device),
            temperature=torch.tensor([s.temperature for s in rows], device=device),
            top_k=torch.tensor(top_k, device=device),
            top_p=torch.tensor([s.top_p for s in rows], device=device),
            widest_k=max(top_k),
            uniforms=uniforms.to(device),
        )


def choose_tokens(
    logits: torch.Tensor, params: SamplingTensors, steps: torch.Tensor
) -> torch.Tensor:
    """One token per row: greedy, or temperature + top-k + top-p (nucleus) sampling.

    Sampling inverts each row's cumulative distribution at that row's own uniform number for
    this step (``params.uniforms[row, step]``), which draws from the same distribution as
    ``torch.multinomial`` but makes a row's token depend on nothing but its own logits and
    its own random numbers, never on the other rows of the batch.
    """
    # Dividing by a positive temperature keeps the order, so the candidates are chosen on
    # the raw logits and only they are scaled; the first is the greedy choice.
    values, indices = logits.topk(params.widest_k, dim=-1)
    greedy = indices[:, 0]
    values = values / params.temperature[:, None]
    rank = torch.arange(params.widest_k, device=logits.device)
    values = values.masked_fill(rank >= params.top_k[:, None], float("-inf"))
    probs = values.softmax(-1)
    before = probs.cumsum(-1) - probs
    probs = probs.masked_fill(before > params.top_p[:, None], 0.0)
    cumulative = probs.cumsum(-1)
    u = params.uniforms.gather(1, steps[:, None]) * cumulative[:, -1:]
    picked = torch.searchsorted(cumulative, u, right=True).clamp(max=params.widest_k - 1)
    sampled = indices.gather(-1, picked).squeeze(-1)
    return torch.where(params.greedy, greedy, sampled)
