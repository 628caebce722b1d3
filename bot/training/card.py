"""The model card (``README.md``) in the form huggingtweets published, adapted to tweetlike.

People who knew huggingtweets find the same sections and the same data table; the
"How to use" snippet loads the folder itself, so it runs offline exactly as written (for a
LoRA adapter, with peft installed and its base on this machine or reachable). What the card
says about the model's limits depends on its base: a ``tiny`` model knows nothing beyond the
tweets it was built from, a pre-trained base brings its own knowledge and biases.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from bot.base_models import TINY_NAME, is_local_path
from bot.core.formatting import AI_LABEL
from bot.model_store import HandleStats, ModelMetadata
from bot.training.lora import TARGET_MODULES
from bot.training.recipes import Hyperparameters

HUGGINGTWEETS = "https://github.com/borisdayma/huggingtweets"
DEFAULT_THUMBNAIL = f"{HUGGINGTWEETS}/blob/master/img/logo.png?raw=true"
WIDGET_PROMPT = "My dream is"


def _who(metadata: ModelMetadata, handle: str) -> str:
    return metadata.display_names.get(handle) or f"@{handle}"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " & " + items[-1]


def _people(metadata: ModelMetadata) -> str:
    return _listed([_who(metadata, h) for h in metadata.handles])


def _people_with_handles(metadata: ModelMetadata) -> str:
    return _listed(
        [
            f"{metadata.display_names[h]} (@{h})" if h in metadata.display_names else f"@{h}"
            for h in metadata.handles
        ]
    )


def _front_matter(metadata: ModelMetadata) -> str:
    thumbnail = next(
        (metadata.avatar_urls[h] for h in metadata.handles if h in metadata.avatar_urls),
        DEFAULT_THUMBNAIL,
    )
    return "\n".join(
        [
            "---",
            "language: en",
            f"thumbnail: {json.dumps(thumbnail)}",
            "tags:",
            "- huggingtweets",
            "- tweetlike",
            "- ai-generated",
            "widget:",
            f"- text: {json.dumps(WIDGET_PROMPT)}",
            "---",
        ]
    )


def _header(metadata: ModelMetadata) -> str:
    avatars = "".join(
        '        <div style="display:inherit; margin-left: 4px; margin-right: 4px; '
        "width: 92px; height: 92px; border-radius: 50%; background-size: cover; "
        f'background-image: url(&#39;{html.escape(metadata.avatar_urls[h])}&#39;)"></div>\n'
        for h in metadata.handles
        if h in metadata.avatar_urls
    )
    names = " 🤖 ".join(html.escape(_who(metadata, h)) for h in metadata.handles)
    handles = " ".join(f"@{h}" for h in metadata.handles)
    # Without display names the names line would only repeat the handles.
    handles_line = (
        f'    <div style="text-align: center; font-size: 14px;">{handles}</div>\n'
        if any(h in metadata.display_names for h in metadata.handles)
        else ""
    )
    return (
        '<div class="inline-flex flex-col" style="line-height: 1.5;">\n'
        + (f'    <div class="flex">\n{avatars}    </div>\n' if avatars else "")
        + '    <div style="text-align: center; margin-top: 3px; font-size: 16px; '
        'font-weight: 800">🤖 AI BOT 🤖</div>\n'
        f'    <div style="text-align: center; font-size: 16px; font-weight: 800">{names}</div>\n'
        f"{handles_line}"
        "</div>"
    )


def data_table(metadata: ModelMetadata) -> str:
    """``| Data | @handle |`` with the four counts; one column per account."""
    stats: dict[str, HandleStats] = dict(metadata.per_handle)
    if not stats:
        stats[metadata.handles[0]] = HandleStats(
            tweets_downloaded=metadata.tweets_downloaded,
            retweets=metadata.retweets,
            short_tweets=metadata.short_tweets,
            tweets_kept=metadata.tweets_kept,
        )
    handles = metadata.handles
    rows = [
        "| Data | " + " | ".join(f"@{h}" for h in handles) + " |",
        "| --- |" + " --- |" * len(handles),
    ]
    for label, field in (
        ("Tweets downloaded", "tweets_downloaded"),
        ("Retweets", "retweets"),
        ("Short tweets", "short_tweets"),
        ("Tweets kept", "tweets_kept"),
    ):
        values = " | ".join(str(getattr(stats[h], field)) for h in handles)
        rows.append(f"| {label} | {values} |")
    return "\n".join(rows)


TINY_TEXT = (
    "a small GPT-2 built from scratch by tweetlike (`tiny`: 2 layers, 64-dimensional, with a "
    "byte-level BPE tokenizer trained on these tweets)"
)
SHARED_TINY_TEXT = (
    "the store's shared `tiny` base: a small GPT-2 (2 layers, 64-dimensional) built by "
    "tweetlike and pre-trained for a few seconds on its bundled sample account's tweets"
)


def _base_model_text(metadata: ModelMetadata) -> str:
    base = metadata.base_model
    if base == TINY_NAME:
        return SHARED_TINY_TEXT if metadata.method == "lora" else TINY_TEXT
    if is_local_path(base):
        return f"the pre-trained model in `{Path(base).name}`"
    return f"a pre-trained [{base}](https://huggingface.co/{base})"


def _procedure(metadata: ModelMetadata, hp: Hyperparameters) -> str:
    handles = _listed([f"@{h}" for h in metadata.handles])
    if hp.lora is None:
        return (
            f"The model is based on {_base_model_text(metadata)}, fine-tuned on {handles}'s tweets."
        )
    return (
        f"The model is a LoRA adapter (rank {hp.lora.rank}, alpha {hp.lora.alpha}, dropout "
        f"{hp.lora.dropout:g}, on the {', '.join(f'`{m}`' for m in TARGET_MODULES)} "
        f"projections) trained on {handles}'s tweets for {_base_model_text(metadata)}, whose "
        "weights it leaves unchanged. It only works on that exact base: its weights' SHA-256 "
        f"fingerprint is `{metadata.base_fingerprint}`."
    )


def _how_to_use(name: str, metadata: ModelMetadata) -> str:
    if metadata.method != "lora":
        return f"""You can use this model directly with a pipeline for text generation:

