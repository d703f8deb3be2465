"""The ``--backend onnxruntime`` ensemble's python steps, without Triton: text and TensorRT-LLM
settings in, the generation graph's tensors out; its sequences in, text out.

    text_input, settings ─► Preprocessor ─► input_ids [B,S] (left-padded with each row's first token),
                                            attention_mask [B,S], max_length [1], min_length [1],
                                            repetition_penalty [1], num_beams / num_return_sequences /
                                            length_penalty [1] (BeamSearch) or seed [1] (Sampling),
                                            prompt_width [1] (for the postprocessing)
                         ─► <NAME>_generator (onnxruntime backend: generate_<strategy>.onnx)
    sequences [B,R,L] or [B*n,L], sequences_scores [B,R] ─► Postprocessor ─► text_output [B, n],
                                                                            cum_log_probs [B, n] (BeamSearch)

The same rules as ortgen's own graph runner (:mod:`ortgen.runtime.graph_runner`): settings resolved
against the package's defaults and checked for what the operator can express, prompts encoded with
the package's prompt format, rows read up to the first EOS after the prompt. One operator call runs
the whole request, so every prompt of a request shares one set of settings.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ortgen.errors import GenerationSettingsError
from ortgen.package import GraphInfo, Manifest, contract
from ortgen.runtime.backend import graph_unsupported
from ortgen.runtime.generator import Generator
from ortgen.runtime.graph_runner import OPERATORS, left_pad
from ortgen.runtime.settings import BEAM, GREEDY, SAMPLE, GenerationSettings, check_lengths
from ortgen.runtime.tokenizer import load_tokenizer
from ortgen.serve.trtllm import STREAM
from ortgen.triton.tensors import (BAD_WORDS, CUM_LOG_PROBS, RETURN_LOG_PROBS, TEXT_OUTPUT, read_prompts,
                                   text_matrix, to_options)

PROMPT_WIDTH = "prompt_width"  # int32 [1]: the padded prompt's width, where the new tokens start
GRAPH_STRATEGIES = {contract.BEAM: (BEAM, GREEDY), contract.BEAM_EARLY_STOPPING: (BEAM, GREEDY),
                    contract.GREEDY: (GREEDY,), contract.SAMPLE: (SAMPLE,)}
STRATEGY_NAMES = {BEAM: "beam search", GREEDY: "greedy search", SAMPLE: "sampling"}
PYTHON_BACKEND_HINT = "the `ortgen triton --backend python` repository runs every setting"


def _one_setting_for_all(prompts) -> dict[str, Any]:
    values = prompts[0].values
    for row, prompt in enumerate(prompts[1:], start=1):
        if prompt.values != values:
            raise GenerationSettingsError(
                f"prompt {row} has other settings than prompt 0 ({prompt.values} vs {values}); the operator runs a "
                "request's prompts in one call with one set of settings: send them as separate requests")
    return dict(values)


class Preprocessor:
    """The ``<NAME>_preprocessing`` step for the generation graph ``graph`` (beam, beam_early_stopping,
    greedy, sample). ``routes``: strategy -> the ensemble that runs it, for error messages."""

    def __init__(self, generator: Generator, graph: str, routes: Mapping[str, str] | None = None) -> None:
        if generator.tokenizer is None:
            raise GenerationSettingsError("the package has no tokenizer: a text-in ensemble needs one")
        self.generator = generator
        self.graph = graph
        self.info = generator.manifest.graphs[graph]
        self.routes = dict(routes or {})

    def settings(self, values: dict[str, Any]) -> GenerationSettings:
        if values.pop(STREAM, False):
            raise GenerationSettingsError("this ensemble does not stream (the ONNX Runtime operator returns whole "
                                          f"sequences); {PYTHON_BACKEND_HINT} and streams")
        values.pop(RETURN_LOG_PROBS, None)  # BeamSearch's cum_log_probs come anyway; the others have none
        if values.get(BAD_WORDS):
            raise GenerationSettingsError(f"bad_words: the ONNX Runtime operators take none; {PYTHON_BACKEND_HINT}")
        values.pop(BAD_WORDS, None)
        options = to_options(values)
        if self.graph == contract.SAMPLE and "do_sample" not in options and "num_beams" not in options:
            options.update(do_sample=True, top_k=0)  # this ensemble samples; top-k is the operator's to lack
        elif self.graph == contract.GREEDY and "num_beams" not in options and "do_sample" not in options:
            options["do_sample"] = False
        settings = self.generator.settings_for(**options, backend="graph")
        allowed = GRAPH_STRATEGIES[self.graph]
        if settings.strategy not in allowed:
            route = self.routes.get(settings.strategy)
            where = f"send it to the {route!r} model" if route else PYTHON_BACKEND_HINT
            raise GenerationSettingsError(
                f"this ensemble runs {OPERATORS[self.graph]}, which does "
                f"{' and '.join(STRATEGY_NAMES[s] for s in allowed)}; the request asks for "
                f"{STRATEGY_NAMES.get(settings.strategy, settings.strategy)}: {where}")
        unsupported = graph_unsupported(settings, self.generator.manifest.graphs,
                                        self.generator.manifest.special_tokens.eos_token_id)
        if unsupported:
            raise GenerationSettingsError("the ONNX Runtime operator cannot run these settings: "
                                          + "; ".join(unsupported) + f"; {PYTHON_BACKEND_HINT}")
        if settings.strategy == BEAM and settings.early_stopping is not bool(self.info.attributes.get("early_stopping")):
            raise GenerationSettingsError(
                f"early_stopping={settings.early_stopping} differs from this ensemble's BeamSearch "
                f"(early_stopping={bool(self.info.attributes.get('early_stopping'))}, fixed at export); "
                f"{PYTHON_BACKEND_HINT}")
        return settings

    def __call__(self, tensors: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        prompts = read_prompts(tensors)
        settings = self.settings(_one_setting_for_all(prompts))
        batch = self.generator.encode([p.text for p in prompts])
        positions = self.generator.manifest.architecture.max_positions
        for ids in batch:
            check_lengths(settings, len(ids), positions)
        input_ids, mask = left_pad(batch)  # each row padded with its own first token (graph_runner.left_pad)
        width = input_ids.shape[1]
        new = check_lengths(settings, width, positions)  # the longest prompt governs a max_length default
        min_total = max(settings.min_length, width + settings.min_new_tokens if settings.min_new_tokens else 0)
        n = settings.num_return_sequences
        if self.graph == contract.SAMPLE:  # one draw per row: each prompt n times
            input_ids, mask = np.repeat(input_ids, n, axis=0), np.repeat(mask, n, axis=0)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31 - 2)
        feeds = {
            contract.INPUT_IDS: input_ids,
            contract.ATTENTION_MASK: mask,
            contract.MAX_LENGTH: np.array([width + new], dtype=np.int32),
            contract.MIN_LENGTH: np.array([min_total], dtype=np.int32),
            contract.REPETITION_PENALTY: np.array([settings.repetition_penalty], dtype=np.float32),
            contract.NUM_BEAMS: np.array([settings.num_beams], dtype=np.int32),
            contract.NUM_RETURN_SEQUENCES: np.array([n], dtype=np.int32),
            contract.LENGTH_PENALTY: np.array([settings.length_penalty], dtype=np.float32),
            # the operator's seed is an int32 and 0 means "from the clock": as graph_runner maps it
            contract.SEED: np.array([seed % (2**31 - 2) + 1], dtype=np.int32),
        }
        feeds[PROMPT_WIDTH] = np.array([width], dtype=np.int32)
        return {name: feeds[name] for name in preprocessing_outputs(self.info)}


def preprocessing_outputs(info: GraphInfo) -> list[str]:
    """The generation graph's inputs in its order, then what only the postprocessing reads."""
    names = [t.name for t in info.inputs]
    return names + [n for n in postprocessing_inputs(info) if n not in names and n != contract.SEQUENCES
                    and n != contract.SEQUENCES_SCORES]


