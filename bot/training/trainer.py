"""Fine-tuning: load the base model, run a plain PyTorch loop, measure validation loss.

The loop is the run_clm.py / nanoGPT recipe written out (AdamW, cosine schedule, gradient
clipping at 1.0, mixed precision on CUDA) rather than ``transformers.Trainer``, which would
pull in ``accelerate`` and its own logging for a loop this small. Everything random is seeded,
so a CPU run is reproducible bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from bot.base_models import TINY_NAME, check_base_model
from bot.errors import TrainingError
from bot.training.dataset import EOS
from bot.training.hub import load_pretrained
from bot.training.recipes import Hyperparameters
from bot.training.tiny import build_tiny_model, build_tiny_tokenizer

# Below this many parameters CPU matmuls are too small for threads to pay off, and on a
# busy machine extra threads only contend (measured 40 ms/step on 1 thread, 300+ on 2).
SMALL_MODEL_PARAMETERS = 5_000_000
MAX_GRAD_NORM = 1.0

StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainResult:
    steps: int
    train_loss: float | None
    eval_loss: float | None
    device: str
    precision: str
    seconds: float


def load_base_model(
    base_model: str, tweets: Sequence[str], seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model to fine-tune in full and its tokenizer, with ``<|endoftext|>`` as end of text.

    ``tiny`` is a fresh small GPT-2 with a tokenizer trained on ``tweets`` (one per account).
    """
    if base_model == TINY_NAME:
        tokenizer = build_tiny_tokenizer(tweets)
        return build_tiny_model(tokenizer, seed=seed), tokenizer
    check_base_model(base_model)
    torch.manual_seed(seed)
    model, tokenizer = load_pretrained(base_model)
    if EOS not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"eos_token": EOS})
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def context_length(model: PreTrainedModel) -> int:
    """Longest sequence the model takes: GPT-2 calls it n_positions, most others
    max_position_embeddings."""
    config = model.config
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


def pick_device(setting: str) -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if setting != "auto":
        device = torch.device(setting)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError(f"generation.device is {setting} but no CUDA GPU is available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise TrainingError("generation.device is mps but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _precision(device: torch.device) -> tuple[str, torch.dtype | None]:
    if device.type != "cuda":
        return "fp32", None
    if torch.cuda.is_bf16_supported():
        return "bf16", torch.bfloat16
    return "fp16", torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _batches(blocks: torch.Tensor, batch_size: int, order: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), batch_size):
        yield blocks[order[start : start + batch_size]]


def steps_per_epoch(n_blocks: int, batch_size: int) -> int:
    return math.ceil(n_blocks / batch_size)


def fine_tune(
    model: PreTrainedModel,
    train_blocks: torch.Tensor,
    validation_blocks: torch.Tensor,
    hp: Hyperparameters,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train in place on ``[n, block_size]`` token blocks; evaluate on the held-out blocks."""
    if len(train_blocks) == 0:
        raise TrainingError("no training blocks: the tweets are shorter than one block")
    with _cpu_threads(model, device):
        return _fine_tune(model, train_blocks, validation_blocks, hp, device, on_step)


@contextlib.contextmanager
def _cpu_threads(model: PreTrainedModel, device: torch.device) -> Iterator[None]:
    """One CPU thread for small models (see SMALL_MODEL_PARAMETERS), restored afterwards."""
    previous = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    if device.type == "cpu" and small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fine_tune(
    model: PreTrainedModel,
    train_blocks: torch.Tensor,
    validation_blocks: torch.Tensor,
    hp: Hyperparameters,
    device: torch.device,
    on_step: StepCallback | None,
) -> TrainResult:
    started = time.monotonic()
    torch.manual_seed(hp.seed)
    generator = torch.Generator().manual_seed(hp.seed)
    precision, dtype = _precision(device)
    if getattr(model, "loss_type", None) is None:
        # Every model here is a causal LM; GPT2LMHeadModel's class name does not say so,
        # and transformers warns before falling back to this same loss.
        model.loss_type = "ForCausalLM"
    model.to(device)
    model.train()

    total_steps = hp.epochs * steps_per_epoch(len(train_blocks), hp.batch_size)
    # Only what trains: every weight for a full fine-tune, the adapter's for LoRA.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, hp.warmup_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    step = 0
    recent_losses: list[float] = []
    for _ in range(hp.epochs):
        order = torch.randperm(len(train_blocks), generator=generator)
        for batch in _batches(train_blocks, hp.batch_size, order):
            batch = batch.to(device)
            with _autocast(device, dtype):
                loss = model(input_ids=batch, labels=batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
            recent_losses = [*recent_losses[-9:], loss.item()]
            if on_step is not None:
                on_step(step, total_steps)

    eval_loss = evaluate(model, validation_blocks, hp.batch_size, device, dtype)
    model.to("cpu")
    return TrainResult(
        steps=step,
        train_loss=sum(recent_losses) / len(recent_losses) if recent_losses else None,
        eval_loss=eval_loss,
        device=str(device),
        precision=precision,
        seconds=time.monotonic() - started,
    )


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    blocks: torch.Tensor,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> float | None:
    """Mean next-token loss over every predicted token of ``blocks``; None with no blocks."""
    if len(blocks) == 0 or blocks.shape[1] < 2:
        return None
    model.eval()
    total_loss = 0.0
    predicted = 0
    for batch in _batches(blocks, batch_size, torch.arange(len(blocks))):
        batch = batch.to(device)
        with _autocast(device, dtype):
            loss = model(input_ids=batch, labels=batch).loss
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        total_loss += loss.float().item() * tokens
        predicted += tokens
    model.train()
    return total_loss / predicted
