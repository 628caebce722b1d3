"""LoRA adapters served on a shared base, with rows of different adapters in one batch.

An adapter folder is PEFT's own (``adapter_config.json`` + ``adapter_model.safetensors``). Its
weights are read here directly rather than through ``PeftModel``: PEFT applies several
adapters in one batch (``adapter_names=``) by looping over the distinct adapters inside every
projection. Here every projection of the base is wrapped once, at load time, by
:class:`LoraLinear`, and a running batch keeps a copy of each row's ``A`` and ``B`` in per-row
buffers (:class:`RowAdapters`), written when the row joins and moved when rows leave, like
its KV cache. Each projection then adds every row's own delta with two batched matrix
products, whatever mix of adapters the rows have::

    delta = (x @ A_rows.transpose(1, 2)) @ B_rows      # A_rows: [rows, rank, in]

Measured (``bench/lora_batching.py --int8``: a 16-row decoding step of the GPT-2-small shape,
int8 base, rank 8 on attention and MLP, CPU time): 49 ms with no adapter; with 16 different
adapters 52 ms this way, 68 ms with the batch's adapters side by side behind a per-row
column mask (every row multiplies by every adapter's columns), 58 ms gathering each row's
``A`` and ``B`` again at every step, and 115 ms through PEFT. Each adapter's scaling is
folded into its ``B`` when it is loaded; adapters of lower rank are zero-padded to the
widest in the batch.

The base's own projections (fp32 pre-packed, int8 or half precision) run unchanged inside the
wrapper; the delta is computed in the model's floating-point dtype.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from bot.errors import TweetlikeError, first_line

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT saves ``base_model.model.<module path>.lora_A.weight`` (adapter name stripped).
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


class UnsupportedAdapterError(TweetlikeError):
    """An adapter folder this engine cannot apply faithfully (a LoRA variant, other targets)."""


class AdapterConfig(BaseModel):
    """The parts of PEFT's ``adapter_config.json`` that change what an adapter computes.

    Fields that only matter for training (dropout, initialisation, ``target_modules``: the
    weights present say which modules are adapted) are ignored; variants that compute
    something else than ``B @ A`` scaled are refused by :meth:`unsupported`.
    """

    model_config = ConfigDict(extra="ignore")

    peft_type: str = "LORA"
    r: int = Field(8, ge=1)
    lora_alpha: float = Field(8, gt=0)
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    bias: str = "none"
    use_dora: bool = False
    lora_bias: bool = False
    use_qalora: bool = False
    alora_invocation_tokens: list[int] | None = None
    modules_to_save: list[str] | None = None
    trainable_token_indices: list[int] | dict[str, list[int]] | None = None
    layer_replication: list[list[int]] | None = None
    target_parameters: list[str] | None = None
    use_bdlora: dict | None = None

    def unsupported(self) -> list[str]:
        """What this adapter uses that plain LoRA serving does not do, in words."""
        reasons = []
        if self.peft_type.upper() != "LORA":
            reasons.append(f"it is a {self.peft_type} adapter, not LoRA")
        checks = {
            "DoRA (use_dora)": self.use_dora,
            "trained biases (bias)": self.bias != "none",
            "LoRA biases (lora_bias)": self.lora_bias,
            "QALoRA (use_qalora)": self.use_qalora,
            "aLoRA (alora_invocation_tokens)": bool(self.alora_invocation_tokens),
            "whole modules saved (modules_to_save)": bool(self.modules_to_save),
            "trained token embeddings (trainable_token_indices)": bool(
                self.trainable_token_indices
            ),
            "layer replication": bool(self.layer_replication),
            "parameter targets (target_parameters)": bool(self.target_parameters),
            "block-diagonal LoRA (use_bdlora)": bool(self.use_bdlora),
        }
        reasons += [name for name, used in checks.items() if used]
        return reasons

    def scaling(self, module: str, rank: int) -> float:
        """PEFT's scaling for ``module``: ``alpha / r`` (rsLoRA: ``alpha / sqrt(r)``)."""
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_key(patterns: dict[str, object], module: str) -> str:
    """The key of ``patterns`` that matches ``module`` as PEFT matches it, or ``module``."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


@dataclass(frozen=True)
class LoraWeights:
    """One adapted projection: ``delta(x) = (x @ a.T) @ b``, scaling folded into ``b``."""

    a: torch.Tensor  # [rank, in_features]
    b: torch.Tensor  # [rank, out_features]

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(eq=False)
class LoraAdapter:
    """An adapter's weights, keyed by the index of the projection they adapt in the base."""

    layers: dict[int, LoraWeights]
    rank: int  # the largest rank over its layers: the width of its bank slot
    nbytes: int


