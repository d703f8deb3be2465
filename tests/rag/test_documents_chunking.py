"""Loading documents (text, markdown, JSONL, MEDLINE), bad input, sharding, and chunking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ortgen.rag.chunking import ChunkingError, ChunkSettings, chunk_document, split_sentences
from ortgen.rag.documents import Document, DocumentError, LoadReport, Shard, load_documents

MEDLINE = """PMID- 31000001
TI  - Low-dose aspirin and colorectal cancer: a cohort
      study.
AB  - Daily aspirin at 75 mg reduced colorectal cancer incidence in
      long-term follow-up.
FAU - Doe, Jane

PMID- 31000002
TI  - BRCA1 carriers.
AB  - BRCA1 mutation carriers have a high lifetime risk.
"""


def _write(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "note.txt").write_text("Plain text note. Two sentences.\n", encoding="utf-8")
    (docs / "sub" / "guide.md").write_text("# Statin guide\n\nStatins **inhibit** [HMG-CoA](http://x) reductase.\n",
                                           encoding="utf-8")
    (docs / "records.jsonl").write_text(json.dumps({"id": "j1", "title": "T", "text": "Body one."}) + "\n\n"
                                        + json.dumps({"id": 7, "text": "Body two."}) + "\n", encoding="utf-8")
    (docs / "pubmed-export.txt").write_text(MEDLINE, encoding="utf-8")
    (docs / "ignored.csv").write_text("a,b\n", encoding="utf-8")
    return docs


def test_every_format_loads_with_stable_ids(tmp_path: Path):
    docs = {d.doc_id: d for d in load_documents([_write(tmp_path)])}
    assert sorted(docs) == ["7", "PMID:31000001", "PMID:31000002", "j1", "note.txt", "sub/guide.md"]
    assert docs["sub/guide.md"].title == "Statin guide"
    assert "Statins inhibit HMG-CoA reductase." in docs["sub/guide.md"].text  # markup and URL gone
    assert docs["PMID:31000001"].title == "Low-dose aspirin and colorectal cancer: a cohort study."
    assert docs["PMID:31000001"].text == ("Daily aspirin at 75 mg reduced colorectal cancer incidence in long-term "
                                          "follow-up.")
    assert docs["j1"].source.endswith("records.jsonl:1") and docs["7"].source.endswith("records.jsonl:3")


def test_markdown_emphasis_goes_and_words_with_underscores_or_stars_stay():
    from ortgen.rag.documents import markdown_to_text

    _, text = markdown_to_text("# Notes\n*Source: NIH guideline*, _see also_ **this** and ***that*** ~~old~~.\n"
                               "Keep snake_case_names, 5 * 3 = 15 and a*b as they are.\n")
    assert text == ("Notes.\nSource: NIH guideline, see also this and that old.\n"
                    "Keep snake_case_names, 5 * 3 = 15 and a*b as they are.")


def test_medline_lines_wrapped_after_a_hyphen_join_without_a_space(tmp_path: Path):
    path = tmp_path / "records.medline"
    path.write_text("PMID- 9\nTI  - Structure of the Pore-\n      region of the channel -\n      a review\n"
                    "AB  - The pore-forming sub-\n      unit (alpha) binds drugs.\n", encoding="utf-8")
    [doc] = load_documents([path])
    assert doc.title == "Structure of the Pore-region of the channel - a review"
    assert doc.text == "The pore-forming sub-unit (alpha) binds drugs."


def test_unreadable_and_non_utf8_files_are_skipped_and_reported(tmp_path: Path):
    docs = _write(tmp_path)
    (docs / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    report = LoadReport()
    loaded = load_documents([docs], report)
    assert "latin1.txt" not in {d.doc_id for d in loaded}
    assert [Path(p).name for p, _ in report.skipped] == ["latin1.txt"]
    assert "not UTF-8" in report.skipped[0][1]


def test_malformed_jsonl_line_is_named(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "broken"\n', encoding="utf-8")
    with pytest.raises(DocumentError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_documents([path])
    path.write_text('{"id": "a", "title": "no text"}\n', encoding="utf-8")
    with pytest.raises(DocumentError, match=r'line 1: "text" must be a string'):
        load_documents([path])


def test_duplicate_ids_and_missing_paths_are_errors(tmp_path: Path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', encoding="utf-8")
    with pytest.raises(DocumentError, match="document id 'a' appears twice"):
        load_documents([path])
    with pytest.raises(DocumentError, match="does not exist"):
        load_documents([tmp_path / "nowhere"])


def test_shards_are_deterministic_disjoint_and_complete():
    ids = [f"doc-{i}" for i in range(500)]
    shards = [Shard(k, 4) for k in range(1, 5)]
    members = [{d for d in ids if s.contains(d)} for s in shards]
    assert set().union(*members) == set(ids)
    assert sum(len(m) for m in members) == len(ids)  # disjoint
    assert all(60 < len(m) < 190 for m in members)  # roughly even
    assert Shard.parse("3/4") == Shard(3, 4) and Shard.parse("1/1").contains("anything")
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(DocumentError, match="--shard"):
            Shard.parse(bad)


def test_sentence_splitting_keeps_abbreviations_and_decimals():
    text = ("Aspirin (e.g. 75 mg) was given, as Smith et al. reported. Doses of 2.5 mg were used. "
            "Did it work? Yes!\n\nA new paragraph without a period")
    assert split_sentences(text) == [
        "Aspirin (e.g. 75 mg) was given, as Smith et al. reported.", "Doses of 2.5 mg were used.",
        "Did it work?", "Yes!", "A new paragraph without a period"]


def _doc(text: str) -> Document:
    return Document("d1", "Title", text, "test")


def test_chunks_respect_size_overlap_and_ids(embedder):
    sentences = [f"Sentence number {i} talks about protein kinase {i} in cells." for i in range(40)]
    settings = ChunkSettings(max_tokens=48, overlap_tokens=16)
    chunks = chunk_document(_doc(" ".join(sentences)), settings, embedder.count_tokens, embedder.token_offsets)
    assert len(chunks) > 5
    assert all(n <= 48 for n in embedder.count_tokens([c.text for c in chunks]))
    for before, after in zip(chunks, chunks[1:]):  # each chunk starts with the previous one's last sentence
        assert split_sentences(after.text)[0] == split_sentences(before.text)[-1]
    assert [c.number for c in chunks] == list(range(len(chunks)))
    assert chunks[0].chunk_id.startswith("d1#0-")
    again = chunk_document(_doc(" ".join(sentences)), settings, embedder.count_tokens, embedder.token_offsets)
    assert [c.chunk_id for c in again] == [c.chunk_id for c in chunks]  # stable
    changed = chunk_document(_doc(" ".join(sentences[:-1] + ["A different ending."])), settings,
                             embedder.count_tokens, embedder.token_offsets)
    assert changed[0].chunk_id == chunks[0].chunk_id and changed[-1].chunk_id != chunks[-1].chunk_id


def test_an_over_long_sentence_is_cut_on_token_bounds(embedder):
    words = " ".join(f"word{i}" for i in range(300))  # one sentence, far over the size
    chunks = chunk_document(_doc(words), ChunkSettings(max_tokens=64, overlap_tokens=0), embedder.count_tokens,
                            embedder.token_offsets)
    assert len(chunks) > 3
    assert all(n <= 64 for n in embedder.count_tokens([c.text for c in chunks]))
    assert " ".join(c.text for c in chunks).split() == words.split()  # nothing lost


def test_chunk_settings_are_checked():
    with pytest.raises(ChunkingError, match="exceeds what the embedder reads"):
        ChunkSettings(max_tokens=300).validate(256)
    with pytest.raises(ChunkingError, match="--overlap-tokens"):
        ChunkSettings(max_tokens=64, overlap_tokens=64).validate(256)