```python
from transformers import pipeline
generator = pipeline('text-generation', model='models/{name}')
generator("{WIDGET_PROMPT}", num_return_sequences=5)
```"""
    if metadata.base_model == TINY_NAME or is_local_path(metadata.base_model):
        where = "from its folder on this machine"
    else:
        where = f"`{metadata.base_model}` from the Hugging Face Hub (or its local cache)"
    return f"""This folder is a LoRA adapter: install `torch`, `transformers` and `peft`
(`pip install torch transformers peft`). With peft installed, transformers loads the adapter
and its base ({where}) by itself; the sampling settings are this folder's:

```python
from transformers import GenerationConfig, pipeline
generator = pipeline('text-generation', model='models/{name}')
settings = GenerationConfig.from_pretrained('models/{name}')
generator("{WIDGET_PROMPT}", generation_config=settings, num_return_sequences=5)
```

To hold the adapter apart from its base, load it with peft:
`peft.AutoPeftModelForCausalLM.from_pretrained('models/{name}')`."""


def _limitations(metadata: ModelMetadata) -> str:
    base = metadata.base_model
    if base == TINY_NAME:
        known = (
            "the account's own tweets"
            if metadata.method == "full"
            else "a few hundred sample tweets and the account's own"
        )
        return (
            f"This is a very small model that knows no English beyond {known}: expect "
            "loosely joined words and phrases rather than fluent text, sometimes close copies "
            "of real tweets, and no knowledge of the world. Use a pre-trained base (such as "
            "`gpt2`) for text that reads well."
        )
    name = (
        f"`{Path(base).name}`"
        if is_local_path(base)
        else f"[{base}](https://huggingface.co/{base})"
    )
    return (
        f"The model has the limitations and biases of its base model, {name}: it can "
        "produce false, offensive or nonsensical text with full confidence."
    )


def render_model_card(name: str, metadata: ModelMetadata, hp: Hyperparameters) -> str:
    people = _people(metadata)
    eval_loss = "n/a (no validation split)"
    if metadata.eval_loss is not None:
        eval_loss = f"{metadata.eval_loss:.4f}"
    return f"""{_front_matter(metadata)}

{_header(metadata)}

I was made with **tweetlike**, a self-hosted take on [huggingtweets]({HUGGINGTWEETS}).

**{AI_LABEL}.** Everything I write is AI-generated: I am a language model imitating the
public tweets of {_people_with_handles(metadata)}, and nothing I write was said by them.

## How does it work?

The account's tweets were downloaded (or imported from an archive), cleaned, and used to
fine-tune a language model that then writes new tweets in the same style, starting from
whatever prompt you give it. The pipeline: download → clean (drop retweets, URLs and very
short tweets) → fine-tune → publish this folder.

## Training data

The model was trained on tweets from {_people_with_handles(metadata)}.

{data_table(metadata)}

## Training procedure

{_procedure(metadata, hp)}

- Epochs: {hp.epochs}
- Learning rate: {hp.learning_rate:g} (cosine schedule, {hp.warmup_steps} warmup steps)
- Batch size: {hp.batch_size} blocks of {hp.block_size} tokens
- Seed: {hp.seed}
- Eval loss on held-out tweets: {eval_loss}
- Version `{metadata.version}`, trained {metadata.trained_at}

## How to use

{_how_to_use(name, metadata)}

## Limitations and bias

{_limitations(metadata)}

In addition, the data present in the user's tweets further affects the text generated by
the model. Its output is AI-generated and must not be presented as the words of {people}.
"""
