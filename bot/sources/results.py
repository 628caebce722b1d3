"""What a fetch or an import reports back: counts for one line of CLI output."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.sources.tweets import Skipped


@dataclass(frozen=True)
class SourceResult:
    handle: str
    received: int
    added: int
    total: int
    skipped: Skipped = field(default_factory=Skipped)

    def summary(self) -> str:
        noun = "tweet" if self.added == 1 else "tweets"
        line = f"{self.handle}: {self.added:,} new {noun}, {self.total:,} stored"
        return f"{line}; {self.skipped.describe()}" if self.skipped.total else line
