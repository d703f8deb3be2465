"""``validate_package``: run every level and collect the report.

Levels: ``full`` (checksums, decoder, the whole prompt x settings grid, sampling
statistics) and ``fast`` (decoder, one batch with greedy and beam search; what
``ortgen export --validate`` runs). Packages with int8/int4 weights get the quantization
quality check instead of the token-for-token levels.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import onnxruntime

from ortgen import __version__
from ortgen.package import contract
from ortgen.errors import OrtgenError
from ortgen.package.manifest import verify_files
from ortgen.runtime.backend import graph_unsupported, has_step_engine
from ortgen.runtime.generator import Generator
from ortgen.runtime.graph_runner import graph_key
from ortgen.validate import suite as suites
from ortgen.validate.decoder_check import check_decoder
from ortgen.validate.generation_check import run_case
from ortgen.validate.reference import Reference
from ortgen.validate.report import MISMATCH, Report
from ortgen.validate.quantization_check import check_quantization
from ortgen.validate.sampling_check import check_sampling

log = logging.getLogger(__name__)


def _tolerance(model_type: str) -> float:
    from ortgen.arch import get_spec

    spec = get_spec(model_type)
    return max(spec.tolerance.logits_atol, spec.tolerance.present_atol)


def build_suite(generator: Generator, prompts: list | None, settings: list[dict[str, Any]] | None,
                fast: bool, draws: int) -> suites.Suite:
    """Prompt batches as token ids (tokenized when text), and the settings grid."""
    manifest = generator.manifest
    notes = []
    if prompts is None:
        if generator.tokenizer is not None:
            prompts = suites.DEFAULT_PROMPTS
        else:
            prefix = manifest.tokenizer.prefix_ids if manifest.tokenizer else []
            prompts = suites.random_prompts(manifest.architecture.vocab_size, prefix, [1, 12, 40, 4, 9])
            notes.append("the package has no tokenizer: random token-id prompts")
    texts = None
    if prompts and isinstance(prompts[0], str):
        texts = prompts
        ids = generator.encode(prompts)
    else:
        ids = [list(map(int, p)) for p in prompts]
    vocab = manifest.architecture.vocab_size
    for p in ids:
        if any(not 0 <= t < vocab for t in p):
            raise OrtgenError(f"a prompt has a token id outside the vocabulary [0, {vocab})")
    grid = settings if settings is not None else (suites.FAST_SETTINGS if fast else suites.DEFAULT_SETTINGS)
    room = manifest.architecture.max_positions - max(int(e.get("max_new_tokens", 32)) for e in grid)
    if room < 1:
        raise OrtgenError(f"max_new_tokens in the settings leaves no room for a prompt in "
                          f"{manifest.architecture.max_positions} positions")
    if any(len(p) > room for p in ids):
        # keep a prompt format's learned tokens at the end; cut the source text before them
        suffix = generator.prompt_format.learned_prompt_ids if generator.prompt_format and texts else []
        ids = [p if len(p) <= room else p[: room - len(suffix)] + suffix for p in ids]
        notes.append(f"prompts truncated to {room} tokens to fit {manifest.architecture.max_positions} positions")
    batches = suites.batches_of(ids)
    if fast:
        batches = batches[:1]
    return suites.Suite(batches, suites.batches_of(texts) if texts else None, grid, draws, fast, notes)


def _validate_quantized(generator: Generator, reference: Reference, report: Report, prompts: list | None,
                        fast: bool, started: float) -> Report:
    """float16 / int8 / int4 weights move every logit a little: token-for-token parity is a float32
    promise. Such a package is held to its weight type's stated quality instead."""
    weights = generator.manifest.weights_dtype
    suite = build_suite(generator, prompts, [{"name": "greedy", "max_new_tokens": 24}], fast, draws=0)
    report.notes = suite.notes + [
        f"{weights} weights: checked for quality against the float32 reference (greedy agreement, logit error; "
        "docs/quantization.md), not token for token"
    ]
    log.info("quantization: %s package against float32 transformers on %d prompts", weights,
             sum(map(len, suite.batches)))
    report.quantization = check_quantization(generator, reference, suite.batches)
    report.seconds = time.perf_counter() - started
    return report


