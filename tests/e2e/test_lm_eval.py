"""lm-evaluation-harness against ortgen serve: the same tasks, once with lm-eval's `hf` model (transformers on
the tiny model's directory) and once with `local-completions` against `ortgen serve` of its package.

A multiple-choice task scores each answer by its log-likelihood after the prompt (echo + logprobs: the
prompt's token log-probabilities); a generation task decodes greedily. Per-choice log-likelihoods must
agree within 1e-4, accuracies exactly, and every generated answer must be the same text. The tasks are
PubMedQA-style items written in lm-eval's YAML format in tests/lm_eval/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ortgen.serve.process import running_server

lm_eval = pytest.importorskip("lm_eval", reason="needs lm-evaluation-harness (the dev extra)")

TASKS = Path(__file__).resolve().parents[1] / "lm_eval"
NAMES = ["ortgen_pubmedqa_mc", "ortgen_pubmedqa_gen"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The task YAMLs with the data file's absolute path (lm-eval resolves it against the working directory)."""
    out = tmp_path_factory.mktemp("lm_eval_tasks")
    data = out / "pubmedqa_mini.jsonl"
    shutil.copyfile(TASKS / "pubmedqa_mini.jsonl", data)
    for name in NAMES:
        text = (TASKS / f"{name}.yaml").read_text(encoding="utf-8").replace("DATA_FILE", str(data))
        (out / f"{name}.yaml").write_text(text, encoding="utf-8")
    return out


def _evaluate(task_dir: Path, model: str, model_args: str) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return simple_evaluate(model=model, model_args=model_args, tasks=NAMES, task_manager=TaskManager(
        include_path=str(task_dir)), log_samples=True, batch_size=4, device="cpu", random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0)


def _loglikelihoods(result: dict) -> list[list[float]]:
    samples = sorted(result["samples"]["ortgen_pubmedqa_mc"], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


def _generations(result: dict, raw: bool = False) -> list[str]:
    samples = sorted(result["samples"]["ortgen_pubmedqa_gen"], key=lambda s: s["doc_id"])
    return [s["resps"][0][0] if raw else s["filtered_resps"][0] for s in samples]


def test_lm_eval_scores_ortgen_serve_as_it_scores_transformers(demo_package, task_dir):
    model_dir = demo_package.parent / "hf"  # the demo BioGPT in transformers' format (256 positions, Moses + BPE)
    assert (model_dir / "config.json").is_file()
    reference = _evaluate(task_dir, "hf", f"pretrained={model_dir},dtype=float32")
    with running_server(demo_package) as server:
        ours = _evaluate(task_dir, "local-completions",
                         f"model={server.model},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
                         f"tokenizer={model_dir},tokenized_requests=True,add_bos_token=True,num_concurrent=4,max_retries=1")
    theirs_ll, ours_ll = _loglikelihoods(reference), _loglikelihoods(ours)
    assert len(ours_ll) == 12 and all(len(choices) == 3 for choices in ours_ll)
    assert all(any(abs(v) > 1e-3 for v in choices) for choices in ours_ll), "log-likelihoods must not be zeros"
    for doc, (a, b) in enumerate(zip(theirs_ll, ours_ll)):
        assert b == pytest.approx(a, abs=1e-4), f"document {doc}"
    acc = lambda r: r["results"]["ortgen_pubmedqa_mc"]["acc,none"]  # noqa: E731
    acc_gen = lambda r: r["results"]["ortgen_pubmedqa_gen"]["exact_match,strip"]  # noqa: E731
    assert acc(ours) == acc(reference)
    assert _generations(ours) == _generations(reference)
    # the raw texts differ only in the space that separates a completion from its prompt: the server's text
    # continues the prompt ("... is" + " is is"), transformers decodes the new tokens alone (Moses drops it)
    assert [g.lstrip() for g in _generations(ours, raw=True)] == _generations(reference, raw=True)
    assert acc_gen(ours) == acc_gen(reference)
    assert any(g.strip() for g in _generations(ours)), "the model must have generated something"
