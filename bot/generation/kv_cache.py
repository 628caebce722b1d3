"""A key/value cache with one slot per running row, so rows can join and leave a batch at
any decoding step.

Each layer keeps its keys and values in preallocated ``[slots, heads, length, head_dim]``
buffers. Row ``i`` of the batch lives in slot ``i``: its prompt is written at positions
``[start_i, width)`` of the slot when it joins (left-padded with the other rows that join at
the same step), and each decoding step writes one token per row at that row's own next
position. An additive attention mask lets every row see exactly its own positions, so rows
of different ages share a step without re-padding anyone.

The alternative, a ``DynamicCache`` re-padded whenever a row joins, copies every running row's
whole cache at each join, and its length is that of the oldest row for everybody
(``bench/kv_cache.py`` measures both). Here a join writes only the new rows, and a row that
leaves costs one copy of the last row into its slot (``move_row``) to keep rows contiguous.

Buffers start small and grow (doubling) in rows and in length as the batch needs them; they
are zero-filled so that masked-out positions hold finite numbers (``0 * NaN`` would leak
into attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INITIAL_LENGTH = 64


@dataclass(frozen=True)
class _Prefill:
    first_row: int
    rows: int
    width: int


@dataclass(frozen=True)
class _Decode:
    rows: int
    positions: torch.Tensor  # [rows] where each row's new token is written
    length: int  # positions visible to this step (the longest row's, plus the new token)


class SlotKVCache:
    """Duck-types the ``update`` method transformers' attention layers call on a cache."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._rows = 0
        self._length = INITIAL_LENGTH
        self._plan: _Prefill | _Decode | None = None

    # what the batch says before each forward pass ----------------------------------------

    def reserve(self, rows: int, length: int) -> None:
        """Make room for ``rows`` rows of ``length`` positions (buffers grow, doubling, at the
        next update)."""
        while self._rows < rows:
            self._rows = max(1, 2 * self._rows)
        while self._length < length:
            self._length *= 2

    def prefill(self, first_row: int, rows: int, width: int) -> None:
        """The next forward pass writes ``rows`` new rows' prompts at positions ``[0, width)``."""
        self.reserve(first_row + rows, width)
        self._plan = _Prefill(first_row, rows, width)

    def decode(self, positions: torch.Tensor, length: int) -> None:
        """The next forward pass writes one token per row at ``positions``."""
        self.reserve(positions.shape[0], length)
        self._plan = _Decode(positions.shape[0], positions, length)

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` positions into slot ``target``."""
        for buffer in (*self._keys, *self._values):
            buffer[target, :, :length] = buffer[source, :, :length]

    # what attention layers call -------------------------------------------------------

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._layer(layer_idx, key_states)
        plan = self._plan
        if isinstance(plan, _Prefill):
            rows = slice(plan.first_row, plan.first_row + plan.rows)
            keys[rows, :, : plan.width] = key_states
            values[rows, :, : plan.width] = value_states
            return keys[rows, :, : plan.width], values[rows, :, : plan.width]
        if isinstance(plan, _Decode):
            index = torch.arange(plan.rows, device=keys.device)
            keys[index, :, plan.positions] = key_states[:, :, 0]
            values[index, :, plan.positions] = value_states[:, :, 0]
            return keys[: plan.rows, :, : plan.length], values[: plan.rows, :, : plan.length]
        raise RuntimeError("SlotKVCache.update called without prefill() or decode() first")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions are always given explicitly; transformers only asks when they are not."""
        return 0

    def _layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._keys) <= index:
            self._keys.append(self._zeros(like, 0, 0))
            self._values.append(self._zeros(like, 0, 0))
        keys, values = self._keys[index], self._values[index]
        rows, length = keys.shape[0], keys.shape[2]
        if rows < self._rows or length < self._length:
            keys, values = self._grown(keys, like), self._grown(values, like)
            self._keys[index], self._values[index] = keys, values
        return keys, values

    def _grown(self, old: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        new = self._zeros(like, self._rows, self._length)
        new[: old.shape[0], :, : old.shape[2]] = old
        return new

    def _zeros(self, like: torch.Tensor, rows: int, length: int) -> torch.Tensor:
        heads, dim = like.shape[1], like.shape[3]
        return torch.zeros(rows, heads, length, dim, device=self.device, dtype=self.dtype)