@dataclass(frozen=True)
class Projection:
    """A projection of the base that adapters may target."""

    index: int
    in_features: int
    out_features: int


def load_adapter(
    folder: Path, projections: dict[str, Projection], device: torch.device, dtype: torch.dtype
) -> LoraAdapter:
    """Read and check a PEFT LoRA adapter folder against the base's projections.

    Raises :class:`UnsupportedAdapterError` for variants or targets this engine cannot apply,
    and ``ValueError`` for a folder that is unreadable or does not fit the base.
    """
    try:
        raw = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        config = AdapterConfig.model_validate(raw)
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{ADAPTER_CONFIG} is invalid: {first_line(exc)}") from None
    if reasons := config.unsupported():
        raise UnsupportedAdapterError("; ".join(reasons))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(folder / ADAPTER_WEIGHTS).items():
        match = _KEY.match(key)
        if match is None:
            raise UnsupportedAdapterError(f"it holds weights plain LoRA does not have ({key})")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor
    foreign = sorted(set(pairs) - set(projections))
    if foreign:
        raise UnsupportedAdapterError(
            f"it adapts modules that are not linear projections of this base ({foreign[0]})"
        )
    layers: dict[int, LoraWeights] = {}
    nbytes = 0
    for module, parts in pairs.items():
        if set(parts) != {"A", "B"}:
            raise ValueError(f"{module} has lora_{next(iter(parts))} without its pair")
        a, b = parts["A"], parts["B"]
        target = projections[module]
        rank = a.shape[0]
        if a.shape != (rank, target.in_features) or b.shape != (target.out_features, rank):
            raise ValueError(
                f"{module}: adapter shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit "
                f"the base's {target.in_features} -> {target.out_features} projection"
            )
        scale = config.scaling(module, rank)
        weights = LoraWeights(
            a=a.to(device=device, dtype=dtype).contiguous(),
            b=(b.t().float() * scale).to(device=device, dtype=dtype).contiguous(),
        )
        layers[target.index] = weights
        nbytes += weights.a.nbytes + weights.b.nbytes
    if not layers:
        raise ValueError(f"{ADAPTER_WEIGHTS} holds no LoRA weights")
    return LoraAdapter(layers=layers, rank=max(w.rank for w in layers.values()), nbytes=nbytes)


@dataclass
class _Route:
    adapters: RowAdapters
    rows: slice  # the rows of the batch this forward pass runs


@dataclass(eq=False)
class LoraRouter:
    """Tells the wrapped projections of one base whose adapters the running forward pass
    applies; ``None`` outside a forward pass with adapters."""

    route: _Route | None = None

    @contextmanager
    def using(self, adapters: RowAdapters, rows: slice) -> Iterator[None]:
        self.route = _Route(adapters, rows)
        try:
            yield
        finally:
            self.route = None


class LoraLinear(nn.Module):
    """A base projection plus, per row, the delta of that row's adapter."""

    def __init__(self, base: nn.Module, projection: Projection, router: LoraRouter) -> None:
        super().__init__()
        self.base = base
        self.projection = projection
        self.router = router

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        route = self.router.route
        if route is None:
            return out
        weights = route.adapters.weights(self.projection.index, route.rows)
        if weights is None:
            return out
        a, b = weights
        rows = a.shape[0]
        low = torch.bmm(x.reshape(rows, -1, x.shape[-1]), a.transpose(1, 2))
        return torch.baddbmm(out.reshape(rows, -1, out.shape[-1]), low, b).view_as(out)

    def extra_repr(self) -> str:
        p = self.projection
        return f"index={p.index}, in_features={p.in_features}, out_features={p.out_features}"


