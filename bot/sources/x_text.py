"""What a post to X says: the one place that makes generated text safe to post there.

A generated tweet imitates a real account, so on X it is (1) labelled as AI-generated with
``x.post_label``, inside X's 280, and (2) unable to notify anyone: the model learnt
``@mentions`` from real replies, and an automated post that mentions people notifies them
and breaks X's automation rules. X finds a mention the way its open-source twitter-text
library does: an at sign, ``@`` or the full-width ``＠``, directly followed by a letter, digit
or underscore, after most characters including ``.`` (so ``.@name`` notifies too). A zero
width space after every such at sign breaks each of those forms while the text still reads
``@name``. Hashtags and cashtags notify nobody and are left alone.
"""

from __future__ import annotations

import re

from bot.rules import ELLIPSIS, TWEET_LIMIT, fit_tweet, weighted_length

ZERO_WIDTH_SPACE = "\u200b"
LABEL_SEPARATOR = "\n\n"
_MENTION = re.compile(r"([@＠])(?=[A-Za-z0-9_])")


def neutralize_mentions(text: str) -> str:
    """``text`` with no at sign that X would read as a mention."""
    return _MENTION.sub(r"\1" + ZERO_WIDTH_SPACE, text)


def post_text(text: str, label: str) -> str:
    """The post for ``text``: cut at a word to leave room for ``label`` below it, both with
    mentions neutralised, within X's 280 weighted characters."""
    tail = LABEL_SEPARATOR + neutralize_mentions(" ".join(label.split()))
    body = fit_tweet(
        neutralize_mentions(text), TWEET_LIMIT - weighted_length(tail), ellipsis=ELLIPSIS
    )
    return body + tail
