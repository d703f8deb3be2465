"""Acceptance for `ortgen convert-fairseq`: fairseq BioGPT -> Hugging Face, exactly.

Synthetic checkpoints with fairseq's real layout (tests/helpers/fairseq.py): both the `cfg`
and the legacy `args` layout, with and without learned prompt tokens.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ortgen.cli import main
from ortgen.convert.fairseq_biogpt import convert_fairseq_biogpt
from ortgen.errors import ModelSourceError, UnsupportedModelError, WeightMismatchError
from ortgen.package.manifest import Manifest
from ortgen.demo.models import write_demo_tokenizer
from ortgen.runtime.generator import Generator
from tests.conftest import REAL_BIOGPT_TOKENIZER
from tests.helpers.fairseq import fairseq_forward, write_fairseq_biogpt


@pytest.fixture(scope="module")
def demo_tokenizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    write_demo_tokenizer(directory)
    return directory


def no_leftovers(parent) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".fairseq-" in p.name]


@pytest.mark.parametrize("layout, learned", [("cfg", 0), ("args", 0), ("cfg", 9)])
def test_converted_model_equals_the_fairseq_forward(tmp_path, demo_tokenizer, layout, learned):
    from transformers import BioGptForCausalLM, BioGptTokenizer

    fx = write_fairseq_biogpt(tmp_path / "fairseq", demo_tokenizer, learned_prompt=learned, layout=layout)
    out = convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", show_progress=False)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["max_position_embeddings"], config["vocab_size"]) == (
        32, 2, 4, 64, 64, fx.rows)
    assert config["scale_embedding"] and config["tie_word_embeddings"] and config["hidden_act"] == "gelu"

    model = BioGptForCausalLM.from_pretrained(out).eval()
    tokens = [2, 40, 41, 300, 7, 99] + list(range(fx.dictionary_size, fx.rows))  # learned tokens too
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([tokens])).logits[0].double().numpy()
    reference = fairseq_forward(fx, tokens)
    assert np.abs(ours - reference).max() < 1e-5

    tokenizer = BioGptTokenizer.from_pretrained(out)
    assert len(tokenizer) == fx.rows
    vocab = json.loads((out / "vocab.json").read_text())
    for i in range(learned):
        assert vocab[f"learned{i + 1}</w>"] == fx.dictionary_size + i  # kept and named
    fmt_file = out / "prompt_format.json"
    assert fmt_file.is_file() == bool(learned)
    if learned:
        fmt = json.loads(fmt_file.read_text())
        assert fmt["learned_prompt_ids"] == list(range(fx.dictionary_size, fx.rows))
        assert fmt["template"] == "question: {question} context: {context}" and fmt["lowercase"]
        assert fmt["answer_prefix"] == "the answer to the question given the context is"
        assert fmt["max_source_tokens"] == 900


@pytest.mark.skipif(not REAL_BIOGPT_TOKENIZER.is_dir(), reason="real BioGPT tokenizer files not available")
def test_tokenizer_from_dict_and_bpecodes_matches_biogpt(tmp_path):
    from transformers import BioGptTokenizer

    from tests.parity.test_tokenizers import SENTENCES

    write_fairseq_biogpt(tmp_path / "fairseq", REAL_BIOGPT_TOKENIZER, hidden=16, heads=2, ffn=32, layers=1)
    out = convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", show_progress=False)
    ours = BioGptTokenizer.from_pretrained(out)
    real = BioGptTokenizer.from_pretrained(REAL_BIOGPT_TOKENIZER)
    assert json.loads((out / "vocab.json").read_text()) == json.loads(
        (REAL_BIOGPT_TOKENIZER / "vocab.json").read_text())
    for text in SENTENCES + ["The BRCA1 gene encodes a tumour suppressor (OMIM 113705)."]:
        assert ours(text)["input_ids"] == real(text)["input_ids"], text
        ids = real(text)["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == real.decode(ids, skip_special_tokens=True)


def test_qa_checkpoint_end_to_end(tmp_path, demo_tokenizer, capsys):
    """fairseq QA checkpoint -> export (directly) -> generate with the recorded format -> validate."""
    fx = write_fairseq_biogpt(tmp_path / "qa", demo_tokenizer, learned_prompt=9)
    pkg = tmp_path / "pkg"
    assert main(["export", str(tmp_path / "qa"), "-o", str(pkg), "--no-progress"]) == 0
    manifest = Manifest.load(pkg)
    assert manifest.source["converted_from"] == "fairseq transformer_lm_prompt_biogpt"
    assert manifest.prompt_format.learned_prompt_ids == list(range(fx.dictionary_size, fx.rows))
    assert manifest.generation_defaults.as_dict() == {"num_beams": 1, "max_new_tokens": 24}
    assert no_leftovers(tmp_path)

    generator = Generator.load(pkg)
    ids = generator.encode(["Do statins reduce mortality? context: A trial of 5,011 patients"])[0]
    assert ids[0] == 2 and ids[-9:] == list(range(fx.dictionary_size, fx.rows))
    lowered = generator.tokenizer.encode("do statins reduce mortality? context: a trial of 5,011 patients.")
    assert ids[:-9] == lowered  # lowercased, final period added, as in training
    answer = generator.answer("Do statins reduce mortality?", ["A randomized trial.", "Of heart failure."])
    assert answer.result.prompt_ids[0][-9:] == list(range(fx.dictionary_size, fx.rows))
    assert answer.answer is None or answer.answer in ("yes", "no", "maybe")  # random weights: likely None

    report_file = tmp_path / "report.json"
    code = main(["validate", str(pkg), "--reference", str(tmp_path / "qa"), "--draws", "300", "--json",
                 str(report_file)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: generation" in printed and "0 unexplained" in printed
    learned = list(range(fx.dictionary_size, fx.rows))
    report = json.loads(report_file.read_text())
    assert report["generation"] and all(c["status"] == "match" for c in report["generation"])
    for case in report["generation"]:  # the suite's prompts carry the learned tokens
        assert case["prompt_ids"] and all(p[-9:] == learned and p[0] == 2 for p in case["prompt_ids"])

    code = main(["generate", str(pkg), "--question", "Does aspirin work?", "--context", "A small trial."])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("answer: ")


def test_answer_parsing():
    from ortgen.package.prompt_format import PromptFormat

    fmt = PromptFormat(learned_prompt_ids=[10], template="question: {question} context: {context}",
                       answer_prefix="the answer to the question given the context is", answers=["yes", "no", "maybe"])
    assert fmt.parse_answer("learned1 the answer to the question given the context is yes.") == "yes"
    assert fmt.parse_answer("The answer to the question given the context is Maybe") == "maybe"
    assert fmt.parse_answer("the answer to the question given the context is perhaps.") is None
    assert fmt.parse_answer("no answer here") is None
    assert fmt.question_text("Q?", ["c1.", "c2."]) == "question: Q? context: c1. c2."


@pytest.mark.parametrize("damage, error, message", [
    ("no_checkpoint", ModelSourceError, "lacks checkpoint.pt"),
    ("no_dict", ModelSourceError, "lacks dict.txt"),
    ("no_bpecodes", ModelSourceError, "lacks bpecodes"),
    ("dict_too_large", WeightMismatchError, "more than the"),
    ("dict_too_small", WeightMismatchError, "rows have no token"),
    ("other_arch", UnsupportedModelError, "fairseq architecture 'transformer' is not a BioGPT-style"),
    ("evil_pickle", ModelSourceError, "refers to objects ortgen will not unpickle: posix.system"),
    ("not_a_checkpoint", ModelSourceError, "is not a readable PyTorch checkpoint"),
])
def test_bad_checkpoints_are_refused_and_nothing_is_written(tmp_path, demo_tokenizer, capsys, damage, error, message):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > /tmp/ortgen-owned",))

    source = tmp_path / "fairseq"
    extra = {"payload": Evil()} if damage == "evil_pickle" else None
    arch = "transformer" if damage == "other_arch" else "transformer_lm_prompt_biogpt"
    write_fairseq_biogpt(source, demo_tokenizer, learned_prompt=9 if damage == "dict_too_small" else 0,
                         extra_objects=extra, arch=arch)
    if damage == "no_checkpoint":
        (source / "checkpoint.pt").unlink()
    elif damage == "no_dict":
        (source / "dict.txt").unlink()
    elif damage == "no_bpecodes":
        (source / "bpecodes").unlink()
    elif damage == "dict_too_large":
        with (source / "dict.txt").open("a") as f:
            f.write("extraword 1\nanother 1\n")
    elif damage == "dict_too_small":  # 9 extra rows, but the task config does not say learned_prompt
        checkpoint = torch.load(source / "checkpoint.pt", weights_only=False)
        checkpoint["cfg"]["task"]["learned_prompt"] = None
        torch.save(checkpoint, source / "checkpoint.pt")
    elif damage == "not_a_checkpoint":
        (source / "checkpoint.pt").write_bytes(b"not a zip file at all")
    out = tmp_path / "hf"
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_fairseq_biogpt(source, out, show_progress=False)
    assert not out.exists() and no_leftovers(tmp_path)
    assert not os.path.exists("/tmp/ortgen-owned")
    # the CLI says the same, in one line, with exit status 1
    code = main(["convert-fairseq", str(source), "-o", str(out)])
    assert code == 1 and message.split(":")[0] in capsys.readouterr().err
    assert not out.exists()


def test_learned_prompt_can_be_declared(tmp_path, demo_tokenizer):
    source = tmp_path / "fairseq"
    write_fairseq_biogpt(source, demo_tokenizer, learned_prompt=3, data="/data/other-task")
    checkpoint = torch.load(source / "checkpoint.pt", weights_only=False)
    checkpoint["cfg"]["task"]["learned_prompt"] = None
    torch.save(checkpoint, source / "checkpoint.pt")
    out = convert_fairseq_biogpt(source, tmp_path / "hf", learned_prompt=3, show_progress=False)
    fmt = json.loads((out / "prompt_format.json").read_text())
    assert len(fmt["learned_prompt_ids"]) == 3 and fmt["template"] is None  # not PubMedQA: no QA template


def test_existing_output_needs_force(tmp_path, demo_tokenizer):
    from ortgen.errors import PackageError

    write_fairseq_biogpt(tmp_path / "fairseq", demo_tokenizer)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match="already exists"):
        convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", show_progress=False)
    with pytest.raises(PackageError, match="not a model directory"):
        convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", force=True, show_progress=False)
    shutil.rmtree(tmp_path / "hf")
    convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", show_progress=False)
    convert_fairseq_biogpt(tmp_path / "fairseq", tmp_path / "hf", force=True, show_progress=False)
