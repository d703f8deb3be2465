#!/usr/bin/env bash
# The single-request W1 time (BioGPT-base shape, prompt 64 -> 64 new tokens, beam 5, step engine) of this
# checkout against another revision's, on this machine: each revision exports its own package (the engine
# graph changes between revisions), then the two run alternately, three rounds of a median of three.
# usage: bash scripts/w1-against-revision.sh REVISION   (e.g. b8f3e63, the engine before continuous batching)
set -euo pipefail
cd "$(dirname "$0")/.."
revision="$1"
other="$(mktemp -d)/ortgen-$revision"
git worktree add -f "$other" "$revision" >/dev/null
trap 'git worktree remove --force "$other"' EXIT
. .venv/bin/activate
ortgen -q bench --models biogpt-base --workloads W1 --systems ortgen-engine --weights float32 --repeats 1 \
  --no-memory --workdir bench-work --out bench-work/w1-this >/dev/null
PYTHONPATH="$other/src" python -m ortgen -q bench --models biogpt-base --workloads W1 --systems ortgen-engine \
  --weights float32 --repeats 1 --no-memory --workdir "bench-work/rev-$revision" --out "bench-work/w1-$revision" >/dev/null
cat > bench-work/w1.py <<'PY'
import statistics, sys, time
import numpy as np
from ortgen.runtime.generator import Generator
generator = Generator.load(sys.argv[1])
prompt = [2] + [int(t) for t in np.random.default_rng(0).integers(4, 42384, size=63)]
options = dict(num_beams=5, max_new_tokens=64, min_new_tokens=64, backend="engine")
generator.generate(input_ids=[prompt], **options)
times = []
for _ in range(3):
    started = time.perf_counter()
    generator.generate(input_ids=[prompt], **options)
    times.append(time.perf_counter() - started)
print(f"{statistics.median(times):.3f}")
PY
for round in 1 2 3; do
  theirs=$(PYTHONPATH="$other/src" python bench-work/w1.py "bench-work/rev-$revision/biogpt-base/package-float32")
  ours=$(python bench-work/w1.py bench-work/biogpt-base/package-float32)
  python -c "print(f'round $round: $revision {float(\"$theirs\"):.3f} s, this checkout {float(\"$ours\"):.3f} s ({(float(\"$ours\") / float(\"$theirs\") - 1) * 100:+.1f}%)')"
done
