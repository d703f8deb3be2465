"""Structured output on three kinds of vocabulary (BioGPT's Moses-BPE, GPT-2's byte-level BPE, Llama 2's
SentencePiece with byte fallback), random tiny models (garbage unless constrained), every strategy:
whatever ends by EOS parses and validates (jsonschema), matches its regex, is one of its choices."""

from __future__ import annotations

import re

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

from ortgen.errors import GenerationSettingsError  # noqa: E402
from ortgen.runtime.constraint import Constraint  # noqa: E402
from ortgen.runtime.generator import Generator  # noqa: E402
from ortgen.runtime.grammar import INCOMPLETE, moses_piece_bytes  # noqa: E402
from tests.conftest import REAL_BIOGPT_TOKENIZER  # noqa: E402
from tests.helpers.structured import TOKENIZERS, build_package, parses_and_validates, random_schemas  # noqa: E402

SCHEMAS = random_schemas(54)
STRATEGIES = {"greedy": {}, "sampling": {"do_sample": True}, "beam": {"num_beams": 4, "num_return_sequences": 4}}
PROMPT = "The patient"
NEW = 48


@pytest.fixture(scope="module", params=TOKENIZERS)
def generator(request, zoo, tmp_path_factory):
    package = build_package(request.param, tmp_path_factory.mktemp(f"structured-{request.param}"), zoo)
    with Generator.load(package) as loaded:
        yield loaded


def _options(strategy: str, seed: int) -> dict:
    options = dict(STRATEGIES[strategy])
    if strategy == "sampling":
        options["seed"] = seed
    return options


def test_every_output_follows_its_json_schema_or_ends_by_length(generator):
    handles = [(schema, strategy, generator.submit(PROMPT, max_new_tokens=NEW, constraint=Constraint.json_schema(schema),
                                                   **_options(strategy, i)))
               for i, schema in enumerate(SCHEMAS) for strategy in STRATEGIES]
    complete = {strategy: 0 for strategy in STRATEGIES}
    for schema, strategy, handle in handles:
        output = handle.result(timeout=300)
        assert len(output.sequences) == STRATEGIES[strategy].get("num_return_sequences", 1)
        for sequence in output.sequences:
            assert sequence.stop_reason in ("eos", "length"), (strategy, sequence)
            if sequence.stop_reason == "eos":
                assert parses_and_validates(sequence.text, schema), (strategy, sequence.text, schema)
                complete[strategy] += 1
            else:
                assert len(sequence.token_ids) == NEW
    # not vacuous: most outputs close within 48 tokens (nested arrays of numbers may not)
    for strategy, count in complete.items():
        width = STRATEGIES[strategy].get("num_return_sequences", 1)
        assert count >= 0.4 * len(SCHEMAS) * width, (strategy, count)
    stats = generator.scheduler.stats
    assert stats.grammar_masks > 0 and stats.grammar_seconds > 0


CHOICES = [["yes", "no", "maybe"], ["aspirin", "placebo"], ["12", "7", "100 mg"]]
REGEXES = [r"[0-9]{3}-[a-z]{2,5}", r"(yes|no)( [a-z]{1,4}){0,2}", r"[A-Z][a-z]{1,6}\.", r"-?[0-9]{1,4}(\.[0-9]{1,2})?"]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_choices_and_regexes(generator, strategy):
    jobs = [("choice", c, generator.submit(PROMPT, max_new_tokens=NEW, constraint={"choice": c},
                                           **_options(strategy, i))) for i, c in enumerate(CHOICES)]
    jobs += [("regex", r, generator.submit(PROMPT, max_new_tokens=NEW, constraint=Constraint.regex(r),
                                           **_options(strategy, i))) for i, r in enumerate(REGEXES)]
    for kind, value, handle in jobs:
        for sequence in handle.result(timeout=120).sequences:
            if kind == "choice":  # always short enough to finish
                assert sequence.stop_reason == "eos" and sequence.text in value, (value, sequence)
            elif sequence.stop_reason == "eos":
                assert re.fullmatch(value, sequence.text), (value, sequence.text)
            else:
                assert sequence.stop_reason == "length"


def test_lark_and_gbnf_grammars(generator):
    lark = 'start: item (", " item)*\nitem: "yes" | "no" | /[0-9]{1,2}/'
    gbnf = 'root ::= "dose: " [0-9] [0-9]? " mg"'
    for grammar, pattern in ((lark, r"(yes|no|[0-9]{1,2})(, (yes|no|[0-9]{1,2}))*"), (gbnf, r"dose: [0-9]{1,2} mg")):
        for strategy in STRATEGIES:
            result = generator.generate(PROMPT, max_new_tokens=24, constraint={"grammar": grammar},
                                        **_options(strategy, 1))
            for sequence in result.sequences[0]:
                assert sequence.stop_reason == "length" or re.fullmatch(pattern, sequence.text), sequence


