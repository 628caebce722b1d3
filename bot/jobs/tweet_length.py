"""Fitting generated text into one X post.

X counts most Latin, Greek, Cyrillic and punctuation characters as one and everything else
(CJK, emoji) as two, against a limit of 280. Overlong text is cut at a word boundary with an
ellipsis rather than rejected by the API.
"""

from __future__ import annotations

X_LIMIT = 280
ELLIPSIS = "…"
# Code point ranges X weighs as 1 (twitter-text configuration v3); the rest weigh 2.
_LIGHT_RANGES = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))


def char_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _LIGHT_RANGES) else 2


def weighted_length(text: str) -> int:
    return sum(char_weight(c) for c in text)


def fit_for_x(text: str, limit: int = X_LIMIT) -> str:
    text = " ".join(text.split())
    if weighted_length(text) <= limit:
        return text
    budget = limit - char_weight(ELLIPSIS)
    kept: list[str] = []
    used = 0
    for char in text:
        used += char_weight(char)
        if used > budget:
            break
        kept.append(char)
    cut = "".join(kept)
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + ELLIPSIS
