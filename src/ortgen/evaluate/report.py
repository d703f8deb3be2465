"""The evaluation report: per package accuracy, macro-F1, confusion, retrieval recall; paired tests
between packages; written as report.json, report.md and report.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ortgen.evaluate.metrics import accuracy, confusion, macro_f1, mcnemar_exact, per_label_f1, wilson_interval
from ortgen.evaluate.pubmedqa import LABELS


def summarise(name: str, rows: Sequence[dict[str, Any]], seconds: float | None = None) -> dict[str, Any]:
    """One package's scores from its per-item rows."""
    gold = [r["gold"] for r in rows]
    verdicts = [r["verdict"] for r in rows]
    right = sum(r["correct"] for r in rows)
    summary: dict[str, Any] = {
        "package": name, "items": len(rows), "accuracy": accuracy(gold, verdicts),
        "accuracy_95ci": list(wilson_interval(right, len(rows))),
        "macro_f1": macro_f1(gold, verdicts, LABELS), "f1_per_label": per_label_f1(gold, verdicts, LABELS),
        "confusion": confusion(gold, verdicts, LABELS), "no_verdict": sum(v is None for v in verdicts),
        "errors": sum("error" in r for r in rows), "verdict_by": rows[0]["verdict_by"] if rows else None,
    }
    retrieved = [r for r in rows if "gold_retrieved" in r]
    if retrieved:
        summary["retrieval_recall"] = sum(r["gold_retrieved"] for r in retrieved) / len(retrieved)
    if seconds is not None:
        summary["seconds"] = round(seconds, 2)
    return summary


def paired_tests(runs: dict[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """McNemar's exact test of every package against the first, on the same items."""
    names = list(runs)
    tests = []
    for other in names[1:]:
        first = {r["id"]: r["correct"] for r in runs[names[0]]}
        second = {r["id"]: r["correct"] for r in runs[other]}
        ids = [i for i in first if i in second]
        test = mcnemar_exact([first[i] for i in ids], [second[i] for i in ids])
        tests.append({"first": names[0], "second": other, "items": len(ids), **test.to_dict()})
    return tests


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Data: `{report['data']}` ({report['items']} items), mode **{report['config']['mode']}**"
             + (f" (k = {report['config']['k']}, {report['config']['search_mode']} search)"
                if report["config"]["mode"] == "index" else "") + ".", "",
             "| package | verdict by | accuracy (95% CI) | macro-F1 | F1 yes / no / maybe | no verdict |"
             + (" retrieval recall |" if report["config"]["mode"] == "index" else ""),
             "|---|---|---:|---:|---|---:|" + ("---:|" if report["config"]["mode"] == "index" else "")]
    for s in report["packages"]:
        low, high = s["accuracy_95ci"]
        f1 = " / ".join(f"{s['f1_per_label'][label]:.3f}" if label in s["f1_per_label"] else "-" for label in LABELS)
        line = (f"| {s['package']} | {s['verdict_by']} | {s['accuracy']:.3f} ({low:.3f}-{high:.3f}) | "
                f"{s['macro_f1']:.3f} | {f1} | {s['no_verdict']} |")
        if "retrieval_recall" in s:
            line += f" {s['retrieval_recall']:.3f} |"
        lines.append(line)
    for s in report["packages"]:
        lines += ["", f"Confusion, {s['package']} (rows: gold, columns: verdict):", "",
                  "| gold \\ verdict | " + " | ".join([*LABELS, "none"]) + " |", "|---|" + "---:|" * (len(LABELS) + 1)]
        for gold, row in s["confusion"].items():
            lines.append(f"| {gold} | " + " | ".join(str(row[c]) for c in [*LABELS, "none"]) + " |")
    if report["paired"]:
        lines += ["", "Paired test (McNemar, exact), each package against the first:", "",
                  "| first | second | items | only first right | only second right | p |", "|---|---|---:|---:|---:|---:|"]
        for t in report["paired"]:
            lines.append(f"| {t['first']} | {t['second']} | {t['items']} | {t['only_first_right']} | "
                         f"{t['only_second_right']} | {t['p_value']:.4g} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """Accuracy (95% interval) and macro-F1 per package; False when matplotlib is missing."""
    from ortgen.bench.report import pyplot

    plt = pyplot()
    if plt is None:
        return False
    packages = report["packages"]
    names = [s["package"] for s in packages]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 2), 3.6))
    acc = [s["accuracy"] for s in packages]
    errors = [[a - s["accuracy_95ci"][0] for a, s in zip(acc, packages)],
              [s["accuracy_95ci"][1] - a for a, s in zip(acc, packages)]]
    ax.bar([i - 0.2 for i in x], acc, 0.4, yerr=errors, capsize=4, label="accuracy (95% CI)")
    ax.bar([i + 0.2 for i in x], [s["macro_f1"] for s in packages], 0.4, label="macro-F1")
    ax.set_xticks(list(x), names)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['data_name']}: {report['items']} items, mode {report['config']['mode']}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
