"""The continuous batch: rows that join late, leave early or are dropped get exactly what a
run of their own gives, and a row's random numbers are its own."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bot.generation.batch import JOIN_AFTER_STEPS, DecodeBatch, Row, Runtime
from bot.generation.sampling import RowSampling, StopTokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 300
EOS = 3


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=64, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=128, eos_token_id=EOS
    )
    model = GPT2LMHeadModel(config).eval()
    return Runtime("random gpt2", model, torch.device("cpu"), torch.float32, 128, VOCAB)


def _greedy(max_new: int) -> RowSampling:
    return RowSampling(
        do_sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        min_new_tokens=0,
        max_new_tokens=max_new,
        stops=StopTokens(frozenset({EOS})),
    )


def _sampled(max_new: int, temperature: float = 1.0) -> RowSampling:
    return RowSampling(
        do_sample=True,
        temperature=temperature,
        top_k=50,
        top_p=0.95,
        min_new_tokens=max_new,  # never stop early: every row samples max_new tokens
        max_new_tokens=max_new,
        stops=StopTokens(frozenset({EOS})),
    )


def _lone_greedy(runtime: Runtime, prompt: list[int], max_new: int) -> list[int]:
    """What transformers' own generate() writes for ``prompt`` alone."""
    with torch.inference_mode():
        out = runtime.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    new = out[0, len(prompt) :].tolist()
    return new[: new.index(EOS)] if EOS in new else new


def _run(batch: DecodeBatch, schedule: dict[int, list[Row]]) -> list[Row]:
    """Step ``batch``, adding ``schedule[k]`` before step k, until every row is done."""
    done: list[Row] = []
    step = 0
    while step <= max(schedule) or batch.rows:
        batch.add(schedule.get(step, []))
        done += batch.step()
        step += 1
    return done


def test_rows_joining_and_leaving_at_any_step_get_what_generate_gives_alone(
    runtime: Runtime,
) -> None:
    prompts = [[5, 6, 7], [9], [10, 11, 12, 13, 14, 15, 16], [20, 21], [30], [40, 41, 42]]
    lengths = [20, 3, 12, 20, 6, 9]
    rows = [
        Row(prompt=p, sampling=_greedy(n), seed=0) for p, n in zip(prompts, lengths, strict=True)
    ]
    # Three slots for six rows: later rows wait for a slot, then join mid-flight.
    batch = DecodeBatch(runtime, capacity=3, max_new_tokens=20, sync_every=1)
    done = _run(batch, {0: rows[:2], 2: rows[2:4], 5: rows[4:]})
    assert sorted(map(id, done)) == sorted(map(id, rows))
    for row, prompt, length in zip(rows, prompts, lengths, strict=True):
        assert row.tokens == _lone_greedy(runtime, prompt, length), prompt


def test_a_dropped_row_frees_its_slot_and_the_others_are_unaffected(runtime: Runtime) -> None:
    keep = [Row(prompt=[7, 8, 9], sampling=_greedy(15), seed=0) for _ in range(2)]
    dropped = Row(prompt=[50, 51], sampling=_greedy(15), seed=0)
    late = Row(prompt=[60], sampling=_greedy(10), seed=0)
    batch = DecodeBatch(runtime, capacity=3, max_new_tokens=15, sync_every=1)
    batch.add([keep[0], dropped, keep[1]])
    finished = batch.step() + batch.step()
    batch.discard(lambda row: row is dropped)
    assert batch.rows == 2
    batch.add([late])  # takes the freed slot at once
    finished += _run(batch, {0: []})
    assert dropped not in finished
    assert all(row.tokens == _lone_greedy(runtime, [7, 8, 9], 15) for row in keep)
    assert late.tokens == _lone_greedy(runtime, [60], 10)


