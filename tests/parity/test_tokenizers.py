"""The runtime's tokenizers equal transformers' (the runtime itself never imports transformers)."""

from __future__ import annotations

import pytest

from ortgen.package.tokenizer_info import MOSES_BPE, TokenizerInfo
from ortgen.runtime.tokenizer import MosesBpeTokenizer
from tests.conftest import REAL_BIOGPT_TOKENIZER

SENTENCES = [
    "Aspirin inhibits COX-1 and COX-2 enzymes.",
    "The patient's IL-6 levels (pg/mL) rose by 35% after 2-3 weeks.",
    "question: Do statins reduce mortality? context: In a cohort of 1,024 adults </s> answer",
    "α-synuclein & β-amyloid [Aβ42] aggregates; p<0.05",
    "  multiple   spaces\nnewline\tTab",
    "COVID-19 mRNA-1273 vaccine efficacy was 94.1% (95% CI, 89.3-96.8).",
    "Tumour necrosis factor-α (TNF-α) inhibitors, e.g. infliximab, were given i.v. every 8 weeks.",
    "BRCA1/2 carriers; HER2+ vs. HER2− tumours; Ki-67 ≥ 20 %",
    "the answer to the question given the context is yes.",
]


@pytest.mark.skipif(not REAL_BIOGPT_TOKENIZER.is_dir(), reason="real BioGPT tokenizer files not available")
def test_moses_bpe_equals_biogpt_tokenizer_on_the_real_vocabulary():
    from transformers import BioGptTokenizer

    reference = BioGptTokenizer.from_pretrained(str(REAL_BIOGPT_TOKENIZER))
    info = TokenizerInfo(MOSES_BPE, ["vocab.json", "merges.txt"], prefix_ids=[2], special_tokens={
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    ours = MosesBpeTokenizer(REAL_BIOGPT_TOKENIZER / "vocab.json", REAL_BIOGPT_TOKENIZER / "merges.txt", info)
    for text in SENTENCES:
        ids = reference(text)["input_ids"]
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids), text


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "opt"])
def test_packaged_tokenizer_equals_transformers(zoo, arch):
    from transformers import AutoTokenizer

    from ortgen.runtime.generator import Generator

    ours = Generator.load(zoo.package(arch)).tokenizer
    reference = AutoTokenizer.from_pretrained(zoo.model(arch).directory)
    for text in SENTENCES:
        ids = reference(text)["input_ids"]
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
