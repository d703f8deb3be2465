"""`ortgen rag bench` runs and reports every system and ratio (slow: ~2 min on 2 cores; pytest -m slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ortgen.cli import main


@pytest.mark.slow
def test_rag_bench_reports_speed_and_quality(tmp_path: Path, capsys):
    assert main(["rag", "bench", "--documents", "20", "--workdir", str(tmp_path / "work"),
                 "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "rag-indexing.json").read_text())
    speed = result["speed"]
    assert set(speed["passages_per_s"]) == {
        "sentence-transformers (torch, float32)", "ortgen float32", "ortgen int8",
        "ortgen rag index, float32 (end to end)", "ortgen rag index, int8 (end to end)"}
    assert speed["vs_sentence_transformers"]["sentence-transformers (torch, float32)"] == 1.0
    assert speed["cosine_vs_sentence_transformers"]["float32"]["min_cosine"] > 0.9999
    runs = result["quality"]["runs"]
    assert runs["float32 embedder, client BM25"]["hybrid"]["all"]["recall@5"] > 0.8
    assert "| ortgen int8 |" in capsys.readouterr().out