def wrap_projections(model: nn.Module) -> tuple[dict[str, Projection], LoraRouter]:
    """Wrap every linear projection of ``model`` except its output layer in
    :class:`LoraLinear`; returns them by module path, and the router they share.

    Call it before packing or quantizing: those replace the wrapped layers inside the
    wrappers, and the shapes are read here from the original ``Linear`` / ``Conv1D``.
    """
    router = LoraRouter()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found: list[tuple[str, nn.Module, str, nn.Module]] = []
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            if child is output or not isinstance(child, nn.Linear | Conv1D):
                continue
            found.append((f"{path}.{name}" if path else name, parent, name, child))
    projections: dict[str, Projection] = {}
    for index, (module, parent, name, child) in enumerate(found):
        if isinstance(child, Conv1D):  # weight stored as [in, out]
            in_features, out_features = child.weight.shape
        else:
            out_features, in_features = child.weight.shape
        projection = Projection(index, int(in_features), int(out_features))
        projections[module] = projection
        setattr(parent, name, LoraLinear(child, projection, router))
    return projections, router


@dataclass(eq=False)
class RowAdapters:
    """Each running row's adapter weights, in the row's slot of per-projection buffers
    ``[rows, width, in]`` (``A``) and ``[rows, width, out]`` (scaled ``B``), zero where the
    row's adapter has a lower rank or leaves the projection alone.

    Buffers are allocated for a projection when a row's adapter first adapts it, and grow
    (doubling) in rows and in width as the batch needs.
    """

    projections: list[Projection]  # by index
    device: torch.device
    dtype: torch.dtype
    width: int = 0
    _rows: int = 0
    _a: dict[int, torch.Tensor] = field(default_factory=dict)
    _b: dict[int, torch.Tensor] = field(default_factory=dict)

    def put(self, row: int, adapter: LoraAdapter) -> None:
        """Write ``adapter`` into slot ``row``."""
        self._reserve(row + 1, adapter.rank)
        for index in self._a:
            if index not in adapter.layers:
                self._a[index][row].zero_()
                self._b[index][row].zero_()
        for index, weights in adapter.layers.items():
            if index not in self._a:
                self._a[index], self._b[index] = self._zeros(index, self._rows, self.width)
            rank = weights.rank
            self._a[index][row, :rank].copy_(weights.a)
            self._a[index][row, rank:].zero_()
            self._b[index][row, :rank].copy_(weights.b)
            self._b[index][row, rank:].zero_()

    def move(self, source: int, target: int) -> None:
        """Copy slot ``source`` into slot ``target`` (a row moving into a freed slot)."""
        for buffers in (self._a, self._b):
            for buffer in buffers.values():
                buffer[target].copy_(buffer[source])

    def weights(self, index: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``rows``' A and B for projection ``index``, if any row's adapter adapts it."""
        a = self._a.get(index)
        if a is None:
            return None
        return a[rows], self._b[index][rows]

    def _reserve(self, rows: int, width: int) -> None:
        if rows <= self._rows and width <= self.width:
            return
        new_rows = self._rows
        while new_rows < rows:
            new_rows = max(1, 2 * new_rows)
        new_width = max(width, self.width)
        for index in list(self._a):
            a, b = self._zeros(index, new_rows, new_width)
            a[: self._rows, : self.width] = self._a[index]
            b[: self._rows, : self.width] = self._b[index]
            self._a[index], self._b[index] = a, b
        self._rows, self.width = new_rows, new_width

    def _zeros(self, index: int, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.projections[index]
        return (
            torch.zeros(rows, width, p.in_features, device=self.device, dtype=self.dtype),
            torch.zeros(rows, width, p.out_features, device=self.device, dtype=self.dtype),
        )
