"""Generation models: the decoder inside ONNX Runtime's BeamSearch / GreedySearch / Sampling.

Each model is one com.microsoft node whose ``decoder`` attribute is the decoder graph;
its initializers point into the shared weight file, so the three models and
``decoder.onnx`` store the weights once.

    input_ids, max_length, ... ──► BeamSearch(decoder=<graph>) ──► sequences [B, R, max_length]
                                                               └─► sequences_scores [B, R]

The operators' ``pad_token_id`` attribute is set to the EOS id. The operators use it only
to fill finished rows (the prompt's padding is described by ``attention_mask``, and
positions are derived from it in the decoder), and with the real pad id they would write
pad where transformers writes EOS, which is ambiguous when pad is an ordinary token. With
EOS as the fill, every output row reads: prompt, new tokens, EOS, then filler. Read up to
the first EOS after the prompt: GreedySearch and Sampling leave the tail uninitialised
once every row has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from ortgen.package import contract
from ortgen.arch import ModelDims
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder

OPSET = 17
IR_VERSION = 9  # readable by ONNX Runtime 1.15 and later


@dataclass(frozen=True)
class SpecialTokens:
    eos_token_id: int
    pad_token_id: int  # the model's pad id (prompts are left-padded with it)

    @property
    def fill_token_id(self) -> int:
        """What the operators write after a sequence ends (their pad_token_id attribute)."""
        return self.eos_token_id


@dataclass(frozen=True)
class SamplingOptions:
    """Fixed at export: the Sampling operator takes them as attributes, not inputs."""

    temperature: float = 1.0
    top_p: float = 1.0


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """Wrap a graph with the opsets our graphs use (ai.onnx 17 and com.microsoft 1)."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="ortgen",
    )
    model.ir_version = IR_VERSION
    return model


def _common_inputs(g: GraphBuilder) -> None:
    g.input(contract.INPUT_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.MAX_LENGTH, TensorProto.INT32, [1])
    g.input(contract.MIN_LENGTH, TensorProto.INT32, [1])


def build_beam_search(
    dims: ModelDims, decoder: onnx.GraphProto, tokens: SpecialTokens, *, early_stopping: bool = False
) -> onnx.ModelProto:
    """Inputs: input_ids, max_length, min_length, num_beams, num_return_sequences,
    length_penalty, repetition_penalty, attention_mask. Outputs: sequences, sequences_scores.

    ``early_stopping`` is an operator attribute: True stops a prompt as soon as num_beams
    hypotheses have finished (transformers' ``early_stopping=True``).
    """
    g = GraphBuilder("beam_search")
    _common_inputs(g)
    g.input(contract.NUM_BEAMS, TensorProto.INT32, [1])
    g.input(contract.NUM_RETURN_SEQUENCES, TensorProto.INT32, [1])
    g.input(contract.LENGTH_PENALTY, TensorProto.FLOAT, [1])
    g.input(contract.REPETITION_PENALTY, TensorProto.FLOAT, [1])
    g.input(contract.ATTENTION_MASK, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.output(contract.SEQUENCES, TensorProto.INT32, ["batch_size", "num_return_sequences", "max_length"])
    g.output(contract.SEQUENCES_SCORES, TensorProto.FLOAT, ["batch_size", "num_return_sequences"])
    g.node(
        "BeamSearch",
        [contract.INPUT_IDS, contract.MAX_LENGTH, contract.MIN_LENGTH, contract.NUM_BEAMS,
         contract.NUM_RETURN_SEQUENCES, contract.LENGTH_PENALTY, contract.REPETITION_PENALTY,
         "", "", contract.ATTENTION_MASK],
        name="/generate/BeamSearch",
        outputs=[contract.SEQUENCES, contract.SEQUENCES_SCORES],
        domain=MS_DOMAIN,
        decoder=decoder,
        eos_token_id=tokens.eos_token_id,
        pad_token_id=tokens.fill_token_id,
        model_type=0,
        early_stopping=int(early_stopping),
        no_repeat_ngram_size=0,
        vocab_size=dims.vocab_size,
    )
    return make_model(g.build())


def build_greedy_search(dims: ModelDims, decoder: onnx.GraphProto, tokens: SpecialTokens) -> onnx.ModelProto:
    """Inputs: input_ids, max_length, min_length, repetition_penalty, attention_mask. Output: sequences."""
    g = GraphBuilder("greedy_search")
    _common_inputs(g)
    g.input(contract.REPETITION_PENALTY, TensorProto.FLOAT, [1])
    g.input(contract.ATTENTION_MASK, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.output(contract.SEQUENCES, TensorProto.INT32, ["batch_size", "max_length"])
    g.node(
        "GreedySearch",
        [contract.INPUT_IDS, contract.MAX_LENGTH, contract.MIN_LENGTH, contract.REPETITION_PENALTY,
         "", "", contract.ATTENTION_MASK],
        name="/generate/GreedySearch",
        outputs=[contract.SEQUENCES],
        domain=MS_DOMAIN,
        decoder=decoder,
        eos_token_id=tokens.eos_token_id,
        pad_token_id=tokens.fill_token_id,
        model_type=0,
        no_repeat_ngram_size=0,
        vocab_size=dims.vocab_size,
    )
    return make_model(g.build())


def build_sampling(
    dims: ModelDims, decoder: onnx.GraphProto, tokens: SpecialTokens, options: SamplingOptions
) -> onnx.ModelProto:
    """Inputs: input_ids, max_length, min_length, repetition_penalty, attention_mask, seed.

    ``min_tokens_to_keep=1`` and an explicit ``top_p``: with the operator's schema
    defaults (top_p=0, min_tokens_to_keep=0) every token is filtered and it samples
    almost uniformly.
    """
    g = GraphBuilder("sampling")
    _common_inputs(g)
    g.input(contract.REPETITION_PENALTY, TensorProto.FLOAT, [1])
    g.input(contract.ATTENTION_MASK, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.SEED, TensorProto.INT32, [1])
    g.output(contract.SEQUENCES, TensorProto.INT32, ["batch_size", "max_length"])
    g.node(
        "Sampling",
        [contract.INPUT_IDS, contract.MAX_LENGTH, contract.MIN_LENGTH, contract.REPETITION_PENALTY,
         "", "", contract.ATTENTION_MASK, "", contract.SEED],
        name="/generate/Sampling",
        outputs=[contract.SEQUENCES],
        domain=MS_DOMAIN,
        decoder=decoder,
        eos_token_id=tokens.eos_token_id,
        pad_token_id=tokens.fill_token_id,
        model_type=0,
        no_repeat_ngram_size=0,
        vocab_size=dims.vocab_size,
        temperature=float(options.temperature),
        top_p=float(options.top_p),
        min_tokens_to_keep=1,
        filter_value=float("-inf"),
    )
    return make_model(g.build())
