"""The CLI verbs end to end, in-process: export-embedder, rag index/search/delete/info, and their --help."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ortgen.cli import build_parser, main


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "aspirin_note.txt").write_text("Aspirin irreversibly inhibits cyclooxygenase. It thins the blood.\n",
                                        encoding="utf-8")
    (d / "statins.md").write_text("# Statins\n\nStatins inhibit HMG-CoA reductase.\n", encoding="utf-8")
    (d / "pubmed.txt").write_text("PMID- 42\nTI  - KCNH2 and long QT.\nAB  - KCNH2 variants cause long QT syndrome "
                                  "type 2.\n", encoding="utf-8")
    (d / "records.jsonl").write_text(json.dumps({"id": "m1", "title": "Metformin", "text": "Metformin lowers "
                                                 "hepatic glucose output."}) + "\n", encoding="utf-8")
    (d / "latin1.txt").write_bytes("Caf\xe9".encode("latin-1"))
    return d


def test_export_index_search_delete(tmp_path: Path, docs: Path, model_dir: Path, capsys):
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert main(["export-embedder", str(model_dir), "-o", str(emb)]) == 0
    assert "384 dims, mean pooling, normalised" in capsys.readouterr().out

    assert main(["rag", "index", str(docs), "-o", str(idx), "--embedder", str(emb)]) == 0
    out = capsys.readouterr().out
    assert "4 documents" in out and "passages/s" in out
    assert "skipped      " in out and "latin1.txt: not UTF-8" in out  # reported at the end

    assert main(["rag", "index", str(docs), "-o", str(idx)]) == 0  # embedder from the index
    assert "0 embedded" in capsys.readouterr().out

    assert main(["rag", "search", str(idx), "Which gene causes long QT type 2?", "-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    top = result["passages"][0]
    assert (top["doc_id"], top["rank"]) == ("PMID:42", 1) and top["score"] > 0 and "KCNH2" in top["text"]

    assert main(["rag", "search", str(idx), "which statin reductase", "--mode", "bm25", "--doc", "statins.md"]) == 0
    assert "statins.md Statins" in capsys.readouterr().out

    assert main(["rag", "delete", str(idx), "--doc", "m1"]) == 0
    assert "deleted 1 passages" in capsys.readouterr().out
    assert main(["rag", "info", str(idx)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["passages"] == 3 and info["embedder"]["dims"] == 384


def test_bad_input_exits_with_a_message(tmp_path: Path, embedder_dir: Path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n', encoding="utf-8")
    assert main(["rag", "index", str(bad), "-o", str(tmp_path / "idx"), "--embedder", str(embedder_dir)]) == 1
    assert "bad.jsonl, line 2: not valid JSON" in capsys.readouterr().err
    assert main(["rag", "search", str(tmp_path / "nothing"), "q"]) == 1
    assert "is not an ortgen index" in capsys.readouterr().err
    assert main(["rag", "index", str(bad), "-o", str(tmp_path / "idx")]) == 1
    assert "a new index needs --embedder DIR" in capsys.readouterr().err


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_states_its_default():
    verbs = dict(_subparsers(build_parser()))
    parsers = [("export-embedder", verbs["export-embedder"])]
    parsers += [(f"rag {name}", p) for name, p in _subparsers(verbs["rag"])]
    assert {name for name, _ in parsers} >= {"rag index", "rag delete", "rag search", "rag info", "rag bench"}
    for name, parser in parsers:
        for action in parser._actions:
            if not action.option_strings or action.required or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and "default" in action.help, f"{name} {action.option_strings[0]}: {action.help!r}"
