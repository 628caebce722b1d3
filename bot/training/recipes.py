"""Training recipes: the default learning rate and epochs for each kind of base and method.

A recipe is chosen by what is trained (``full`` fine-tuning or a ``lora`` adapter) and on
what (the ``tiny`` base built here, or a pre-trained model: a Hub id or a local folder). The
config's ``training.learning_rate`` / ``training.epochs`` override it only when set
(``None`` means "the recipe's"), and ``--epochs`` overrides both. Because "unset" is a
value rather than the absence of a key, it survives being handed to the training
subprocess (``bot.jobs.runner.child_environment`` passes every setting explicitly).

Where the numbers come from (``bench/lora_training.py`` measures the tiny ones):

- full on a pre-trained base: huggingtweets fine-tuned gpt2 for 4 epochs at 1.372e-4.
- full on ``tiny``: random weights need larger steps and more passes to learn more than word
  frequencies (sample account: eval loss 6.3 after 4 epochs, 5.9 after 10, 5.8 after 12 or
  15, overfitting by 30).
- lora: only the low-rank deltas train and they start at zero, so LoRA needs a learning
  rate about ten times that of full fine-tuning of the same base (the LoRA and PEFT papers'
  GPT-2 settings are 2e-4 to 1e-3 against 1e-4 to 5e-5 for full); see the README's
  "Training" section for the measured table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.base_models import TINY_NAME
from bot.config import Settings

Method = Literal["full", "lora"]


@dataclass(frozen=True)
class Recipe:
    learning_rate: float
    epochs: int


HUGGINGTWEETS = Recipe(learning_rate=1.372e-4, epochs=4)
TINY_FULL = Recipe(learning_rate=3e-3, epochs=12)
PRETRAINED_LORA = Recipe(learning_rate=1e-3, epochs=4)
TINY_LORA = Recipe(learning_rate=1e-2, epochs=12)


def recipe_for(base: str, method: Method) -> Recipe:
    if base == TINY_NAME:
        return TINY_LORA if method == "lora" else TINY_FULL
    return PRETRAINED_LORA if method == "lora" else HUGGINGTWEETS


@dataclass(frozen=True)
class LoraShape:
    """The adapter's rank, scaling (alpha) and dropout: ``training.lora_*``."""

    rank: int
    alpha: int
    dropout: float


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    learning_rate: float
    batch_size: int
    block_size: int
    seed: int
    warmup_steps: int = 0
    lora: LoraShape | None = None


def hyperparameters_for(
    settings: Settings, base: str, method: Method, epochs: int | None
) -> Hyperparameters:
    """``--epochs``, else the config, else the recipe for ``base`` and ``method``."""
    training = settings.training
    recipe = recipe_for(base, method)
    lora = None
    if method == "lora":
        lora = LoraShape(training.lora_rank, training.lora_alpha, training.lora_dropout)
    return Hyperparameters(
        epochs=epochs or training.epochs or recipe.epochs,
        learning_rate=training.learning_rate or recipe.learning_rate,
        batch_size=training.batch_size,
        block_size=training.block_size,
        seed=training.seed,
        lora=lora,
    )
