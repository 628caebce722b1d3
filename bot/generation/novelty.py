"""Novelty guard: catch generated tweets that copy a training tweet verbatim or nearly so.

The index is a set of 64-bit hashes of word n-grams ("shingles") of the normalised training
tweets, plus a hash of each whole normalised tweet. It is built once at training time and
saved beside the weights (``novelty.bin``), so checking a candidate costs a few dict lookups.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Iterable
from pathlib import Path

SHINGLE_WORDS = 5
# A candidate whose shingles are mostly found in one training corpus is a near-copy.
NEAR_COPY_FRACTION = 0.8
_MAGIC = b"TLNOV1\n"
_WORD = re.compile(r"[\w']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _hash(words: Iterable[str]) -> int:
    digest = hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _shingles(words: list[str]) -> list[int]:
    if len(words) < SHINGLE_WORDS:
        return []
    return [_hash(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)]


class NoveltyIndex:
    def __init__(self, whole: set[int], shingles: set[int]) -> None:
        self._whole = whole
        self._shingles = shingles

    @classmethod
    def build(cls, texts: Iterable[str]) -> NoveltyIndex:
        whole: set[int] = set()
        shingles: set[int] = set()
        for text in texts:
            words = _words(text)
            if words:
                whole.add(_hash(words))
                shingles.update(_shingles(words))
        return cls(whole, shingles)

    def is_copy(self, text: str, prompt: str = "") -> bool:
        """True when ``text`` repeats a training tweet (the prompt itself does not count).

        Shingles that lie entirely inside the prompt are ignored, so a user who types a real
        tweet's opening does not make every continuation look copied.
        """
        words = _words(text)
        if not words:
            return False
        if _hash(words) in self._whole:
            return True
        prompt_len = len(_words(prompt))
        candidate = _shingles(words)[max(0, prompt_len - SHINGLE_WORDS + 1) :]
        if not candidate:
            return False
        found = sum(1 for h in candidate if h in self._shingles)
        return found / len(candidate) >= NEAR_COPY_FRACTION

    def __len__(self) -> int:
        return len(self._whole)

    def save(self, path: Path) -> None:
        whole = array("Q", sorted(self._whole))
        shingles = array("Q", sorted(self._shingles))
        with open(path, "wb") as handle:
            handle.write(_MAGIC)
            handle.write(array("Q", [len(whole), len(shingles)]).tobytes())
            handle.write(whole.tobytes())
            handle.write(shingles.tobytes())

    @classmethod
    def load(cls, path: Path) -> NoveltyIndex:
        data = Path(path).read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path} is not a tweetlike novelty index")
        header = array("Q")
        header.frombytes(data[len(_MAGIC) : len(_MAGIC) + 16])
        n_whole, n_shingles = header
        body = array("Q")
        body.frombytes(data[len(_MAGIC) + 16 :])
        if len(body) != n_whole + n_shingles:
            raise ValueError(f"{path} is truncated")
        return cls(set(body[:n_whole]), set(body[n_whole:]))
