"""Pre-packed fp32 linear layers for batched generation on CPU.

PyTorch runs an fp32 linear layer on the CPU as an MKL ``sgemm`` that repacks the weight on
every call. One decoding step of a batch multiplies a few rows (one per tweet) by every
weight of the model, so that repacking is paid for every weight at every step: on the
2-core development VM a 16-row step of GPT-2 small took 2.8 times as long as a 1-row step,
although the weights it has to read are the same. oneDNN can keep a weight in its own
blocked layout, packed once at load time; with it the 16-row step takes 1.7 times as long as
a 1-row step (105 -> 71 ms, one thread) and a 4-row step 45 ms instead of 71 ms. The cost:
a lone row is about 12% slower (37.5 -> 42 ms), and a tied output layer (``lm_head``
sharing the embedding matrix) gets its own packed copy.

Only fp32 on CPU is packed; elsewhere (GPUs, bf16 with AMX, a torch built without oneDNN)
models are left as they are.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

log = logging.getLogger(__name__)

# Batch size oneDNN picks the packed layout for (a hint: any number of rows works).
PACK_FOR_ROWS = 16
# Smaller weights stay in the CPU's caches, where MKL's repacking is cheap and oneDNN's
# per-call overhead (about 20 us) dominates: a 64-wide model got 40% slower per step.
MIN_PACKED_WEIGHTS = 1 << 18  # 1 MiB of fp32


class PackedLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` held in oneDNN's blocked layout (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``weight`` is ``(out_features, in_features)``, as in :class:`torch.nn.Linear`."""
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with torch.no_grad():
            self._packed = torch.ops.mkldnn._reorder_linear_weight(
                weight.detach().contiguous(), PACK_FOR_ROWS
            )
            self._bias = None if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if not rows.is_contiguous():
            rows = rows.contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self._packed, self._bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def pack_linear_layers(model: nn.Module) -> int:
    """Swap the large fp32 ``nn.Linear`` and GPT-2 ``Conv1D`` layers of an inference-only
    model for :class:`PackedLinear`; how many were swapped (0, model unchanged, if packing
    fails)."""
    swaps: list[tuple[nn.Module, str, PackedLinear]] = []
    try:
        for parent in model.modules():
            for name, child in parent.named_children():
                if not isinstance(child, nn.Linear | Conv1D):
                    continue
                weight = child.weight
                if weight.dtype != torch.float32 or weight.numel() < MIN_PACKED_WEIGHTS:
                    continue
                if isinstance(child, nn.Linear):
                    swaps.append((parent, name, PackedLinear(weight, child.bias)))
                else:
                    # Conv1D keeps its weight as (in_features, out_features).
                    swaps.append((parent, name, PackedLinear(weight.t(), child.bias)))
    except RuntimeError as exc:
        log.warning("could not pre-pack linear layers, serving unpacked: %s", exc)
        return 0
    for parent, name, packed in swaps:
        setattr(parent, name, packed)
    return len(swaps)