def test_a_sampled_row_depends_on_its_seed_not_on_its_batch_mates(runtime: Runtime) -> None:
    def sample(seeds: list[int], temperatures: list[float]) -> list[list[int]]:
        rows = [
            Row(prompt=[11, 12], sampling=_sampled(12, t), seed=s)
            for s, t in zip(seeds, temperatures, strict=True)
        ]
        _run(DecodeBatch(runtime, capacity=8, max_new_tokens=12, sync_every=1), {0: rows})
        return [row.tokens for row in rows]

    alone = sample([7], [1.0])[0]
    crowded = sample([1, 7, 2, 3], [0.5, 1.0, 2.0, 1.0])
    assert crowded[1] == alone
    # an untrained model's next token is spread over the vocabulary: other seeds differ
    assert crowded[0] != alone and crowded[3] != alone


def test_rows_stop_at_their_stop_token_and_never_include_it(runtime: Runtime) -> None:
    probe = Row(prompt=[70, 71], sampling=_greedy(12), seed=0)
    _run(DecodeBatch(runtime, capacity=1, max_new_tokens=12, sync_every=1), {0: [probe]})
    # Make the third greedy token a stop token: the row must end right before it.
    stop_at = probe.tokens[2]
    sampling = RowSampling(
        do_sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        min_new_tokens=0,
        max_new_tokens=12,
        stops=StopTokens(frozenset({stop_at})),
    )
    row = Row(prompt=[70, 71], sampling=sampling, seed=0)
    batch = DecodeBatch(runtime, capacity=2, max_new_tokens=12, sync_every=4)  # GPU cadence
    _run(batch, {0: [row]})
    first = probe.tokens.index(stop_at)
    assert row.tokens == probe.tokens[:first]


def test_a_row_cannot_stop_before_its_min_new_tokens(runtime: Runtime) -> None:
    probe = Row(prompt=[70, 71], sampling=_greedy(12), seed=0)
    _run(DecodeBatch(runtime, capacity=1, max_new_tokens=12, sync_every=1), {0: [probe]})
    stop_at = probe.tokens[1]  # greedy would stop after one token
    sampling = RowSampling(
        do_sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        min_new_tokens=5,
        max_new_tokens=12,
        stops=StopTokens(frozenset({stop_at})),
    )
    row = Row(prompt=[70, 71], sampling=sampling, seed=0)
    _run(DecodeBatch(runtime, capacity=2, max_new_tokens=12, sync_every=1), {0: [row]})
    with torch.inference_mode():
        out = runtime.model.generate(
            torch.tensor([[70, 71]]),
            attention_mask=torch.ones(1, 2, dtype=torch.long),
            max_new_tokens=12,
            min_new_tokens=5,
            do_sample=False,
            eos_token_id=stop_at,
            pad_token_id=stop_at,
        )
    expected = out[0, 2:].tolist()
    if stop_at in expected:
        expected = expected[: expected.index(stop_at)]
    assert len(row.tokens) >= 5
    assert row.tokens == expected


def test_rows_arriving_while_others_run_are_prefilled_together_within_a_few_steps(
    runtime: Runtime,
) -> None:
    batch = DecodeBatch(runtime, capacity=4, max_new_tokens=40, sync_every=1)
    batch.add([Row([5, 6, 7], _sampled(40), seed=1)])
    batch.step()
    first, second = Row([8, 9], _sampled(10), seed=2), Row([10], _sampled(10), seed=3)
    batch.add([first])
    batch.step()
    batch.add([second])
    for _ in range(JOIN_AFTER_STEPS - 1):
        batch.step()
    assert first.steps == second.steps == 0  # still waiting, the running row went on
    batch.step()
    assert first.steps == second.steps > 0  # joined in one prefill, at the same step


def test_rows_that_fill_the_free_slots_join_at_the_next_step(runtime: Runtime) -> None:
    batch = DecodeBatch(runtime, capacity=2, max_new_tokens=40, sync_every=1)
    batch.add([Row([5, 6, 7], _sampled(40), seed=1)])
    batch.step()
    joining = Row([8, 9], _sampled(10), seed=2)
    batch.add([joining])
    batch.step()
    assert joining.steps > 0


def test_an_idle_batch_admits_a_row_at_the_next_step(runtime: Runtime) -> None:
    batch = DecodeBatch(runtime, capacity=4, max_new_tokens=40, sync_every=1)
    row = Row([5, 6, 7], _sampled(10), seed=1)
    batch.add([row])
    batch.step()
    assert row.steps > 0
