"""HNSW's search breadth (ef): what docs/rag.md states and the 1M-passage measurement chose."""

from __future__ import annotations

from ortgen.rag.dense import EF_MAX, search_ef


def test_ef_grows_with_the_index_and_with_k():
    assert search_ef(10, passages=1_000) == search_ef(10, passages=100_000) == 512
    assert search_ef(10, passages=500_000) == 1344
    assert search_ef(10, passages=1_000_000) == 2038, "recall@10 0.9955 at ef 2048 on 1M passages"
    sizes = [10_000, 200_000, 400_000, 800_000, 3_000_000]
    assert [search_ef(10, passages=n) for n in sizes] == sorted(search_ef(10, passages=n) for n in sizes)
    assert search_ef(100, passages=10_000) == 3200, "32 per result asked"


def test_a_filter_widens_the_search_up_to_the_cap():
    assert search_ef(10, 0.5, passages=10_000) == 1024
    assert search_ef(10, 0.001, passages=1_000_000) == EF_MAX
