"""int8 weights for serving on a CPU (``generation.quantize``).

Decoding a batch multiplies a few rows by every weight of the model, so its speed on a CPU is
set by how fast the weights stream through the cores: int8 weights are a quarter of fp32's.
The kernel is PyTorch's own dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
fbgemm / oneDNN behind the ``x86`` engine): weights int8 with one scale per matrix,
activations quantized per step with one scale per batch, products accumulated in int32.
GPT-2 keeps its projections in ``Conv1D`` (weight ``[in, out]``), which dynamic quantization
does not know, so each large one is first turned into the equivalent ``nn.Linear``.

Status in torch 2.13: ``torch.ao.quantization`` is marked deprecated (its successor is the
separate torchao package), but it still ships, and it is the maintained int8 CPU kernel that
pays here: in ``bench/int8.py`` a 16-row GPT-2-small step took 41 ms this way against 83 ms
fp32 pre-packed, and 200 to 220 ms with torchao 0.18's eager int8 configs. If a future torch
drops the module, :func:`can_quantize` says so and ``generation.quantize = "auto"`` serves in
float.

Choices, measured (``tests/test_quantize.py`` for quality): one scale per output channel
instead of per matrix took twice as long and lowered the KL divergence from fp32 by a fifth
to a third, for no better greedy agreement. The output layer is quantized too: left in fp32
(pre-packed) it cost 6 to 10 ms more per step (``bench/int8.py``) for a KL about ten times
lower (2e-5 instead of 2e-4 nats per token), a difference sampling at temperature 1 cannot
show.
Layers under ``MIN_QUANTIZED_WEIGHTS`` (all of ``tiny``'s) stay in float: there the
per-call cost of quantizing the activations outweighs the smaller weights.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from bot.generation.packing import MIN_PACKED_WEIGHTS

log = logging.getLogger(__name__)

MIN_QUANTIZED_WEIGHTS = MIN_PACKED_WEIGHTS
_ENGINES = ("x86", "fbgemm")


def can_quantize(device: torch.device, dtype: torch.dtype) -> bool:
    """int8 serving needs a CPU, fp32 activations and one of torch's x86 int8 engines."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return any(engine in torch.backends.quantized.supported_engines for engine in _ENGINES)


def quantize_int8(model: nn.Module, min_weights: int = MIN_QUANTIZED_WEIGHTS) -> int:
    """Replace the ``Linear`` / ``Conv1D`` layers of at least ``min_weights`` weights with
    int8 dynamically quantized ones, in place; returns how many were replaced."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    engine = next(e for e in _ENGINES if e in torch.backends.quantized.supported_engines)
    torch.backends.quantized.engine = engine
    chosen: dict[str, object] = {}
    for path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear | Conv1D) or child.weight.numel() < min_weights:
                continue
            if isinstance(child, Conv1D):
                setattr(parent, name, as_linear(child))
            chosen[f"{path}.{name}" if path else name] = default_dynamic_qconfig
    if not chosen:
        return 0
    with warnings.catch_warnings():
        # The deprecation notices of torch.ao.quantization, once per call: see the module
        # docstring for why it is still the kernel to use.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated")
        quantize_dynamic(model, chosen, dtype=torch.qint8, inplace=True)
    log.debug("quantized %d layers to int8 (%s engine)", len(chosen), engine)
    return len(chosen)


def as_linear(conv: Conv1D) -> nn.Linear:
    """The ``nn.Linear`` computing what ``conv`` computes (``Conv1D`` stores ``W.T``)."""
    in_features, out_features = conv.weight.shape
    linear = nn.Linear(in_features, out_features, device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    return linear
