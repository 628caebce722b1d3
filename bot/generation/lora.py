"""LoRA adapters served on a shared base, with rows of different adapters in one batch.

An adapter folder is PEFT's own (``adapter_config.json`` + ``adapter_model.safetensors``). Its
weights are read here directly rather than through ``PeftModel``: PEFT applies several
adapters in one batch (``adapter_names=``) by looping over the adapters inside every
projection, which made a 16-row decoding step of the GPT-2-small shape about 2.3 times as
slow with 16 different adapters as with one (``bench/lora_batching.py``). Here every
projection of the base is wrapped once, at load time, by :class:`LoraLinear`, and the
adapters of a running batch sit side by side in an :class:`AdapterBank`: each adapter has a
slot of ``rank`` columns, so the delta of every row, whatever its adapter, is two matrix
products per projection::

    delta = ((x @ A_bank.T) * row_mask) @ B_bank      # A_bank: [slots*rank, in]

where ``row_mask`` keeps, for each row, only the columns of its own adapter's slot (and each
adapter's scaling is folded into its ``B`` when it is copied into the bank). The extra work
is ``rows * slots * rank * (in + out)`` multiply-adds per projection, a few percent of the
base's at 16 adapters of rank 8, and nothing is gathered or copied per step.

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
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from bot.errors import TweetlikeError

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
        raise ValueError(f"{ADAPTER_CONFIG} is invalid: {str(exc).splitlines()[0]}") from None
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
    bank: AdapterBank
    mask: torch.Tensor  # [rows, 1, columns]: 1 on the columns of each row's adapter


@dataclass(eq=False)
class LoraRouter:
    """Tells the wrapped projections of one base which bank and rows the running forward
    pass has; ``None`` outside a forward pass with adapters."""

    route: _Route | None = None

    @contextmanager
    def using(self, bank: AdapterBank, mask: torch.Tensor) -> Iterator[None]:
        self.route = _Route(bank, mask)
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
        weights = route.bank.columns(self.projection.index, route.mask.shape[-1])
        if weights is None:
            return out
        a, b = weights
        low = F.linear(x, a) * route.mask
        width = self.projection.out_features
        return torch.addmm(out.reshape(-1, width), low.reshape(-1, a.shape[0]), b).view_as(out)

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
class AdapterBank:
    """The adapters of one running batch, side by side: slot ``s`` holds its adapter's
    ``A`` rows and scaled ``B`` rows in columns ``[s * width, (s + 1) * width)`` of every
    projection it adapts (zeros elsewhere, so narrower adapters need no special case).

    Slots are allocated as the batch meets more adapters (up to ``capacity``, its row
    count), reused least-recently-placed first, and an adapter that comes back while its
    slot still holds it is not copied again.
    """

    projections: list[Projection]
    capacity: int
    device: torch.device
    dtype: torch.dtype
    width: int = 0
    _a: dict[int, torch.Tensor] = field(default_factory=dict)
    _b: dict[int, torch.Tensor] = field(default_factory=dict)
    _slots: list[LoraAdapter | None] = field(default_factory=list)
    _placed_at: list[int] = field(default_factory=list)
    _clock: int = 0

    def slot_of(self, adapter: LoraAdapter, in_use: set[int]) -> int:
        """The slot holding ``adapter``, copying it into a slot not in ``in_use`` if needed."""
        for slot, held in enumerate(self._slots):
            if held is adapter:
                return slot
        if adapter.rank > self.width:
            self._relayout(len(self._slots), adapter.rank)
        free = [s for s in range(len(self._slots)) if s not in in_use]
        if not free or all(self._slots[s] is not None for s in free):
            if len(self._slots) < self.capacity:
                grown = min(self.capacity, max(1, 2 * len(self._slots)))
                free = list(range(len(self._slots), grown))
                self._relayout(grown, self.width)
            elif not free:
                raise RuntimeError("adapter bank is full")  # batches size it to their rows
        slot = min(free, key=lambda s: (self._slots[s] is not None, self._placed_at[s]))
        self._copy_in(slot, adapter)
        return slot

    def columns(self, index: int, used: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first ``used`` columns of projection ``index``, if any adapter here adapts it."""
        a = self._a.get(index)
        if a is None:
            return None
        return a[:used], self._b[index][:used]

    def mask(self, slots: list[int]) -> torch.Tensor:
        """``[rows, 1, columns]``: 1 on the columns of each row's slot, 0 elsewhere."""
        used = (max(slots) + 1) * self.width
        mask = torch.zeros(len(slots), 1, used, dtype=self.dtype)
        for row, slot in enumerate(slots):
            mask[row, 0, slot * self.width : (slot + 1) * self.width] = 1
        return mask.to(self.device)

    def _copy_in(self, slot: int, adapter: LoraAdapter) -> None:
        start, stop = slot * self.width, (slot + 1) * self.width
        for index in self._a:
            self._a[index][start:stop].zero_()
            self._b[index][start:stop].zero_()
        for index, weights in adapter.layers.items():
            if index not in self._a:
                self._a[index], self._b[index] = self._zeros(index, len(self._slots))
            self._a[index][start : start + weights.rank].copy_(weights.a)
            self._b[index][start : start + weights.rank].copy_(weights.b)
        self._slots[slot] = adapter
        self._clock += 1
        self._placed_at[slot] = self._clock

    def _zeros(self, index: int, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.projections[index]
        rows = slots * self.width
        return (
            torch.zeros(rows, p.in_features, device=self.device, dtype=self.dtype),
            torch.zeros(rows, p.out_features, device=self.device, dtype=self.dtype),
        )

    def _relayout(self, slots: int, width: int) -> None:
        """Grow to ``slots`` slots of ``width`` columns; held adapters keep their slots."""
        held = self._slots + [None] * (slots - len(self._slots))
        placed = self._placed_at + [0] * (slots - len(self._placed_at))
        same_width = width == self.width
        old_a, old_b = self._a, self._b
        self.width = width
        self._slots, self._placed_at = held, placed
        self._a, self._b = {}, {}
        for index in old_a:
            self._a[index], self._b[index] = self._zeros(index, slots)
            if same_width:
                self._a[index][: len(old_a[index])].copy_(old_a[index])
                self._b[index][: len(old_b[index])].copy_(old_b[index])
        if not same_width:
            for slot, adapter in enumerate(held):
                if adapter is not None:
                    self._copy_in(slot, adapter)
                    self._placed_at[slot] = placed[slot]