def text_generator(package_dir: Path) -> Generator:
    """A Generator that only encodes, resolves settings and decodes: the manifest and tokenizer of a
    package directory that may hold no graph at all (the pre/postprocessing models' copy)."""
    manifest = Manifest.load(package_dir)
    tokenizer = load_tokenizer(package_dir / contract.TOKENIZER_DIR, manifest.tokenizer) if manifest.tokenizer else None
    return Generator(package_dir, manifest, tokenizer, ["CPUExecutionProvider"], threads=None)


class Postprocessor:
    """The ``<NAME>_postprocessing`` step: the operator's rows up to the first EOS, decoded."""

    def __init__(self, generator: Generator, graph: str) -> None:
        self.generator = generator
        self.graph = graph
        self.eos = generator.manifest.special_tokens.eos_token_id

    def _tokens(self, row: np.ndarray, width: int) -> list[int]:
        new = [int(t) for t in row[width:]]
        return new[: new.index(self.eos)] if self.eos in new else new

    def _text(self, tokens: list[int]) -> str:
        tokenizer = self.generator.tokenizer
        return tokenizer.decode(tokens) if tokenizer is not None else " ".join(map(str, tokens))

    def __call__(self, tensors: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        sequences = np.asarray(tensors[contract.SEQUENCES])
        width = int(np.asarray(tensors[PROMPT_WIDTH]).reshape(-1)[0])
        if sequences.ndim == 3:  # BeamSearch: [B, R, L]
            tokens = [[self._tokens(row, width) for row in group] for group in sequences]
            scores = np.asarray(tensors[contract.SEQUENCES_SCORES], dtype=np.float64)
            penalty = float(np.asarray(tensors[contract.LENGTH_PENALTY]).reshape(-1)[0])
            # ONNX Runtime's score = logprob sum / (prompt + generated) ** length_penalty (EOS not counted)
            cum = [[float(scores[b, r]) * float(width + len(t)) ** penalty for r, t in enumerate(group)]
                   for b, group in enumerate(tokens)]
            return {TEXT_OUTPUT: text_matrix([[self._text(t) for t in g] for g in tokens]),
                    CUM_LOG_PROBS: np.array(cum, dtype=np.float32)}
        n = int(np.asarray(tensors[contract.NUM_RETURN_SEQUENCES]).reshape(-1)[0]) \
            if tensors.get(contract.NUM_RETURN_SEQUENCES) is not None else 1
        flat = [self._text(self._tokens(row, width)) for row in sequences]  # [B * n, L]
        return {TEXT_OUTPUT: text_matrix([flat[b * n:(b + 1) * n] for b in range(len(flat) // n)])}


def postprocessing_inputs(info: GraphInfo) -> list[str]:
    """What the postprocessing of generation graph ``info`` reads."""
    names = [contract.SEQUENCES, PROMPT_WIDTH]
    if info.operator == "BeamSearch":
        names += [contract.SEQUENCES_SCORES, contract.LENGTH_PENALTY]
    elif info.operator == "Sampling":  # rows are [prompt 0 x n, prompt 1 x n, ...]
        names.append(contract.NUM_RETURN_SEQUENCES)
    return names
