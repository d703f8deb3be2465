"""Which backend runs a request: the in-graph operators, or the step engine.

ONNX Runtime's BeamSearch / GreedySearch / Sampling operators are fast and self-contained
(one call per request, what Triton serves), but their semantics equal transformers' only
for some settings (docs/ort-vs-transformers.md), and they run each prompt once per beam. The step
engine equals transformers for every setting and was faster on every workload of ``ortgen bench``
(docs/benchmarks.md), so ``auto`` runs every request on it, and in-graph only for packages exported
by an older ortgen without it, where the operators equal transformers. ``graph`` and ``engine``
force a backend (``graph`` refuses what the operators cannot express, and says when their result
may differ).
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.package import contract
from ortgen.errors import GenerationSettingsError
from ortgen.runtime.settings import BEAM, BEAM_SAMPLE, SAMPLE, GenerationSettings

GRAPH, ENGINE = "graph", "engine"


def graph_limitations(settings: GenerationSettings, graphs: Mapping[str, Any], default_eos: int) -> list[str]:
    """Why the in-graph operators would not generate what transformers does (empty: they would).

    Short reasons; docs/ort-vs-transformers.md explains each.
    """
    reasons = []
    if settings.strategy == BEAM and settings.length_penalty != 0:
        reasons.append("length_penalty != 0: BeamSearch normalises beam scores by another length")
    others = [i for i in settings.eos_token_ids if i != default_eos]
    if others and default_eos in settings.eos_token_ids and (
            settings.strategy == BEAM or settings.min_length or settings.min_new_tokens):
        reasons.append(f"eos_token_id={settings.eos_token_ids}: the operators end sequences on {default_eos} only "
                       f"(and ban only it below the minimum length); {others} are cut from their output afterwards")
    return reasons + graph_unsupported(settings, graphs, default_eos)


def graph_unsupported(settings: GenerationSettings, graphs: Mapping[str, Any], default_eos: int) -> list[str]:
    """Settings the in-graph operators cannot express at all."""
    reasons = []
    if settings.strategy == BEAM_SAMPLE:
        reasons.append("beam sampling: BeamSearch cannot sample")
    if settings.constraint is not None:
        reasons.append(f"structured output ({settings.constraint.describe()}): the operators cannot constrain tokens")
    if settings.prompt_logprobs is not None:
        reasons.append("prompt_logprobs: the operators return no prompt log-probabilities")
    if settings.logprobs is not None:
        reasons.append("logprobs: the operators return no per-token log-probabilities")
    if settings.early_stopping == "never":
        reasons.append("early_stopping='never': BeamSearch lacks it")
    if settings.strategy == SAMPLE:
        sample = graphs.get(contract.SAMPLE)
        if settings.top_k:
            reasons.append(f"top_k={settings.top_k}: the Sampling operator has no top-k (transformers samples with "
                           "top_k=50 unless told otherwise; pass top_k=0 to sample without it)")
        if sample is None:
            reasons.append("no Sampling graph in the package")
        elif (settings.temperature, settings.top_p) != (float(sample.attributes["temperature"]),
                                                        float(sample.attributes["top_p"])):
            reasons.append(f"temperature={settings.temperature:g} / top_p={settings.top_p:g} differ from the Sampling "
                           f"graph's {sample.attributes['temperature']:g} / {sample.attributes['top_p']:g}, fixed at "
                           "export (re-export with `ortgen export --temperature T --top-p P` to bake in others)")
    if settings.no_repeat_ngram_size:
        reasons.append("no_repeat_ngram_size: fixed at 0 in the exported operators")
    if settings.bad_words_ids:
        reasons.append("bad_words_ids: the operators take none")
    if settings.stop_strings:
        reasons.append("stop_strings: the operators have none")
    if default_eos not in settings.eos_token_ids:
        reasons.append(f"eos_token_id={settings.eos_token_ids}: the operators stop on {default_eos}, fixed at export")
    return reasons


def has_step_engine(graphs: Mapping[str, Any]) -> bool:
    """Whether the package has a step-engine decoder this ortgen can drive (packages exported
    before the engine took packed tokens lack ``slot_tokens``; before the engine existed for every
    head size, some lack the graph)."""
    engine = graphs.get(contract.DECODER_ENGINE)
    return engine is not None and any(t.name == contract.SLOT_TOKENS for t in engine.inputs)


def choose_backend(settings: GenerationSettings, graphs: Mapping[str, Any], default_eos: int) -> tuple[str, str]:
    """(backend, why) for a request."""
    has_engine = has_step_engine(graphs)
    limits = graph_limitations(settings, graphs, default_eos)
    if settings.backend == GRAPH:
        unsupported = graph_unsupported(settings, graphs, default_eos)
        if unsupported:
            raise GenerationSettingsError("backend='graph' cannot run these settings: " + "; ".join(unsupported)
                                          + ". Use backend='engine' (or 'auto').")
        if limits:
            return GRAPH, "requested; may differ from transformers: " + "; ".join(limits)
        return GRAPH, "requested"
    if settings.backend == ENGINE:
        if not has_engine:
            raise GenerationSettingsError("this package has no step-engine graph this ortgen can run "
                                          "(decoder_engine.onnx): it was exported by an older ortgen; re-export it "
                                          "with this one")
        return ENGINE, "requested"
    if has_engine:
        return ENGINE, "auto: ortgen's step engine, exact for every setting and faster than the in-graph operators"
    if not limits:
        return GRAPH, "no step engine in this package; the in-graph operator matches transformers here"
    raise GenerationSettingsError("these settings need the step engine, which this package lacks (it was exported "
                                  "by an older ortgen; re-export it with this one): " + "; ".join(limits))
