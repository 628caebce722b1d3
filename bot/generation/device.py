"""Which torch device and dtype the engine serves on (``generation.device``, ``.dtype``).

``auto`` prefers CUDA, then Apple MPS, then CPU. Half precision halves memory and roughly
doubles throughput on GPUs; CPUs have no fast fp16 path, so they stay in fp32.
"""

from __future__ import annotations

import torch

from bot.errors import TweetlikeError


class DeviceUnavailableError(TweetlikeError):
    """The configured ``generation.device`` is not present on this machine."""


def resolve_device(spec: str) -> torch.device:
    """Turn a ``generation.device`` value into a present device, or explain why not."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"generation.device = '{spec}' but no CUDA GPU is available; use 'auto' or 'cpu'"
            )
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"generation.device = '{spec}' but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            f"generation.device = '{spec}' but MPS is not available; use 'auto' or 'cpu'"
        )
    return device


def dtype_for(device: torch.device, choice: str = "auto") -> torch.dtype:
    """``generation.dtype``; ``auto`` is bf16 where the GPU supports it (no fp16 overflow
    risk), else fp16 on GPU, and fp32 on CPU (bf16 is only faster on CPUs with AMX)."""
    if choice != "auto":
        return getattr(torch, choice)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def use_int8(choice: str, device: torch.device, dtype: torch.dtype) -> bool:
    """``generation.quantize``: ``auto`` is int8 wherever it runs (a CPU serving fp32: a
    decoding step 2 to 3 times as fast, within the quality check; README, Performance);
    ``int8`` insists, and says why when it cannot."""
    from bot.generation.quantize import can_quantize

    if choice == "none":
        return False
    supported = can_quantize(device, dtype)
    if choice == "int8" and not supported:
        raise DeviceUnavailableError(
            f"generation.quantize = 'int8' needs a CPU serving float32 weights (device is "
            f"{device}, dtype {str(dtype).removeprefix('torch.')}) and torch's x86 int8 "
            "engine; use 'auto' or 'none'"
        )
    return supported
