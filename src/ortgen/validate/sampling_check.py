"""Sampling level: the Sampling graph checked statistically.

1. The same seed reproduces the same sequences.
2. A tiny top_p (a copy of the graph with top_p = 1e-6, built in memory) equals greedy search.
3. The first sampled token's frequencies over many draws agree with transformers' sampling
   distribution (softmax of the logits after the package's temperature and top_p).
   Test: Pearson's chi-square over bins of tokens sorted by reference probability, each bin
   holding an expected count of at least 5; p-value from the Wilson-Hilferty approximation of
   the chi-square distribution.

False failures: a correct package fails a frequency test exactly when its p-value falls below
the threshold, which for a correct package happens with that probability on each run. So the
seed changes from run to run (a fixed seed would make an unlucky package fail on every run;
``ortgen validate --seed N`` repeats a run) and the threshold is split between the run's
frequency tests (Bonferroni): 0.001 / k for k tests, so a correct package fails a whole run
with probability at most 1 in 1000.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ortgen.package import contract
from ortgen.runtime.backend import has_step_engine
from ortgen.runtime.generator import Generator, left_pad
from ortgen.runtime.sessions import session_options
from ortgen.validate.reference import Reference
from ortgen.validate.report import FAIL, PASS, SKIPPED, SamplingCheck

RUN_FALSE_FAILURE_RATE = 1e-3  # per validate run, over all its frequency tests
DRAWS_PER_REQUEST = 100  # independent draws per request (seeds differ): well under the scheduler's max_sequences
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


def _reproducibility(generator: Generator, prompts: list[list[int]], backend: str, top_k: int, seed: int
                     ) -> SamplingCheck:
    run = lambda: generator.generate(input_ids=prompts, seed=seed, max_new_tokens=8, num_return_sequences=3,  # noqa
                                     top_k=top_k, backend=backend)
    tokens = lambda r: [[s.token_ids for s in g] for g in r.sequences]  # noqa: E731
    same = tokens(run()) == tokens(run())
    return SamplingCheck(f"{backend}: same seed reproduces", PASS if same else FAIL,
                         f"seed {seed}, 3 draws per prompt, 8 tokens: identical" if same else
                         f"two runs with seed {seed} differ")


def _frequencies(generator: Generator, reference: Reference, prompt: list[int], draws: int, backend: str,
                 temperature: float, top_p: float, top_k: int, seed: int, threshold: float) -> SamplingCheck:
    eos = generator.manifest.special_tokens.eos_token_id
    firsts = []
    for part, start in enumerate(range(0, draws, DRAWS_PER_REQUEST)):  # requests of a size any scheduler runs
        count = min(DRAWS_PER_REQUEST, draws - start)
        result = generator.generate(input_ids=[prompt], seed=seed + 1000 * part, max_new_tokens=1,
                                    num_return_sequences=count, top_k=top_k, temperature=temperature, top_p=top_p,
                                    backend=backend)
        firsts += [s.token_ids[0] if s.token_ids else eos for s in result.sequences[0]]
    probs = reference.sampling_distribution(prompt, temperature, top_p, top_k)
    counts = np.bincount(np.array(firsts), minlength=probs.shape[0]).astype(np.float64)
    statistic, dof, bins = binned_chi_square(counts, probs)
    top = int(probs.argmax())
    name = f"{backend}: first-token frequencies"
    values: dict[str, Any] = {"draws": draws, "bins": bins, "chi_square": statistic, "dof": dof, "top_token": top,
                              "top_probability": float(probs[top]), "top_frequency": float(counts[top] / draws),
                              "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
                              "outside_support": int(counts[probs == 0].sum())}
    if values["outside_support"]:
        return SamplingCheck(name, FAIL, f"{values['outside_support']} draws fell outside transformers' support "
                                         f"(filtered by top_k={top_k} / top_p={top_p:g})", values)
    if dof == 0:
        return SamplingCheck(name, SKIPPED, f"{draws} draws fill fewer than 2 bins of expected count "
                                            f"{MIN_EXPECTED:g}", values)
    p = chi_square_p_value(statistic, dof)
    values["p_value"], values["threshold"] = p, threshold
    return SamplingCheck(
        name, PASS if p >= threshold else FAIL,
        f"{draws} draws vs transformers (temperature {temperature:g}, top_k {top_k}, top_p {top_p:g}, seed {seed}): "
        f"chi-square {statistic:.1f} on {dof} dof, p = {p:.3g} (fail below {threshold:.2g}); "
        f"top token {top}: {counts[top] / draws:.3f} vs p {probs[top]:.3f}",
        values,
    )


def check_sampling(generator: Generator, reference: Reference, prompts: list[list[int]], draws: int,
                   backends: tuple[str, ...] = ("graph", "engine"), seed: int | None = None) -> list[SamplingCheck]:
    """The sampling checks on both backends; ``seed`` (default: a new one each run) seeds every draw."""
    if seed is None:
        seed = secrets.randbelow(2**31)
    checks: list[SamplingCheck] = []
    graphs = generator.manifest.graphs
    engine = "engine" in backends and has_step_engine(graphs)
    operator = "graph" in backends and graphs.get(contract.SAMPLE) is not None
    threshold = RUN_FALSE_FAILURE_RATE / (int(operator) + 2 * int(engine) or 1)
    eos = generator.manifest.special_tokens.eos_token_id
    greedy = [g[0].token_ids for g in generator.generate(input_ids=prompts, max_new_tokens=8).sequences]
    prompt = prompts[0][:4]

    sample = graphs.get(contract.SAMPLE)
    if operator:
        temperature, top_p = float(sample.attributes["temperature"]), float(sample.attributes["top_p"])
        checks.append(_reproducibility(generator, prompts, "graph", 0, seed))
        ids, mask = left_pad(prompts)
        out = _tiny_top_p_session(generator).run([contract.SEQUENCES], {
            contract.INPUT_IDS: ids, contract.MAX_LENGTH: np.array([ids.shape[1] + 8], np.int32),
            contract.MIN_LENGTH: np.array([0], np.int32), contract.REPETITION_PENALTY: np.array([1.0], np.float32),
            contract.ATTENTION_MASK: mask, contract.SEED: np.array([5], np.int32),
        })[0]
        tiny = [[int(t) for t in row[ids.shape[1]:]] for row in out]
        tiny = [row[: row.index(eos)] if eos in row else row for row in tiny]
        checks.append(SamplingCheck("graph: top_p=1e-6 equals greedy", PASS if tiny == greedy else FAIL,
                                    f"{len(prompts)} prompts, 8 tokens" + ("" if tiny == greedy else
                                                                          f": sampled {tiny} vs greedy {greedy}")))
        checks.append(_frequencies(generator, reference, prompt, draws, "graph", temperature, top_p, 0, seed + 1,
                                   threshold))
    if engine:
        checks.append(_reproducibility(generator, prompts, "engine", 50, seed))
        top1 = generator.generate(input_ids=prompts, max_new_tokens=8, top_k=1, seed=seed, backend="engine")
        sampled = [g[0].token_ids for g in top1.sequences]
        checks.append(SamplingCheck("engine: top_k=1 equals greedy", PASS if sampled == greedy else FAIL,
                                    f"{len(prompts)} prompts, 8 tokens" + ("" if sampled == greedy else
                                                                          f": sampled {sampled} vs greedy {greedy}")))
        checks.append(_frequencies(generator, reference, prompt, draws, "engine", 1.0, 1.0, 50, seed + 2, threshold))
        checks.append(_frequencies(generator, reference, prompt, draws, "engine", 0.7, 0.9, 20, seed + 3, threshold))
    return checks
