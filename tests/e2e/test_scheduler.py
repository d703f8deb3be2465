"""The scheduler's API: streaming (sync and asyncio), cancellation, back-pressure and the KV budget.

Runs on the embedded demo model (built here, no torch needed) and the tiny test models.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ortgen.errors import QueueFullError, RequestCancelledError, RequestTooLargeError
from ortgen.runtime.generator import Generator
from ortgen.runtime.scheduler import SchedulerLimits

PROMPT = "Aspirin reduces the risk of"

STREAMED = [
    dict(max_new_tokens=16),
    dict(max_new_tokens=16, do_sample=True, num_return_sequences=3, seed=4),
    dict(max_new_tokens=12, num_beams=4, num_return_sequences=2),
    dict(max_new_tokens=12, num_beams=3, do_sample=True, seed=2),
    dict(max_new_tokens=12, num_beams=2, stop_strings=["the"]),
]


def _collect(deltas, n: int) -> tuple[list[str], list[list[int]], list[list[bool]]]:
    texts, tokens, finished = [""] * n, [[] for _ in range(n)], [[] for _ in range(n)]
    for delta in deltas:
        texts[delta.index] += delta.text
        tokens[delta.index] += delta.token_ids
        finished[delta.index].append(delta.finished)
    return texts, tokens, finished


@pytest.mark.parametrize("arch", ["biogpt", "gpt2"])
@pytest.mark.parametrize("options", STREAMED, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_streamed_deltas_concatenate_to_the_final_text(zoo, arch, options):
    with Generator.load(zoo.package(arch)) as generator:
        handle = generator.submit(PROMPT, **options)
        n = handle.num_sequences
        texts, tokens, finished = _collect(handle, n)
        output = handle.result()
        assert len(output.sequences) == n
        for i, sequence in enumerate(output.sequences):
            assert texts[i] == sequence.text, f"index {i}"
            assert tokens[i] == sequence.token_ids, f"index {i}"
            assert finished[i][-1] and finished[i].count(True) == 1, "one final delta per sequence, last"
        # the same request through generate() gives the same sequences
        again = generator.generate(PROMPT, **options)
        assert again.texts[0] == output.texts


def test_streaming_greedy_and_beam_search_deliver_text_before_the_end(zoo):
    """A model fitted to the demo corpus (it writes words): greedy streams as it goes, and beam search
    streams what every beam agrees on as it settles, before the search ends."""
    with Generator.load(zoo.trained_package("biogpt")) as generator:
        for options in (dict(max_new_tokens=20), dict(max_new_tokens=20, num_beams=4)):
            handle = generator.submit(PROMPT, **options)
            deltas = list(handle)
            early = [d for d in deltas if d.text and not d.finished]
            assert early, f"{options}: no text before the final delta"
            assert "".join(d.text for d in deltas) == handle.result().texts[0]


def test_asyncio_streaming_and_await(zoo):
    async def main(generator: Generator):
        handles = [generator.submit(PROMPT, max_new_tokens=10, num_beams=n) for n in (1, 2, 3)]
        streamed = []
        for handle in handles:
            text = ""
            async for delta in handle:
                text += delta.text
            streamed.append(text)
        outputs = await asyncio.gather(*handles)
        return streamed, [o.texts[0] for o in outputs]

    with Generator.load(zoo.package("biogpt")) as generator:
        streamed, final = asyncio.run(main(generator))
    assert streamed == final


def test_cancel_frees_the_row_at_the_next_step(demo_package):
    limits = SchedulerLimits(max_requests=2)
    with Generator.load(demo_package, limits=limits) as generator:
        scheduler = generator.scheduler
        long = generator.submit(PROMPT, max_new_tokens=200, bad_words_ids=[[2]])  # no EOS: runs 200 steps
        deltas = iter(long)
        next(deltas)  # it is decoding
        steps_at_cancel = scheduler.stats.steps
        long.cancel()
        with pytest.raises(RequestCancelledError, match="was cancelled"):
            long.result(timeout=10)
        deadline = time.monotonic() + 10
        while scheduler.pool.free_rows < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert scheduler.pool.free_rows == 2 and scheduler.reserved_bytes == 0
        assert scheduler.stats.steps <= steps_at_cancel + 1, "freed at the next step"
        assert scheduler.stats.cancelled == 1
        # the scheduler goes on serving
        assert generator.generate(PROMPT, max_new_tokens=3).sequences[0][0].token_ids


def test_a_full_queue_refuses_and_the_accepted_requests_complete(demo_package):
    limits = SchedulerLimits(max_requests=1, max_queue=2)
    with Generator.load(demo_package, limits=limits) as generator:
        handles = [generator.submit(PROMPT, max_new_tokens=20, bad_words_ids=[[2]])]
        deadline = time.monotonic() + 10
        while generator.scheduler.running == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        handles += [generator.submit(PROMPT, max_new_tokens=5) for _ in range(2)]  # wait in the queue
        with pytest.raises(QueueFullError, match=r"the wait queue is full \(2 requests waiting\)"):
            generator.submit(PROMPT, max_new_tokens=5)
        assert [len(h.result(timeout=30).sequences[0].token_ids) for h in handles][0] == 20
        assert generator.scheduler.stats.rejected == 1


@pytest.mark.parametrize("limits, options, message", [
    (SchedulerLimits(kv_budget=200 * 1024), dict(max_new_tokens=150, num_beams=2),
     r"needs 0\.3 MiB of KV cache \(30\d positions x 1024 bytes\); the KV budget is 0\.2 MiB"),
    (SchedulerLimits(row_capacity=100), dict(max_new_tokens=40, num_beams=3),
     r"needs 12\d positions of KV cache .* a request may use at most 100 \(row_capacity\)"),
    (SchedulerLimits(max_sequences=4), dict(max_new_tokens=4, num_beams=5),
     r"runs 5 sequences side by side .* at most 4 at once \(max_sequences\)"),
])
def test_a_request_that_can_never_fit_is_refused_with_the_numbers(demo_package, limits, options, message):
    with Generator.load(demo_package, limits=limits) as generator:
        with pytest.raises(RequestTooLargeError, match=message):
            generator.submit(PROMPT, **options)
        with pytest.raises(RequestTooLargeError, match=message):
            generator.generate(PROMPT, **options)


def test_the_kv_budget_is_respected_measured_in_resident_memory(demo_package):
    """Each request reserves prompt + max_new_tokens x width positions (1 KiB each on this model); with
    room for three, six requests run at most three at a time, and the pool's resident memory (read
    from /proc/self/pagemap) stays within the budget plus page rounding, then goes back to zero."""
    per_request = (8 + 200) * 1024  # an 8-token prompt + 200 new tokens, 1 KiB per position
    budget = 3 * per_request + 1024
    limits = SchedulerLimits(kv_budget=budget)
    with Generator.load(demo_package, limits=limits) as generator:
        scheduler = generator.scheduler
        if scheduler.pool.resident_bytes() is None:
            pytest.skip("needs Linux's /proc/self/pagemap")
        prompt = generator.encode([PROMPT])[0]
        assert len(prompt) == 8
        handles = [generator.submit(input_ids=prompt, max_new_tokens=200, bad_words_ids=[[2]]) for _ in range(6)]
        rounding = 2 * 2 * 4 * 4096  # per row: 2 layers x keys and values x 4 heads x one partly used page
        peak_reserved = peak_resident = peak_running = 0
        while not all(h.done for h in handles):
            peak_reserved = max(peak_reserved, scheduler.reserved_bytes)
            peak_running = max(peak_running, scheduler.running)
            peak_resident = max(peak_resident, scheduler.pool.resident_bytes() or 0)
            time.sleep(0.002)
        assert all(len(h.result().sequences[0].token_ids) == 200 for h in handles)
        assert peak_running == 3 and peak_reserved <= budget
        assert per_request < peak_resident <= budget + 3 * rounding
        assert scheduler.pool.resident_bytes() == 0, "rows given back return their memory"


def test_close_fails_what_is_waiting_and_stops_the_thread(demo_package):
    generator = Generator.load(demo_package, limits=SchedulerLimits(max_requests=1))
    handles = [generator.submit(PROMPT, max_new_tokens=100, bad_words_ids=[[2]]) for _ in range(3)]
    generator.close()
    for handle in handles:
        with pytest.raises(RequestCancelledError):
            handle.result(timeout=10)
