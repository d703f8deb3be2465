"""What batch invariance's rule 3 (attention never on its one-query path) costs one request: W1 (prompt
64 -> 64 new tokens, beam 5, step engine) on a package, alternating in one process between the scheduler
as it is (MIN_SLOTS 2) and with the one-query path allowed (MIN_SLOTS 1: not batch-invariant), 8 rounds;
prints both medians and the paired ratio (in one process, so the machine's drift mostly cancels).

usage: python scripts/w1-attention-path.py bench-work/biogpt-base/package-int8
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import ortgen.runtime.engine_decoder as engine_decoder
from ortgen.runtime.generator import Generator

generator = Generator.load(sys.argv[1])
prompt = [2] + [int(t) for t in np.random.default_rng(0).integers(4, 42384, size=63)]
options = dict(num_beams=5, max_new_tokens=64, min_new_tokens=64, backend="engine")
generator.generate(input_ids=[prompt], **options)
seconds: dict[int, list[float]] = {1: [], 2: []}
for round_ in range(8):
    for slots in ((1, 2) if round_ % 2 else (2, 1)):
        engine_decoder.MIN_SLOTS = slots
        started = time.perf_counter()
        generator.generate(input_ids=[prompt], **options)
        seconds[slots].append(time.perf_counter() - started)
ratios = [b / a for a, b in zip(seconds[1], seconds[2])]
print(f"{sys.argv[1]}: one-query path allowed {statistics.median(seconds[1]):.3f} s, never (as shipped) "
      f"{statistics.median(seconds[2]):.3f} s; paired change {(statistics.median(ratios) - 1) * 100:+.1f}% "
      f"(rounds {(min(ratios) - 1) * 100:+.1f}% to {(max(ratios) - 1) * 100:+.1f}%)")
