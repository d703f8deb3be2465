#!/usr/bin/env bash
# The single-request W1 time (BioGPT-base shape, prompt 64 -> 64 new tokens, beam 5, step engine) of this
# checkout against another revision's, on this machine, for each precision given (default float32): each
# revision exports its own packages (the engine graph can change between revisions), then the two run
# alternately, ROUNDS rounds (default 3) of a median of three, and the token ids of the two are compared;
# the last line per precision is the median of the rounds' changes (a shared VM varies by +-10% a round).
# usage: [ROUNDS=N] bash scripts/w1-against-revision.sh REVISION [WEIGHTS ...]
#   e.g. bash scripts/w1-against-revision.sh b8f3e63            (the engine before continuous batching)
#        bash scripts/w1-against-revision.sh 9e54865 int8 int4  (before batch invariance)
set -euo pipefail
cd "$(dirname "$0")/.."
revision="$1"
shift
weights=("${@:-float32}")
other="$(mktemp -d)/ortgen-$revision"
git worktree add -f "$other" "$revision" >/dev/null
trap 'git worktree remove --force "$other"' EXIT
. .venv/bin/activate
for w in "${weights[@]}"; do
  ortgen -q bench --models biogpt-base --workloads W1 --systems ortgen-engine --weights "$w" --repeats 1 \
    --no-memory --workdir bench-work --out "bench-work/w1-this-$w" >/dev/null
  PYTHONPATH="$other/src" python -m ortgen -q bench --models biogpt-base --workloads W1 --systems ortgen-engine \
    --weights "$w" --repeats 1 --no-memory --workdir "bench-work/rev-$revision" --out "bench-work/w1-$revision-$w" \
    >/dev/null
done
cat > bench-work/w1.py <<'PY'
import json, statistics, sys, time
import numpy as np
from ortgen.runtime.generator import Generator
generator = Generator.load(sys.argv[1])
prompt = [2] + [int(t) for t in np.random.default_rng(0).integers(4, 42384, size=63)]
options = dict(num_beams=5, max_new_tokens=64, min_new_tokens=64, backend="engine")
first = generator.generate(input_ids=[prompt], **options)
times = []
for _ in range(3):
    started = time.perf_counter()
    generator.generate(input_ids=[prompt], **options)
    times.append(time.perf_counter() - started)
print(json.dumps({"seconds": statistics.median(times), "tokens": first.sequences[0][0].token_ids}))
PY
rounds="${ROUNDS:-3}"
for w in "${weights[@]}"; do
  changes=()
  for round in $(seq 1 "$rounds"); do
    theirs=$(PYTHONPATH="$other/src" python bench-work/w1.py "bench-work/rev-$revision/biogpt-base/package-$w")
    ours=$(python bench-work/w1.py "bench-work/biogpt-base/package-$w")
    python - "$theirs" "$ours" <<PY
import json, sys
theirs, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = "same tokens" if theirs["tokens"] == ours["tokens"] else "tokens differ"
print(f"$w round $round: $revision {theirs['seconds']:.3f} s, this checkout {ours['seconds']:.3f} s "
      f"({(ours['seconds'] / theirs['seconds'] - 1) * 100:+.1f}%), {same}")
PY
    changes+=("$(python -c "import json,sys; print(json.loads(sys.argv[2])['seconds'] / json.loads(sys.argv[1])['seconds'])" "$theirs" "$ours")")
  done
  python -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'$w: median change over {len(r)} rounds {(statistics.median(r) - 1) * 100:+.1f}% (range {(min(r) - 1) * 100:+.1f}% to {(max(r) - 1) * 100:+.1f}%)')" "${changes[@]}"
done