def test_requests_under_the_scheduler_equal_themselves_alone(generator):
    """24 concurrent requests, constrained and free, greedy / sampling / beam: each one's tokens are the ones
    it gets alone; the free ones still choose from the engine's best tokens (no cost when unused)."""
    kinds = [None, Constraint.json_schema(SCHEMAS[0]), Constraint.choice(CHOICES[0]), Constraint.regex(REGEXES[0])]
    requests = [dict(constraint=kinds[i % 4], max_new_tokens=12 + i % 7, **_options(list(STRATEGIES)[i % 3], i))
                for i in range(24)]
    alone = []
    for options in requests:
        before = generator.scheduler.stats.best_token_steps
        output = generator.submit(PROMPT, **options).result(timeout=60)
        alone.append([s.token_ids for s in output.sequences])
        if options["constraint"] is None and not options.get("do_sample"):
            assert generator.scheduler.stats.best_token_steps > before  # free greedy / beam: best tokens only
    handles = [generator.submit(PROMPT, **options) for options in requests]
    together = [[s.token_ids for s in h.result(timeout=120).sequences] for h in handles]
    assert together == alone


def test_bad_constraints_are_refused_with_what_is_wrong(generator):
    cases = [({"regex": "(a"}, "regex cannot be enforced"), ({"json_schema": {"type": "strin"}}, "strin"),
             ({"choice": []}, "non-empty list"), ({"regex": "a", "choice": ["b"]}, "exactly one of"),
             ({"json_object": 1}, "json_object must be true"), ({"grammar": "start: undefined_rule"}, "grammar"),
             ({"xml": "<a/>"}, "unknown field")]
    for constraint, message in cases:
        with pytest.raises(GenerationSettingsError, match=re.escape(message)):
            generator.submit(PROMPT, constraint=constraint)
    with pytest.raises(GenerationSettingsError, match="structured output"):
        generator.generate(PROMPT, constraint={"choice": ["a"]}, backend="graph")


def test_a_language_the_vocabulary_cannot_spell_ends_incomplete_not_valid(zoo):
    """The demo BioGPT vocabulary has no braces: a JSON object cannot even start."""
    with Generator.load(zoo.package("biogpt")) as generator:
        result = generator.generate(PROMPT, max_new_tokens=8, constraint={"json_object": True})
    sequence = result.sequences[0][0]
    assert sequence.stop_reason == INCOMPLETE and not sequence.finished


def test_moses_piece_bytes():
    assert moses_piece_bytes("patient</w>") == b"patient "
    assert moses_piece_bytes("pati") == b"pati"
    assert moses_piece_bytes("&quot;</w>") == b'"'
    assert moses_piece_bytes("&apos;s</w>") == b"'s "
    assert moses_piece_bytes("{</w>") == b"{" and moses_piece_bytes(",</w>") == b","
    assert moses_piece_bytes("@-@</w>") == b"-"


@pytest.mark.skipif(not (REAL_BIOGPT_TOKENIZER / "vocab.json").is_file(), reason="needs the real BioGPT tokenizer")
def test_real_biogpt_words_are_their_text_and_json_is_spellable(tmp_path):
    """On BioGPT's real vocabulary: plain words come out as the detokenizer prints them, and every character
    JSON needs has a token whose bytes are it (so no JSON schema dead-ends)."""
    from ortgen.demo.models import copy_tokenizer
    from ortgen.package.tokenizer_info import TokenizerInfo
    from ortgen.runtime.grammar import GrammarVocabulary
    from ortgen.runtime.tokenizer import MosesBpeTokenizer

    copy_tokenizer(REAL_BIOGPT_TOKENIZER, tmp_path)
    info = TokenizerInfo.from_dict({"kind": "moses-bpe", "prefix_ids": [2], "suffix_ids": [],
                                    "special_tokens": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                                                       "unk_token": "<unk>"}})
    tokenizer = MosesBpeTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt", info)
    vocabulary = GrammarVocabulary(tokenizer, 42384, [2])
    text = "aspirin reduces the risk of myocardial infarction in older patients"
    ids = tokenizer.encode_plain(text)
    assert vocabulary.text(ids) == tokenizer.decode(ids) == text
    spelled = {vocabulary.ll.decode_bytes([i]) for i in range(42384)}
    for needed in '{}[]":,-.0123456789':
        assert needed.encode() in spelled, needed
    assert np.all([c.encode() in spelled for c in "abcdefghijklmnopqrstuvwxyz"])
