"""What ``tweetlike import`` agrees to read: the one place that decides what is readable input.

- The path must be a regular file, or a folder holding an extracted X archive. A device, a
  named pipe or a socket is refused by name before it is opened, so ``/dev/zero`` is never
  read and a FIFO never blocks.
- Text is UTF-8 without NUL bytes. An executable, a ``.gz``, a UTF-16 export: every format
  refuses them with the same line, naming the first offending byte and its offset.
- No file is read past :data:`MAX_INPUT_BYTES`, whatever its size claims (a file under
  ``/proc`` says 0). The line formats (CSV, JSONL, text) are streamed; a line longer than
  :data:`MAX_LINE_BYTES` cannot hold a tweet, so it is skipped without being held in memory
  and counted as too long.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from bot.errors import DataError

# Far above any account's tweets as text (millions of lines) or as archive JSON (hundreds of
# thousands of tweets per part; X splits larger archives into tweets-partN.js files).
MAX_INPUT_BYTES = 512 * 1024**2
# A 25,000-character post is at most 100 KB of UTF-8, 150 KB JSON-escaped: a line past a
# mebibyte is not a tweet, whatever else its record carries.
MAX_LINE_BYTES = 1024**2
HEAD_BYTES = 4096
FORMATS_HINT = "an X archive (.zip or its data/tweets.js), CSV, JSONL or plain UTF-8 text"

_BARE_CR = re.compile(r"(?<=\r)(?!\n)")
_NOT_FILES = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(path: Path) -> Literal["file", "folder"]:
    """``file`` or ``folder``; anything else, or a path that cannot be read, is a DataError
    saying what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
            ) from None
        raise DataError(f"{path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise DataError(f"cannot read {path}: permission denied")
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    what = next((name for test, name in _NOT_FILES if test(mode)), "not a regular file")
    raise DataError(f"{path} is {what}, not a file: import {FORMATS_HINT}")


def head(path: Path) -> bytes:
    """The first bytes of a regular file, to recognise its format."""
    with _open(path) as raw:
        return raw.read(HEAD_BYTES)


def check_size(size: int, where: str) -> None:
    if size > MAX_INPUT_BYTES:
        raise DataError(
            f"{where} is {_mib(size)}: too large to be an account's tweets "
            f"(the limit is {_mib(MAX_INPUT_BYTES)} per file)"
        )


def read_text(path: Path) -> str:
    """A whole file as checked text (for the archive's JSON files)."""
    with _open(path) as raw:
        check_size(os.fstat(raw.fileno()).st_size, str(path))
        data = raw.read(MAX_INPUT_BYTES + 1)
    check_size(len(data), str(path))
    return decode(data, str(path))


def decode(data: bytes, where: str, *, final: bool = True) -> str:
    """``data`` as text, or the import's one error for binary or non-UTF-8 input.

    ``final=False`` accepts a character cut off at the end (a file's first bytes).
    """
    return Utf8Text(where).decode(data, final=final).removeprefix("\ufeff")


class Utf8Text:
    """Decodes a byte stream piece by piece, refusing NUL bytes and invalid UTF-8 with the
    offending byte's offset in the whole stream."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def decode(self, data: bytes, *, final: bool = False) -> str:
        pending = len(self._decoder.getstate()[0])
        start = self.offset
        self.offset += len(data)
        nul = data.find(b"\0")
        first_nul = start + nul if nul >= 0 else None
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            bad = start - pending + exc.start
            if first_nul is None or bad < first_nul:
                raise self._not_text(exc.object[exc.start], bad) from None
        if first_nul is not None:
            raise self._not_text(0, first_nul)
        return text

    def _not_text(self, byte: int, offset: int) -> DataError:
        return DataError(
            f"{self.where} is binary or not UTF-8 text (byte 0x{byte:02x} at offset {offset}); "
            f"tweetlike imports {FORMATS_HINT}"
        )


class TextLines:
    """A file's lines, streamed and checked; ``None`` stands for a line too long to read.

    ``\\n``, ``\\r\\n`` and a bare ``\\r`` end a line and stay on it, as the csv module
    expects of a file opened with ``newline=""``; a byte-order mark is dropped. After
    iterating, :attr:`too_long` counts the skipped lines and :attr:`blank` says whether the
    file held nothing but whitespace.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.too_long = 0
        self.blank = True

    def __iter__(self) -> Iterator[str | None]:
        text = Utf8Text(str(self.path))
        with _open(self.path) as raw:
            check_size(os.fstat(raw.fileno()).st_size, str(self.path))
            while chunk := raw.readline(MAX_LINE_BYTES + 1):
                line = text.decode(chunk)
                if text.offset == len(chunk):
                    line = line.removeprefix("\ufeff")
                if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
                    while chunk and not chunk.endswith(b"\n"):
                        chunk = raw.readline(MAX_LINE_BYTES)
                        text.decode(chunk)
                        check_size(text.offset, str(self.path))
                    self.too_long += 1
                    self.blank = False
                    yield None
                    continue
                check_size(text.offset, str(self.path))
                if line.strip():
                    self.blank = False
                yield from (part for part in _BARE_CR.split(line) if part)
            text.decode(b"", final=True)


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None


def _mib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.0f} MiB"
