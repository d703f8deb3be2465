"""Batch invariance: a request's tokens must not depend on what else runs in the same step.

Every linear layer of the step engine multiplies the step's packed tokens ``[T, hidden]`` by a
weight (each token one row of the product), and attention multiplies each cache row's new queries
by its keys (each query one row). For a row's result to be the same whatever else is multiplied
with it, the kernel must take the same code path for it every time. ONNX Runtime 1.32's CPU
kernels (MLAS), read in its sources and measured through the engine's real graph
(``tests/parity/test_batch_invariance.py``, which names the offending row counts when it fails):

- The products are cut into ranges of 128 rows (MLAS's M stride; also the unit of its threading).
  A range of exactly ONE row goes through a single-row kernel that adds its partial sums in another
  order: ``SQ4BitGemmM1Kernel*`` / ``MlasQ4Int8GemmM1Kernel*`` (MatMulNBits, 4-bit, AVX2), the M1
  routines of SGEMM (float32 attention scores), and, on AVX-512, the 1-row remainder of MatMulNBits'
  2-row tiles (``R1xC*`` beside ``R2xC*``: every odd row count). Rows in wider ranges or tiles do not
  depend on the count.
- Measured on this project's machines, as the count of rows M whose last row differs: AMD EPYC
  (AVX2), the engine's graph: float32, int8 and int4 at M = 129 and 257, int4 also at M = 1; an
  Intel Xeon (AVX-512 VNNI, issue 27's table, MatMulNBits alone): M = 1, 3, 5, 17 for int8 and int4.

GroupQueryAttention also has a one-query path: a call whose widest row has one new token (a step of
greedy decoding alone) is computed differently from the same query beside wider rows.

So ortgen keeps these rules, for every precision:

1. **Linear layers never see a range of one row; on AVX-512, never an odd count.** The scheduler
   pads the step's packed tokens with tokens that run through the linear layers and nowhere else
   (not laid out into any cache row, outputs never read), and the rows whose logits are projected
   likewise: to an even count where the CPU has AVX-512 (MatMulNBits' 2-row tiles), else only when
   the count would leave one row in a 128-row range (1, 129, 257, ...). Cost on AVX2: a row in 128
   steps at most; on AVX-512: one row when the count is odd.
2. **A prompt's chunks start on a fixed grid** (multiples of ``chunk_grid``: 128, or the prefill
   budget when smaller): a chunk's queries are then cut into the same ranges whatever budget its
   batch-mates left, and the last query of a prompt sits in a range of ``len(prompt) mod 128`` rows
   in every schedule. Decoding rows attend with their own width (beams, samples), which depends on
   the request alone.
3. **Attention always gets at least MIN_SLOTS query slots a row**, so it never takes its one-query
   path, and a decoding step alone equals the same step beside a prefill.
4. **Each search reads the step's output it would read alone**: best tokens (in-graph top-k and
   log-sum-exp) for greedy and beam search, whole logit rows for the rest, both fetched when a step
   mixes them (the two log-sum-exps differ in the last bits).

These hold for one configuration of the scheduler (its prefill budget, the thread count): a request
is bitwise the same whatever else runs, not across those settings.
"""

from __future__ import annotations

KERNEL_ROW_STRIDE = 128  # MLAS cuts products into ranges of this many rows
MIN_SLOTS = 2  # attention always runs on query rows of at least 2 slots: never its one-query (decoding) path


def chunk_grid(prefill_chunk: int) -> int:
    """Prompt chunks start on multiples of this: the kernel's row stride, or the whole per-step budget
    when that is smaller (then every chunk but the last of a prompt is exactly the budget)."""
    return max(1, min(KERNEL_ROW_STRIDE, prefill_chunk))


def cpu_has_avx512(cpuinfo: str | None = None) -> bool:
    """Does this CPU have AVX-512 (MLAS then runs MatMulNBits in 2-row tiles)? Read from /proc/cpuinfo;
    True where it cannot be read (even counts are invariant on every kernel path: the safe side)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return True
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return True if flags is None else "avx512f" in flags


ROW_MULTIPLE = 2 if cpu_has_avx512() else 1  # rule 1 on this machine's kernels


def padded_count(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (at least ``multiple``; 0 stays 0), and one more
    where that would leave a single row in the last of the kernels' 128-row ranges."""
    if n == 0:
        return 0
    count = max(multiple, -(-n // multiple) * multiple)
    if count % KERNEL_ROW_STRIDE == 1:
        count += 1
    return count
