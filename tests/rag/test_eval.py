"""`ortgen eval` on a generated PubMedQA-format file of 200 items: scores equal to scikit-learn's on the
per-item verdicts, the three context modes (gold, retrieved from an index, none), float32 and int8 in one
report with McNemar's paired test (checked against scipy), a run killed with SIGKILL and resumed with no
item lost or answered twice, and the errors a user meets."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ortgen.cli import main
from ortgen.evaluate.pubmedqa import LABELS, load_items

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="the reference scores (scikit-learn, with lm-eval)")
scipy_stats = pytest.importorskip("scipy.stats", reason="the reference paired test")

DRUGS = ["aspirin", "metformin", "warfarin", "atorvastatin", "lisinopril", "omeprazole", "amoxicillin", "insulin"]
OUTCOMES = ["stroke", "mortality", "glucose output", "bleeding", "blood pressure", "infection", "fracture"]
FINDINGS = {"yes": "significantly reduced", "no": "did not change", "maybe": "may have reduced"}


def _items(n: int, seed: int = 0) -> dict[str, dict]:
    """PubMedQA's layout: PMID -> QUESTION, CONTEXTS, LONG_ANSWER, final_decision (and other fields)."""
    rng = random.Random(seed)
    items = {}
    for i in range(n):
        drug, outcome, label = rng.choice(DRUGS), rng.choice(OUTCOMES), rng.choice(LABELS)
        cohort = 40 + 7 * i
        items[str(21000000 + i)] = {
            "QUESTION": f"Does {drug} reduce {outcome} in cohort {cohort}?",
            "CONTEXTS": [f"In a randomised trial of {cohort} adults, {drug} {FINDINGS[label]} {outcome} compared with "
                         "placebo.", f"Follow-up lasted {rng.randint(6, 60)} months."],
            "LABELS": ["RESULTS", "METHODS"], "MESHES": [], "YEAR": "2019",
            "LONG_ANSWER": f"{drug.capitalize()} {FINDINGS[label]} {outcome}.", "final_decision": label}
    return items


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pqa") / "ori_pqal.json"
    path.write_text(json.dumps(_items(200)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def packages(zoo) -> dict[str, Path]:
    return {w: zoo.trained_package("biogpt", w) for w in ("float32", "int8")}


def _run(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def _rows(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"items-{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def _reference(rows: list[dict]) -> tuple[float, float]:
    gold = [r["gold"] for r in rows]
    verdicts = [r["verdict"] or "none" for r in rows]
    labels = [label for label in LABELS if label in gold or label in verdicts]
    return (sklearn_metrics.accuracy_score(gold, verdicts),
            sklearn_metrics.f1_score(gold, verdicts, labels=labels, average="macro", zero_division=0))


def test_gold_contexts_float32_and_int8_in_one_report_scored_as_scikit_learn_scores_them(
        packages, data, tmp_path, capsys):
    out = tmp_path / "gold"
    report = _run(capsys, str(packages["float32"]), str(packages["int8"]), str(data), "--out", str(out))
    names = [s["package"] for s in report["packages"]]
    assert names == ["biogpt-trained-float32", "biogpt-trained-int8"]
    items = load_items(data)
    for summary in report["packages"]:
        rows = _rows(out, summary["package"])
        assert [r["id"] for r in rows] == [item.item_id for item in items], "every item once, in file order"
        assert all(r["verdict"] in LABELS for r in rows), "scored verdicts are always one of the labels"
        assert len({r["verdict"] for r in rows}) >= 2, "the model must not answer every item alike"
        acc, f1 = _reference(rows)
        assert summary["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert summary["macro_f1"] == pytest.approx(f1, abs=1e-12)
        assert sum(sum(row.values()) for row in summary["confusion"].values()) == 200
        assert sum(summary["confusion"][g][g] for g in LABELS) == round(acc * 200)
        first = rows[0]
        item = items[0]
        assert first["gold"] == item.gold and first["verdict_by"] == "score" and set(first["scores"]) == set(LABELS)
        assert item.contexts[0].lower()[:40] in first["prompt"].lower(), "mode gold: the item's own contexts"
    (paired,) = report["paired"]
    a, b = (_rows(out, n) for n in names)
    only_first = sum(x["correct"] and not y["correct"] for x, y in zip(a, b))
    only_second = sum(y["correct"] and not x["correct"] for x, y in zip(a, b))
    assert (paired["only_first_right"], paired["only_second_right"]) == (only_first, only_second)
    expected = 1.0 if only_first + only_second == 0 else scipy_stats.binomtest(
        only_first, only_first + only_second, 0.5).pvalue
    assert paired["p_value"] == pytest.approx(expected, rel=1e-9)
    assert (out / "report.png").stat().st_size > 0 and "McNemar" in (out / "report.md").read_text()


def test_no_context_and_retrieved_contexts_with_retrieval_recall(packages, data, embedder_dir, tmp_path, capsys):
    none = _run(capsys, str(packages["float32"]), str(data), "--mode", "none", "--out", str(tmp_path / "none"))
    rows = _rows(tmp_path / "none", none["packages"][0]["package"])
    assert all(r["prompt"].rstrip().endswith("context:") for r in rows), "mode none: no context in the prompt"
    assert none["packages"][0]["accuracy"] == pytest.approx(_reference(rows)[0], abs=1e-12)

    index = tmp_path / "idx"  # the data file itself is a document source: one document per item, its contexts
    assert main(["rag", "index", str(data), "-o", str(index), "--embedder", str(embedder_dir)]) == 0
    capsys.readouterr()
    report = _run(capsys, str(packages["float32"]), str(data), "--mode", "index", "--index", str(index), "-k", "2",
                  "--out", str(tmp_path / "index"))
    summary = report["packages"][0]
    rows = _rows(tmp_path / "index", summary["package"])
    assert all(len(r["retrieved"]) == 2 for r in rows)
    recall = sum(r["id"] in r["retrieved"] for r in rows) / len(rows)
    assert summary["retrieval_recall"] == pytest.approx(recall, abs=1e-12)
    assert recall >= 0.8, "each question names its cohort size: hybrid search mostly finds its abstract"
    acc, f1 = _reference(rows)
    assert (summary["accuracy"], summary["macro_f1"]) == (pytest.approx(acc), pytest.approx(f1))


def test_a_run_killed_with_sigkill_resumes_without_losing_or_repeating_an_item(packages, data, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ortgen", "eval", str(packages["float32"]), str(data), "--out", str(out),
               "--verdict", "generate", "--max-new-tokens", "24", "--num-beams", "2", "--concurrency", "4",
               "--no-progress", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    items_file = out / "items-biogpt-trained-float32.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not items_file.exists() or items_file.read_bytes().count(b"\n") < 30):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    before = items_file.read_bytes()
    answered = before.count(b"\n")
    assert 30 <= answered < 200, f"the kill must land mid-run ({answered} items written)"
    with open(items_file, "ab") as f:  # as if killed halfway through writing a line
        f.write(b'{"id": "2100')
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert f"{answered} of 200 items already answered" in result.stderr
    rows = [json.loads(line) for line in items_file.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(_items(200)), "each item exactly once"
    assert items_file.read_bytes().startswith(before), "answers written before the kill are kept as they were"
    assert json.loads(result.stdout)["packages"][0]["items"] == 200


def test_bad_data_and_options_are_refused_with_what_is_wrong(packages, data, tmp_path, capsys):
    pkg = str(packages["float32"])

    def error(*args: str) -> str:
        assert main(["eval", *args, "--no-progress"]) == 1
        return capsys.readouterr().err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "QUESTION": "q?", "CONTEXTS": ["c"], "final_decision": "perhaps"}) + "\n")
    assert "final_decision must be one of yes, no, maybe, got 'perhaps'" in error(pkg, str(bad))
    bad.write_text(json.dumps({"id": "1", "QUESTION": "q?", "CONTEXTS": ["c"]}) + "\n")
    assert "line 1: no final_decision" in error(pkg, str(bad))
    bad.write_text("\n".join(json.dumps({"id": "1", "QUESTION": "q?", "CONTEXTS": ["c"], "final_decision": "yes"})
                             for _ in range(2)) + "\n")
    assert "the id '1' appears twice" in error(pkg, str(bad))
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    assert "one object mapping ids to items" in error(pkg, str(listed))
    assert "mode 'index' needs --index" in error(pkg, str(data), "--mode", "index")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in list(_items(5).items())))
    out = tmp_path / "o"
    assert main(["eval", pkg, str(small), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    message = error(pkg, str(small), "--out", str(out), "--mode", "none")
    assert "holds another evaluation (config differ)" in message and "--restart" in message
