"""LoRA adapters (``training.method = "lora"``) with PEFT, for GPT-2 family bases.

Only low-rank deltas on the attention and MLP projections train; the base stays frozen and
is shared, at serving time, by every adapter trained on it. GPT-2 implements its projections
as ``Conv1D`` (weights stored as ``[in, out]``), hence ``fan_in_fan_out=True``. The folder
written is PEFT's own (``adapter_config.json`` + ``adapter_model.safetensors``) with
``base_model_name_or_path`` set to something that loads the base offline on this machine
(the Hub id, or the base folder's absolute path), so ``transformers.pipeline(model=folder)``
and ``peft`` load it as it is.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from bot.errors import TrainingError
from bot.training.recipes import LoraShape

# GPT-2: c_attn (q, k, v), attn.c_proj and mlp.c_proj (both "c_proj"), mlp.c_fc.
TARGET_MODULES = ("c_attn", "c_proj", "c_fc")


def with_adapter(model: PreTrainedModel, shape: LoraShape, base_label: str) -> PeftModel:
    """``model`` frozen, with a fresh trainable LoRA adapter on every targeted projection."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if not present.issuperset(TARGET_MODULES):
        raise TrainingError(
            f"LoRA here targets GPT-2's {', '.join(TARGET_MODULES)} projections and "
            f"{base_label} ({type(model).__name__}) does not have them; use --method full"
        )
    config = LoraConfig(
        r=shape.rank,
        lora_alpha=shape.alpha,
        lora_dropout=shape.dropout,
        target_modules=list(TARGET_MODULES),
        fan_in_fan_out=True,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_adapter(model: PeftModel, folder: Path, base_source: str) -> None:
    """Write the adapter; its config names ``base_source`` as the base to load.

    The embeddings are never trained or resized here, so PEFT need not save them; left to
    decide ("auto"), it asks the Hub for the base's config to compare vocabularies.
    """
    model.peft_config["default"].base_model_name_or_path = base_source
    model.save_pretrained(folder, safe_serialization=True, save_embedding_layers=False)
