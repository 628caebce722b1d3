"""The model card (``README.md``) in the form huggingtweets published, adapted to tweetlike.

People who knew huggingtweets find the same sections and the same data table; the
"How to use" snippet loads the folder itself, so it runs offline exactly as written.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from bot.base_models import TINY_NAME, is_local_path
from bot.model_store import HandleStats, ModelMetadata
from bot.training.trainer import Hyperparameters

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
    return (
        '<div class="inline-flex flex-col" style="line-height: 1.5;">\n'
        + (f'    <div class="flex">\n{avatars}    </div>\n' if avatars else "")
        + '    <div style="text-align: center; margin-top: 3px; font-size: 16px; '
        'font-weight: 800">🤖 AI BOT 🤖</div>\n'
        f'    <div style="text-align: center; font-size: 16px; font-weight: 800">{names}</div>\n'
        f'    <div style="text-align: center; font-size: 14px;">{handles}</div>\n'
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


def _base_model_text(base_model: str) -> str:
    if base_model == TINY_NAME:
        return (
            "a small GPT-2 built from scratch by tweetlike (`tiny`: 2 layers, 64-dimensional, "
            "with a byte-level BPE tokenizer trained on these tweets), so it learns the "
            "account's vocabulary rather than English at large"
        )
    if is_local_path(base_model):
        return f"the pre-trained model in `{Path(base_model).name}`"
    return f"a pre-trained [{base_model}](https://huggingface.co/{base_model})"


def render_model_card(name: str, metadata: ModelMetadata, hp: Hyperparameters) -> str:
    people = _people(metadata)
    handles = _listed([f"@{h}" for h in metadata.handles])
    eval_loss = "n/a (no validation split)"
    if metadata.eval_loss is not None:
        eval_loss = f"{metadata.eval_loss:.4f}"
    return f"""{_front_matter(metadata)}

{_header(metadata)}

I was made with **tweetlike**, a self-hosted take on [huggingtweets]({HUGGINGTWEETS}).

**Everything I write is AI-generated.** I am a language model imitating the public tweets
of {people}; I am not {people}, and nothing I write was said by them.

## How does it work?

The account's tweets were downloaded (or imported from an archive), cleaned, and used to
fine-tune a language model that then writes new tweets in the same style, starting from
whatever prompt you give it. The pipeline: download → clean (drop retweets, URLs and very
short tweets) → fine-tune → publish this folder.

## Training data

The model was trained on tweets from {_people_with_handles(metadata)}.

{data_table(metadata)}

## Training procedure

The model is based on {_base_model_text(metadata.base_model)}, fine-tuned on {handles}'s
tweets.

- Epochs: {hp.epochs}
- Learning rate: {hp.learning_rate:g} (cosine schedule, {hp.warmup_steps} warmup steps)
- Batch size: {hp.batch_size} blocks of {hp.block_size} tokens
- Seed: {hp.seed}
- Eval loss on held-out tweets: {eval_loss}
- Version `{metadata.version}`, trained {metadata.trained_at}

## How to use

You can use this model directly with a pipeline for text generation:

```python
from transformers import pipeline
generator = pipeline('text-generation', model='models/{name}')
generator("{WIDGET_PROMPT}", num_return_sequences=5)
```

## Limitations and bias

The model suffers from the same limitations and bias as GPT-2 and its base model: it
can produce false, offensive or nonsensical text with full confidence.

In addition, the data present in the user's tweets further affects the text generated by
the model. Its output is AI-generated and must not be presented as the words of {people}.
"""
