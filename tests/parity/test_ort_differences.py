"""Where ONNX Runtime's generation operators differ from transformers' generate().

Each test demonstrates one difference on the raw operator and shows how ortgen removes it
(or, where it cannot, that the Generator avoids the case). docs/ort-vs-transformers.md
describes each one and points here. If ONNX Runtime or transformers change, the
"demonstrates" assertions fail and the page needs updating.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ortgen.package import contract
from ortgen.runtime.generator import Generator, left_pad
from tests.helpers.models import EOS_BIAS
from tests.helpers.reference import hf_generate, hf_sequence_logprob

MAX_NEW = 12


def _prompts(vocab: int, lengths=(7, 3, 5), seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(4, vocab, size=n))) for n in lengths]


def _session(package, graph: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(package / contract.GRAPH_FILES[graph]), providers=["CPUExecutionProvider"])


def _feeds(ids, mask, *, rp=1.0, beams=None, nrs=1, lp=1.0):
    feeds = {
        contract.INPUT_IDS: ids, contract.MAX_LENGTH: np.array([ids.shape[1] + MAX_NEW], np.int32),
        contract.MIN_LENGTH: np.array([0], np.int32), contract.REPETITION_PENALTY: np.array([rp], np.float32),
        contract.ATTENTION_MASK: mask,
    }
    if beams is not None:
        feeds[contract.NUM_BEAMS] = np.array([beams], np.int32)
        feeds[contract.NUM_RETURN_SEQUENCES] = np.array([nrs], np.int32)
        feeds[contract.LENGTH_PENALTY] = np.array([lp], np.float32)
    return feeds


def _cut(row, eos):
    row = [int(t) for t in row]
    return row[: row.index(eos)] if eos in row else row


def test_operators_write_pad_after_eos_unless_told_otherwise(zoo, tmp_path):
    """ONNX Runtime writes its pad_token_id where transformers writes EOS. ortgen sets
    that attribute to EOS, so outputs read like transformers': tokens, EOS, filler."""
    model = zoo.model("biogpt", eos_bias=EOS_BIAS["biogpt"])
    package = zoo.package("biogpt", eos_bias=EOS_BIAS["biogpt"])
    prompts = _prompts(model.vocab_size)
    ids, mask = left_pad(prompts)
    width = ids.shape[1]
    ours = _session(package, "greedy").run(None, _feeds(ids, mask))[0]
    hf_ids, _ = left_pad(prompts, model.pad_token_id)
    ref = hf_generate(model.load(), hf_ids, mask, eos=model.eos_token_id, pad=model.pad_token_id,
                      max_new_tokens=MAX_NEW)
    finished_rows = [r for r in range(len(prompts)) if len(ref[r][0]) < MAX_NEW]
    assert finished_rows, "fixture must end some rows with EOS"
    for r in finished_rows:
        n = len(ref[r][0])
        assert ours[r, width + n] == model.eos_token_id  # EOS where transformers has it

    # the operator's own behaviour, with the model's real pad id as its attribute
    patched = tmp_path / "pkg"
    shutil.copytree(package, patched)
    proto = onnx.load(str(patched / contract.GRAPH_FILES[contract.GREEDY]), load_external_data=False)
    for attr in proto.graph.node[0].attribute:
        if attr.name == "pad_token_id":
            attr.i = model.pad_token_id
    onnx.save(proto, str(patched / contract.GRAPH_FILES[contract.GREEDY]))
    raw = _session(patched, "greedy").run(None, _feeds(ids, mask))[0]
    for r in finished_rows:
        n = len(ref[r][0])
        assert raw[r, width + n] == model.pad_token_id, "demonstrates: EOS replaced by pad"
        assert model.eos_token_id not in raw[r, width:].tolist()


