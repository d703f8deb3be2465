"""Sampling level: the Sampling graph checked statistically.

1. The same seed reproduces the same sequences.
2. A tiny top_p (a copy of the graph with top_p = 1e-6, built in memory) equals greedy search.
3. The first sampled token's frequencies over many draws agree with transformers' sampling
   distribution (softmax of the logits after the package's temperature and top_p).
   Test: Pearson's chi-square over bins of tokens sorted by reference probability, each bin
   holding an expected count of at least 5; p-value from the Wilson-Hilferty approximation of
   the chi-square distribution; the check fails when p < 0.001.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortgen import contract
from ortgen.runtime.generator import Generator, left_pad
from ortgen.runtime.sessions import session_options
from ortgen.validate.reference import Reference
from ortgen.validate.report import FAIL, PASS, SKIPPED, SamplingCheck

P_VALUE_THRESHOLD = 1e-3
MIN_EXPECTED = 5.0


def chi_square_p_value(statistic: float, dof: int) -> float:
    """Upper-tail p-value of a chi-square statistic (Wilson-Hilferty normal approximation)."""
    if dof <= 0:
        return 1.0
    k = float(dof)
    z = ((statistic / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def binned_chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int, int]:
    """(statistic, degrees of freedom, bins) for observed ``counts`` against ``probs``."""
    n = counts.sum()
    order = np.argsort(-probs)
    bins_expected, bins_observed = [], []
    e_acc = o_acc = 0.0
    for token in order:
        e_acc += probs[token] * n
        o_acc += counts[token]
        if e_acc >= MIN_EXPECTED:
            bins_expected.append(e_acc)
            bins_observed.append(o_acc)
            e_acc = o_acc = 0.0
    if bins_expected:
        bins_expected[-1] += e_acc
        bins_observed[-1] += o_acc
    expected, observed = np.array(bins_expected), np.array(bins_observed)
    if len(expected) < 2:
        return 0.0, 0, len(expected)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return statistic, len(expected) - 1, len(expected)


def _tiny_top_p_session(generator: Generator) -> ort.InferenceSession:
    """The package's Sampling graph with top_p = 1e-6, built in memory (the weights stay on disk)."""
    info = generator.manifest.graphs[contract.SAMPLE]
    model = onnx.load(str(generator.package_dir / info.file), load_external_data=False)
    for attribute in model.graph.node[0].attribute:
        if attribute.name == "top_p":
            attribute.f = 1e-6
    options = session_options(generator.threads)
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(generator.package_dir))
    return ort.InferenceSession(model.SerializeToString(), options, providers=generator.providers)


def check_sampling(generator: Generator, reference: Reference, prompts: list[list[int]],
                   draws: int) -> list[SamplingCheck]:
    checks: list[SamplingCheck] = []
    sample = generator.manifest.graphs.get(contract.SAMPLE)
    if sample is None:
        return [SamplingCheck("sampling graph", SKIPPED, "the package has no sampling graph")]
    eos = generator.manifest.special_tokens.eos_token_id

    first = generator.generate(input_ids=prompts, seed=1234, max_new_tokens=8, num_return_sequences=3)
    second = generator.generate(input_ids=prompts, seed=1234, max_new_tokens=8, num_return_sequences=3)
    tokens = lambda r: [[s.token_ids for s in g] for g in r.sequences]  # noqa: E731
    same = tokens(first) == tokens(second)
    checks.append(SamplingCheck("same seed reproduces", PASS if same else FAIL,
                                "seed 1234, 3 draws per prompt, 8 tokens: identical" if same else
                                "two runs with seed 1234 differ"))

    greedy = generator.generate(input_ids=prompts, max_new_tokens=8)
    ids, mask = left_pad(prompts)
    session = _tiny_top_p_session(generator)
    out = session.run([contract.SEQUENCES], {
        contract.INPUT_IDS: ids, contract.MAX_LENGTH: np.array([ids.shape[1] + 8], np.int32),
        contract.MIN_LENGTH: np.array([0], np.int32), contract.REPETITION_PENALTY: np.array([1.0], np.float32),
        contract.ATTENTION_MASK: mask, contract.SEED: np.array([5], np.int32),
    })[0]
    tiny = [[int(t) for t in row[ids.shape[1]:]] for row in out]
    tiny = [row[: row.index(eos)] if eos in row else row for row in tiny]
    expected = [g[0].token_ids for g in greedy.sequences]
    checks.append(SamplingCheck("top_p=1e-6 equals greedy", PASS if tiny == expected else FAIL,
                                f"{len(prompts)} prompts, 8 tokens" + ("" if tiny == expected else
                                                                      f": sampled {tiny} vs greedy {expected}")))

    prompt = prompts[0][:4]
    temperature, top_p = float(sample.attributes["temperature"]), float(sample.attributes["top_p"])
    result = generator.generate(input_ids=[prompt], seed=99, max_new_tokens=1, num_return_sequences=draws)
    firsts = [s.token_ids[0] if s.token_ids else eos for s in result.sequences[0]]
    probs = reference.sampling_distribution(prompt, temperature, top_p)
    counts = np.bincount(np.array(firsts), minlength=probs.shape[0]).astype(np.float64)
    statistic, dof, bins = binned_chi_square(counts, probs)
    top = int(probs.argmax())
    values: dict[str, Any] = {"draws": draws, "bins": bins, "chi_square": statistic, "dof": dof,
                              "top_token": top, "top_probability": float(probs[top]),
                              "top_frequency": float(counts[top] / draws)}
    if dof == 0:
        checks.append(SamplingCheck("first-token frequencies", SKIPPED,
                                    f"{draws} draws fill fewer than 2 bins of expected count {MIN_EXPECTED:g}",
                                    values))
        return checks
    p = chi_square_p_value(statistic, dof)
    values["p_value"] = p
    checks.append(SamplingCheck(
        "first-token frequencies", PASS if p >= P_VALUE_THRESHOLD else FAIL,
        f"{draws} draws vs transformers' softmax (temperature {temperature:g}, top_p {top_p:g}): "
        f"chi-square {statistic:.1f} on {dof} dof, p = {p:.3g} (fail below {P_VALUE_THRESHOLD:g}); "
        f"top token {top}: {counts[top] / draws:.3f} vs p {probs[top]:.3f}",
        values,
    ))
    return checks
