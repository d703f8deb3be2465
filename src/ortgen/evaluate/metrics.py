"""Scores of verdicts against gold labels, and a paired test between two systems on the same items.

    accuracy        share of items whose verdict equals the gold label (no verdict counts as wrong)
    macro-F1        mean over the labels (yes, no, maybe) of F1 = 2PR / (P + R), as PubMedQA reports it
                    (scikit-learn's f1_score(average="macro", labels=...)); a label never predicted and
                    never gold is left out, one never predicted but gold scores 0
    confusion       rows: gold label; columns: verdict, with "none" for answers that gave no verdict
    McNemar exact   two systems, same items: b = items only the first got right, c = only the second;
                    p = two-sided binomial probability of a split at least as uneven as b : c at p = 1/2.
                    The test for paired accuracies on one test set (quantized vs float, with and without
                    retrieval): it uses only the items where the two disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

NONE = "none"


def accuracy(gold: Sequence[str], verdicts: Sequence[str | None]) -> float:
    if not gold:
        return 0.0
    return sum(g == v for g, v in zip(gold, verdicts)) / len(gold)


def per_label_f1(gold: Sequence[str], verdicts: Sequence[str | None], labels: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for label in labels:
        tp = sum(g == label and v == label for g, v in zip(gold, verdicts))
        fp = sum(g != label and v == label for g, v in zip(gold, verdicts))
        fn = sum(g == label and v != label for g, v in zip(gold, verdicts))
        if tp + fp + fn == 0:
            continue  # neither gold nor predicted anywhere: no evidence either way
        scores[label] = 2 * tp / (2 * tp + fp + fn)
    return scores


def macro_f1(gold: Sequence[str], verdicts: Sequence[str | None], labels: Sequence[str]) -> float:
    scores = per_label_f1(gold, verdicts, labels)
    return sum(scores.values()) / len(scores) if scores else 0.0


def confusion(gold: Sequence[str], verdicts: Sequence[str | None], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    columns = [*labels, NONE]
    table = {g: {c: 0 for c in columns} for g in labels}
    for g, v in zip(gold, verdicts):
        table[g][v if v in labels else NONE] += 1
    return table


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of two systems' correctness on the same items."""

    only_first: int  # b: the first right, the second wrong
    only_second: int  # c: the second right, the first wrong
    p_value: float

    def to_dict(self) -> dict[str, float | int]:
        return {"only_first_right": self.only_first, "only_second_right": self.only_second,
                "p_value": self.p_value}


def mcnemar_exact(first_right: Sequence[bool], second_right: Sequence[bool]) -> PairedTest:
    if len(first_right) != len(second_right):
        raise ValueError("the paired test needs the same items from both systems")
    b = sum(a and not c for a, c in zip(first_right, second_right))
    c = sum(c and not a for a, c in zip(first_right, second_right))
    n = b + c
    if n == 0:
        return PairedTest(0, 0, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return PairedTest(b, c, min(1.0, 2 * tail))


def wilson_interval(right: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of an accuracy (Wilson score), for the plot's error bars."""
    if total == 0:
        return 0.0, 0.0
    p = right / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)