def test_length_normalisation_counts_the_prompt(zoo):
    """ONNX Runtime scores a hypothesis as sum_logprobs / (prompt + generated) ** lp, EOS
    not counted; transformers as sum_logprobs / (generated + EOS) ** lp. With EOS ending
    beams at different steps and lp != 0 the chosen beams differ; with lp = 0 they agree
    (see test_generation_parity). The Generator reports scores in transformers' convention."""
    arch = "biogpt"
    model = zoo.model(arch, eos_bias=EOS_BIAS[arch])
    generator = Generator.load(zoo.package(arch, eos_bias=EOS_BIAS[arch]))
    hf = model.load()
    prompts = _prompts(model.vocab_size)
    ids, mask = left_pad(prompts)
    result = generator.generate(input_ids=prompts, num_beams=4, num_return_sequences=2, max_new_tokens=MAX_NEW,
                                length_penalty=1.0, backend="graph")
    raw_scores = np.array(result.extra["onnxruntime_scores"])
    width = ids.shape[1]
    for b, group in enumerate(result.sequences):
        for r, seq in enumerate(group):
            generated = seq.token_ids + ([model.eos_token_id] if seq.finished else [])
            logprob = hf_sequence_logprob(hf, prompts[b], generated)
            assert raw_scores[b, r] == pytest.approx(logprob / (width + len(seq.token_ids)), abs=1e-4)
            assert seq.score == pytest.approx(logprob / len(generated), abs=1e-4)
    hf_ids, _ = left_pad(prompts, model.pad_token_id)
    ref = hf_generate(hf, hf_ids, mask, eos=model.eos_token_id, pad=model.pad_token_id, num_beams=4,
                      num_return_sequences=2, max_new_tokens=MAX_NEW, length_penalty=1.0)
    ours = [[s.token_ids for s in group] for group in result.sequences]
    assert ours != ref, "demonstrates: with lp=1 and EOS, the operator picks other beams"


def test_repetition_penalty_counts_left_padding(zoo):
    """ONNX Runtime penalises every id in a row, left padding included; transformers 5
    skips the padding. GPT-2's pad is its EOS, so pad-filled rows make EOS less likely.
    The Generator pads each row with its own first token, which is penalised anyway."""
    arch = "gpt2"
    model = zoo.model(arch, eos_bias=EOS_BIAS[arch])
    package = zoo.package(arch, eos_bias=EOS_BIAS[arch])
    prompts = _prompts(model.vocab_size)
    pad_filled, mask = left_pad(prompts, model.pad_token_id)
    ref = hf_generate(model.load(), pad_filled, mask, eos=model.eos_token_id, pad=model.pad_token_id,
                      max_new_tokens=MAX_NEW, repetition_penalty=1.3)
    session = _session(package, "greedy")
    raw = session.run(None, _feeds(pad_filled, mask, rp=1.3))[0]
    raw_tokens = [[_cut(row[pad_filled.shape[1]:], model.eos_token_id)] for row in raw]
    assert raw_tokens != ref, "demonstrates: pad-filled rows are penalised differently"
    ours = Generator.load(package).generate(input_ids=prompts, max_new_tokens=MAX_NEW, repetition_penalty=1.3,
                                            backend="graph")
    assert [[s.token_ids for s in g] for g in ours.sequences] == ref


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "opt"])
def test_eos_inside_prompts(zoo, arch):
    """The operators derive position_ids from pad_token_id (GPT-2: pad == eos), so an EOS
    inside a prompt would restart positions. BioGPT and OPT prompts even start with
    </s>. ortgen's decoder derives positions from attention_mask instead, like transformers."""
    model = zoo.model(arch)
    eos = model.eos_token_id
    prompts = [[eos, 10, 11, eos, 12, 13], [eos, 20, 21], [30, eos, eos, 31, 32]]
    ids, mask = left_pad(prompts, model.pad_token_id)
    hf = model.load()
    generator = Generator.load(zoo.package(arch))
    for settings in (dict(num_beams=1), dict(num_beams=4, num_return_sequences=2)):
        ref = hf_generate(hf, ids, mask, eos=eos, pad=model.pad_token_id, max_new_tokens=MAX_NEW, **settings)
        ours = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, backend="graph", **settings)
        assert [[s.token_ids for s in g] for g in ours.sequences] == ref


