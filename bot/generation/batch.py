"""A continuously running batch: rows join at any decoding step and leave as soon as they end.

One :class:`DecodeBatch` serves one set of weights in memory: a full fine-tune, or a base
shared by LoRA adapters, in which case its rows may each have a different adapter
(:mod:`bot.generation.lora`). Each :meth:`DecodeBatch.step` does, in order:

1. prefill: rows waiting for a slot (up to ``capacity`` rows in all) have their prompts run,
   left-padded together, into their slots of the :class:`~bot.generation.kv_cache.SlotKVCache`,
   and choose their first token. While other rows are running, waiting rows are held for up
   to ``JOIN_AFTER_STEPS`` steps (unless they fill every free slot), so that rows arriving
   close together share one prefill pass: under a steady stream each pass is a forward of
   its own that every running row waits for;
2. decode: every running row feeds its last token and chooses the next, in one forward pass;
3. retire: rows that chose a stop token or reached their length leave, and are returned.

Every row draws its random numbers from its own generator, seeded per row
(:func:`~bot.generation.sampling.choose_tokens`), so sampling itself never couples rows. The
logits can: fp32 matrix kernels may block a 16-row product differently from a 3-row one, and
int8 quantizes each step's activations with one scale for the whole batch. So a row's
tweets are reproducible only when its batch is; the engine gives seeded requests a batch of
their own.

Host synchronisation: on a CPU reading the stop flags costs nothing, so rows retire at the
step they end. On a GPU each read waits for the device, so flags are read every
``sync_every`` steps (and whenever rows join); a row that ended in between idles in its slot
and its extra tokens are discarded. Lengths are known on the host without reading anything.
The forward passes are the place where CUDA graphs or ``torch.compile`` would go: the
shapes change with the number of rows and the visible length, so either would need those
bucketed first (no GPU was available to measure whether that pays).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from bot.generation.kv_cache import SlotKVCache
from bot.generation.lora import LoraAdapter, LoraRouter, Projection, RowAdapters
from bot.generation.sampling import RowSampling, SamplingTensors, StopTokens, choose_tokens

# Measured with requests arriving at random at 70% of capacity (GPT-2-small shape, int8,
# 2 cores; bench/open_loop.py --join-after-steps): admitting each arrival at the next step
# spent 18% of the worker's time in prefill passes (300 in 30 s); holding arrivals for 4
# steps halved the passes and, over four pairs of 30 s runs on the same arrivals, lowered
# the mean p95 from 1.81 to 1.53 s and the mean p50 from 1.00 to 0.97 s; 8 steps did no
# better than 4.
JOIN_AFTER_STEPS = 4


@dataclass(eq=False)
class Runtime:
    """A set of weights in memory and what a batch needs to run it."""

    label: str
    model: PreTrainedModel
    device: torch.device
    dtype: torch.dtype
    context_size: int
    vocab_size: int
    router: LoraRouter | None = None  # bases only: adapters' way into the projections
    projections: dict[str, Projection] = field(default_factory=dict)  # by module path


@dataclass(eq=False)
class Row:
    """One tweet being written: a prompt, how to sample, and whose it is."""

    prompt: list[int]
    sampling: RowSampling
    seed: int
    adapter: LoraAdapter | None = None
    owner: object = None
    tokens: list[int] = field(default_factory=list)  # set when the row finishes
    # bookkeeping while the row runs
    uniforms: torch.Tensor | None = None  # its random numbers, one per step
    start: int = 0  # left padding of its prompt in its cache slot
    length: int = 0  # next position written in its slot
    steps: int = 0  # tokens chosen so far


class DecodeBatch:
    def __init__(self, runtime: Runtime, capacity: int, max_new_tokens: int, sync_every: int):
        self.runtime = runtime
        self.capacity = capacity
        self._width = max_new_tokens  # the most tokens any row may choose
        self._sync_every = sync_every
        self._cache = SlotKVCache(runtime.device, runtime.dtype)
        self._adapters = (
            RowAdapters(
                sorted(runtime.projections.values(), key=lambda p: p.index),
                runtime.device,
                runtime.dtype,
            )
            if runtime.router is not None
            else None
        )
        self._waiting: deque[Row] = deque()
        self._rows: list[Row] = []
        self._stop_sets: dict[StopTokens, int] = {}
        self._stop_table = torch.zeros(0, runtime.vocab_size, dtype=torch.bool)
        self._stop_ids: list[torch.Tensor] = []
        self._steps_since_sync = 0
        self._held_steps = 0  # steps the waiting rows have been held while others ran

        # per-row device state, row i of each tensor is self._rows[i]
        def none_yet(*width: int) -> torch.Tensor:
            return torch.zeros(0, *width, dtype=torch.long, device=runtime.device)

        self._last = none_yet()  # the token each row feeds next
        self._out = none_yet(max_new_tokens)  # the tokens each row chose
        self._stopped_at = none_yet()  # the step each row chose a stop token at, or -1
        self._lengths, self._starts, self._steps = none_yet(), none_yet(), none_yet()
        self._stop_index, self._min_new = none_yet(), none_yet()
        self._params: SamplingTensors | None = None

    # what the engine sees ----------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows running or waiting for a slot."""
        return len(self._rows) + len(self._waiting)

    def all_rows(self) -> list[Row]:
        return [*self._rows, *self._waiting]

    def add(self, rows: list[Row]) -> None:
        """Queue rows; they join at the next step with a free slot."""
        for row in rows:
            if row.sampling.max_new_tokens > self._width:
                raise ValueError("row asks for more tokens than the batch was made for")
            if (row.adapter is None) != (self._adapters is None):
                raise ValueError("rows on a shared base need an adapter, other rows none")
        self._waiting.extend(rows)

    def discard(self, dropped: Callable[[Row], bool]) -> None:
        """Remove the rows ``dropped`` picks, waiting or running (their slots free at once)."""
        self._waiting = deque(row for row in self._waiting if not dropped(row))
        leaving = {i for i, row in enumerate(self._rows) if dropped(row)}
        if leaving:
            with torch.inference_mode():
                self._remove(leaving)

    def step(self) -> list[Row]:
        """Admit waiting rows, run one decoding step, and return the rows that ended."""
        finished: list[Row] = []
        with torch.inference_mode():
            if self._waiting:
                room = self.capacity - len(self._rows)
                if room > 0 and (
                    not self._rows
                    or len(self._waiting) >= room
                    or self._held_steps >= JOIN_AFTER_STEPS
                ):
                    self._held_steps = 0
                    self._admit()
                    finished += self._retire(sync=True)
                else:
                    self._held_steps += 1
            if self._rows:
                self._decode()
                self._steps_since_sync += 1
                finished += self._retire(sync=self._steps_since_sync >= self._sync_every)
        return finished

    # prefill -------------------------------------------------------------------------

    def _admit(self) -> None:
        joining = [
            self._waiting.popleft()
            for _ in range(min(len(self._waiting), self.capacity - len(self._rows)))
        ]
        device = self.runtime.device
        first = len(self._rows)
        width = max(len(row.prompt) for row in joining)
        for slot, row in enumerate(joining, start=first):
            row.start, row.length, row.steps = width - len(row.prompt), width, 0
            row.uniforms = _uniforms(row.seed, self._width)
            if self._adapters is not None and row.adapter is not None:
                self._adapters.put(slot, row.adapter)
        ids = torch.tensor([[0] * row.start + row.prompt for row in joining], device=device)
        starts = torch.tensor([row.start for row in joining], device=device)
        where = torch.arange(width, device=device)
        positions = (where[None, :] - starts[:, None]).clamp(min=0)
        key, query = where[None, None, :], where[None, :, None]
        # Left padding: a real token sees the real tokens up to itself; a padding position
        # sees itself only (a row that sees nothing would turn into NaNs).
        visible = (key <= query) & ((key >= starts[:, None, None]) | (key == query))
        self._cache.prefill(first, len(joining), width)
        logits = self._forward(ids, visible, positions, joining)
        self._rows += joining
        self._refresh(joining, logits)

    # decode --------------------------------------------------------------------------

    def _decode(self) -> None:
        length = max(row.length for row in self._rows) + 1
        where = torch.arange(length, device=self.runtime.device)
        visible = (where[None, :] >= self._starts[:, None]) & (
            where[None, :] <= self._lengths[:, None]
        )
        self._cache.decode(self._lengths, length)
        positions = (self._lengths - self._starts)[:, None]
        logits = self._forward(self._last[:, None], visible[:, None, :], positions, self._rows)
        for row in self._rows:
            row.length += 1
        self._lengths = self._lengths + 1
        self._choose(logits)

    def _forward(
        self, ids: torch.Tensor, visible: torch.Tensor, positions: torch.Tensor, rows: list[Row]
    ) -> torch.Tensor:
        """Last-position logits of ``rows``; ``visible`` is ``[rows, queries, keys]``."""
        dtype = self.runtime.dtype
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        call = {
            "input_ids": ids,
            "attention_mask": mask[:, None],
            "position_ids": positions,
            "cache": self._cache,
            "use_cache": True,
            "logits_to_keep": 1,
        }
        router = self.runtime.router
        if router is None or self._adapters is None:
            return self.runtime.model(**call).logits[:, -1].float()
        first = 0 if rows is self._rows else len(self._rows)
        with router.using(self._adapters, slice(first, first + len(rows))):
            return self.runtime.model(**call).logits[:, -1].float()

    # choosing and stopping -----------------------------------------------------------

    def _choose(self, logits: torch.Tensor, rows: slice = slice(None)) -> None:
        """Choose each row's next token (rows in ``rows``) and record it."""
        params = self._params
        assert params is not None
        steps = self._steps[rows]
        early = {r.sampling.stops for r in self._rows[rows] if r.steps < r.sampling.min_new_tokens}
        for stops in early:  # too early to stop: the stop tokens are out (no host sync)
            index = self._stop_sets[stops]
            ids = self._stop_ids[index]
            rows_early = (self._stop_index[rows] == index) & (steps < self._min_new[rows])
            logits[:, ids] = logits[:, ids].masked_fill(rows_early[:, None], float("-inf"))
        part = SamplingTensors(
            greedy=params.greedy[rows],
            temperature=params.temperature[rows],
            top_k=params.top_k[rows],
            top_p=params.top_p[rows],
            widest_k=params.widest_k,
            uniforms=params.uniforms[rows],
        )
        tokens = choose_tokens(logits, part, steps)
        index = torch.arange(self._out.shape[0], device=logits.device)[rows]
        self._out[index, steps] = tokens
        stop = self._stop_table[self._stop_index[rows], tokens] & (self._stopped_at[rows] < 0)
        self._stopped_at[rows] = torch.where(stop, steps, self._stopped_at[rows])
        self._last[rows] = tokens
        self._steps[rows] = steps + 1
        for row in self._rows[rows]:
            row.steps += 1

    def _retire(self, *, sync: bool) -> list[Row]:
        done = {i for i, row in enumerate(self._rows) if row.steps >= row.sampling.max_new_tokens}
        if sync:
            self._steps_since_sync = 0
            stopped_at = self._stopped_at.tolist()
            done |= {i for i, at in enumerate(stopped_at) if at >= 0}
        if not done:
            return []
        ordered = sorted(done)
        ends = self._stopped_at[ordered].tolist()
        tokens = self._out[ordered].tolist()
        finished = []
        for i, end, row_tokens in zip(ordered, ends, tokens, strict=True):
            row = self._rows[i]
            row.tokens = row_tokens[: end if end >= 0 else row.steps]
            finished.append(row)
        self._remove(done)
        return finished

    # row bookkeeping -----------------------------------------------------------------

    def _remove(self, leaving: set[int]) -> None:
        """Drop rows, moving the last rows into the freed slots so rows stay contiguous."""
        order = list(range(len(self._rows)))
        for i in sorted(leaving, reverse=True):
            order[i] = order[-1]
            order.pop()
        for slot, old in enumerate(order):
            if old != slot:
                self._cache.move_row(old, slot, self._rows[old].length)
                if self._adapters is not None:
                    self._adapters.move(old, slot)
        keep = torch.tensor(order, dtype=torch.long, device=self.runtime.device)
        self._rows = [self._rows[i] for i in order]
        self._last = self._last[keep]
        self._out = self._out[keep]
        self._stopped_at = self._stopped_at[keep]
        self._refresh([], None)

    def _refresh(self, joined: list[Row], logits: torch.Tensor | None) -> None:
        """Rebuild per-row tensors after rows joined (and choose theirs first tokens) or left."""
        device = self.runtime.device
        if joined:
            count = len(joined)
            self._last = torch.cat(
                [self._last, torch.zeros(count, dtype=torch.long, device=device)]
            )
            self._out = torch.cat(
                [self._out, torch.zeros(count, self._width, dtype=torch.long, device=device)]
            )
            self._stopped_at = torch.cat(
                [self._stopped_at, torch.full((count,), -1, dtype=torch.long, device=device)]
            )
            for row in joined:
                self._stop_slot(row.sampling.stops)
        rows = self._rows
        self._lengths = torch.tensor([r.length for r in rows], dtype=torch.long, device=device)
        self._starts = torch.tensor([r.start for r in rows], dtype=torch.long, device=device)
        self._steps = torch.tensor([r.steps for r in rows], dtype=torch.long, device=device)
        self._stop_index = torch.tensor(
            [self._stop_sets[r.sampling.stops] for r in rows], dtype=torch.long, device=device
        )
        self._min_new = torch.tensor(
            [r.sampling.min_new_tokens for r in rows], dtype=torch.long, device=device
        )
        self._params = None
        if rows:
            uniforms = torch.stack([r.uniforms for r in rows if r.uniforms is not None])
            self._params = SamplingTensors.build(
                [r.sampling for r in rows], uniforms, self.runtime.vocab_size, device
            )
        if joined and logits is not None:
            self._choose(logits, slice(len(rows) - len(joined), len(rows)))

    def _stop_slot(self, stops: StopTokens) -> None:
        if stops in self._stop_sets:
            return
        ids = sorted(i for i in stops.ids if i < self.runtime.vocab_size)
        line = torch.zeros(1, self.runtime.vocab_size, dtype=torch.bool)
        line[0, ids] = True
        self._stop_sets[stops] = len(self._stop_sets)
        self._stop_ids.append(torch.tensor(ids, dtype=torch.long, device=self.runtime.device))
        table = torch.cat([self._stop_table.cpu(), line])
        self._stop_table = table.to(self.runtime.device)


def _uniforms(seed: int, count: int) -> torch.Tensor:
    """A row's random numbers, one per step, from its own generator."""
    rng = random.Random(seed)
    return torch.tensor([rng.random() for _ in range(count)], dtype=torch.float32)