def validate_package(
    package: Path | str,
    reference_source: str,
    *,
    prompts: list | None = None,
    settings: list[dict[str, Any]] | None = None,
    fast: bool = False,
    draws: int = 1000,
    generator: Generator | None = None,
    reference: Reference | None = None,
    backends: tuple[str, ...] = ("graph", "engine"),
    seed: int | None = None,
) -> Report:
    """Compare a package with its transformers reference; see the package docstring."""
    started = time.perf_counter()
    package = Path(package)
    # one loaded graph at a time: each holds its own pre-packed copy of the weights
    generator = generator or Generator.load(package, max_sessions=1)
    log.info("loading the reference model %s with transformers", reference_source)
    reference = reference or Reference.load(reference_source)
    theirs, ours = reference.model.config.model_type, generator.manifest.architecture.model_type
    if theirs != ours:
        raise OrtgenError(f"the reference {reference_source!r} is a {theirs} model, the package a {ours} model: "
                          "pass the model the package was exported from")
    if reference.model.config.vocab_size != generator.manifest.architecture.vocab_size:
        raise OrtgenError(
            f"the reference has vocab_size {reference.model.config.vocab_size}, the package "
            f"{generator.manifest.architecture.vocab_size}: not the same model"
        )
    import transformers

    report = Report(
        package=str(package), reference=reference_source,
        versions={"ortgen": __version__, "onnxruntime": onnxruntime.__version__,
                  "transformers": transformers.__version__, "python": platform.python_version()},
        level="fast" if fast else "full",
        files=[] if fast else verify_files(package, generator.manifest),
    )
    if generator.manifest.weights_dtype != "float32":
        return _validate_quantized(generator, reference, report, prompts, fast, started)
    tolerance = _tolerance(generator.manifest.architecture.model_type)
    log.info("decoder: 3 cases against transformers' forward (tolerance %g)", tolerance)
    report.decoder = check_decoder(generator.session(contract.DECODER), generator.manifest, reference, tolerance)
    generator.release(contract.DECODER)

    suite = build_suite(generator, prompts, settings, fast, draws)
    for note in suite.notes:
        log.warning("%s", note)
    report.notes = suite.notes
    # every case on each backend the package has; run grouped by graph (each graph loads once),
    # report in suite order
    plan = []
    for b in range(len(suite.batches)):
        for i, entry in enumerate(suite.settings):
            settings = generator.settings_for(**{k: v for k, v in entry.items() if k != "name"})
            for backend in backends:
                if backend == "engine" and not has_step_engine(generator.manifest.graphs):
                    continue
                if backend == "graph" and graph_unsupported(settings, generator.manifest.graphs,
                                                            generator.manifest.special_tokens.eos_token_id):
                    continue  # the operators cannot express these settings at all
                graph = contract.DECODER_ENGINE if backend == "engine" else graph_key(settings)
                plan.append((b, i, backend, graph))
    results = {}
    for done, (b, i, backend, graph) in enumerate(sorted(plan, key=lambda p: p[3]), start=1):
        entry = suite.settings[i]
        case = run_case(generator, reference, suite.batches[b], b, entry, backend)
        log.info("generation %d/%d: %s on batch #%d, %s: %s", done, len(plan), entry["name"], b, backend,
                 case.status.upper() if case.status == MISMATCH else case.status)
        results[(b, i, backend)] = case
    report.generation = [results[(b, i, backend)] for b, i, backend, _ in plan]
    if not fast:
        log.info("sampling: reproducibility, greedy limits, %d-draw frequency tests", draws)
        report.sampling = check_sampling(generator, reference, suite.batches[0], draws, backends, seed)
    report.seconds = time.perf_counter() - started
    return report