def test_beam_search_with_one_beam_is_not_greedy(zoo):
    """BeamSearch with num_beams=1 applies the repetition penalty to log-softmax scores (as
    transformers' beam search does); transformers' num_beams=1 is greedy search, which
    applies it to raw logits. The Generator runs GreedySearch for num_beams=1."""
    model = zoo.model("biogpt")
    package = zoo.package("biogpt")
    prompts = _prompts(model.vocab_size)
    ids, mask = left_pad(prompts)
    hf_ids, _ = left_pad(prompts, model.pad_token_id)
    ref = hf_generate(model.load(), hf_ids, mask, eos=model.eos_token_id, pad=model.pad_token_id,
                      max_new_tokens=MAX_NEW, repetition_penalty=1.3)
    raw = _session(package, "beam").run(None, _feeds(ids, mask, rp=1.3, beams=1))[0]
    raw_tokens = [[_cut(row[0, ids.shape[1]:], model.eos_token_id)] for row in raw]
    assert raw_tokens != ref, "demonstrates: one-beam BeamSearch differs from greedy"
    ours = Generator.load(package).generate(input_ids=prompts, strategy="beam", num_beams=1,
                                            max_new_tokens=MAX_NEW, repetition_penalty=1.3, backend="graph")
    assert ours.graph_file == contract.GRAPH_FILES[contract.GREEDY]
    assert [[s.token_ids for s in g] for g in ours.sequences] == ref


def test_sampling_schema_defaults_do_not_sample(zoo, tmp_path):
    """With the Sampling schema's defaults (top_p = 0) the top-p filter removes every token
    except, float rounding permitting, the most probable one: the operator then returns the
    argmax every time, or (all filtered) draws uniformly. Either way not the model's
    distribution. ortgen's graph sets top_p (1.0 by default), min_tokens_to_keep=1 and
    filter_value=-inf: its draws follow the softmax."""
    package = zoo.package("biogpt", sharpness=5.0)
    n = 2000
    decoder = _session(package, "decoder")

    def next_token_probs(prompt):
        feeds = {contract.INPUT_IDS: prompt, contract.POSITION_IDS: np.zeros_like(prompt),
                 contract.ATTENTION_MASK: np.ones_like(prompt)}
        for i, past in enumerate(decoder.get_inputs()[3:]):
            feeds[contract.past_name(i)] = np.zeros((2, 1, past.shape[2], 0, past.shape[4]), np.float32)
        logits = decoder.run(None, feeds)[0][0, -1].astype(np.float64)
        probs = np.exp(logits - logits.max())
        return probs / probs.sum()

    # a prompt after which one token is likely but not certain
    rng = np.random.default_rng(0)
    for _ in range(200):
        prompt = np.array([[2, *rng.integers(4, 300, size=3)]], np.int32)
        probs = next_token_probs(prompt)
        if 0.1 < probs.max() < 0.9:
            break
    else:
        pytest.fail("no prompt with a peaked next-token distribution in the fixture")
    top = int(probs.argmax())
    sigma = np.sqrt(probs[top] * (1 - probs[top]) / n)

    def top_frequency(pkg):
        session = _session(pkg, "sample")
        f = _feeds(np.repeat(prompt, n, 0), np.ones((n, 4), np.int32))
        f[contract.MAX_LENGTH] = np.array([5], np.int32)
        f[contract.SEED] = np.array([11], np.int32)
        return float(np.mean(session.run(None, f)[0][:, 4] == top))

    assert abs(top_frequency(package) - probs[top]) < 4 * sigma, "ortgen's Sampling graph follows the softmax"

    patched = tmp_path / "pkg"
    shutil.copytree(package, patched)
    proto = onnx.load(str(patched / contract.GRAPH_FILES[contract.SAMPLE]), load_external_data=False)
    node = proto.graph.node[0]
    kept = [a for a in node.attribute if a.name not in ("top_p", "min_tokens_to_keep", "filter_value")]
    del node.attribute[:]
    node.attribute.extend(kept)
    onnx.save(proto, str(patched / contract.GRAPH_FILES[contract.SAMPLE]))
    assert abs(top_frequency(patched) - probs[top]) > 10 * sigma, "demonstrates: schema defaults do not sample"
