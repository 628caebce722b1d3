"""What a fetch or an import reports back: counts for one line of CLI output."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceResult:
    handle: str
    received: int
    added: int
    total: int

    def summary(self) -> str:
        noun = "tweet" if self.added == 1 else "tweets"
        return f"{self.handle}: {self.added:,} new {noun}, {self.total:,} stored"
