"""Names and dtypes that the exporter writes and the runtime reads.

The decoder follows ONNX Runtime's GPT subgraph contract (what the com.microsoft
BeamSearch / GreedySearch / Sampling operators drive); the generation models follow the
input contract a Triton client already sends.
"""

from __future__ import annotations

# Decoder graph (decoder.onnx and the subgraph inside generate_*.onnx)
INPUT_IDS = "input_ids"  # int32 [batch, seq]
POSITION_IDS = "position_ids"  # int32 [batch, seq]; positions are derived from attention_mask
ATTENTION_MASK = "attention_mask"  # int32 [batch, past + seq]
LOGITS = "logits"  # float [batch, seq, vocab]


def past_name(layer: int) -> str:
    """float [2, batch, heads, past_seq, head_dim]: key and value stacked."""
    return f"past_{layer}"


def present_name(layer: int) -> str:
    """float [2, batch, heads, past_seq + seq, head_dim]."""
    return f"present_{layer}"


# Step-engine decoder (decoder_engine.onnx): the step's new tokens packed as input_ids / position_ids
# [1, tokens]; past_key_i / past_value_i and present_key_i / present_value_i (the same buffers,
# [rows, heads, capacity, cache_head_dim]); logits [picks, vocab]
SLOT_TOKENS = "slot_tokens"  # int32 [rows, slots]: the packed token in each (row, slot); padded slots: any
TOKEN_SLOTS = "token_slots"  # int32 [tokens]: the flat slot (row * slots + slot) of each packed token
SEQLENS_K = "seqlens_k"  # int32 [rows]: total valid length - 1 of each row (after this call)
TOTAL_SEQUENCE_LENGTH = "total_sequence_length"  # int32 scalar: the longest row's total length
QUERY_SEQLENS = "query_seqlens"  # int32 [rows]: new tokens of each row in this call (0: untouched)
ATTENTION_BIAS = "attention_bias"  # float [rows or 1, 1, slots, total]: 0 visible, -inf hidden
LOGITS_INDEX = "logits_index"  # int32 [picks]: which packed tokens give logits
# What a search without (or with only EOS-banning) logits processors needs of a picked row, so that
# the whole [picks, vocab] logits need not leave the device (packages exported before lack them)
BEST_K = "best_k"  # int64 [1]: how many of each picked row's largest logits to return (1 <= best_k <= vocab)
BEST_LOGITS = "best_logits"  # float32 [picks, best_k]: those logits, largest first (ties: lower token id first)
BEST_IDS = "best_ids"  # int64 [picks, best_k]: their token ids
LOGSUMEXP = "logsumexp"  # float32 [picks, 1]: log(sum(exp(logits))) of the row: log-probability = logit - it


def past_key_name(layer: int) -> str:
    """float [batch, heads, capacity, head_dim], bound to the same buffer as present_key_name(layer)."""
    return f"past_key_{layer}"


def past_value_name(layer: int) -> str:
    return f"past_value_{layer}"


def present_key_name(layer: int) -> str:
    return f"present_key_{layer}"


def present_value_name(layer: int) -> str:
    return f"present_value_{layer}"


# Generation models
MAX_LENGTH = "max_length"  # int32 [1]: prompt (padded) + new tokens
MIN_LENGTH = "min_length"  # int32 [1]
NUM_BEAMS = "num_beams"  # int32 [1]
NUM_RETURN_SEQUENCES = "num_return_sequences"  # int32 [1]
LENGTH_PENALTY = "length_penalty"  # float [1]
REPETITION_PENALTY = "repetition_penalty"  # float [1]
SEED = "seed"  # int32 [1] (sampling)
SEQUENCES = "sequences"  # int32 [batch, num_return_sequences, max_length] (beam) or [batch, max_length]
SEQUENCES_SCORES = "sequences_scores"  # float [batch, num_return_sequences] (beam)

# Strategies and the files that implement them in a package
BEAM = "beam"
GREEDY = "greedy"
SAMPLE = "sample"
STRATEGIES = (BEAM, GREEDY, SAMPLE)
DECODER = "decoder"
DECODER_ENGINE = "decoder_engine"  # the step engine's decoder (GroupQueryAttention, in-place KV cache)
BEAM_EARLY_STOPPING = "beam_early_stopping"  # BeamSearch with early_stopping=1 (an attribute, so a graph of its own)
GRAPH_FILES = {
    DECODER: "decoder.onnx",
    DECODER_ENGINE: "decoder_engine.onnx",
    BEAM: "generate_beam.onnx",
    BEAM_EARLY_STOPPING: "generate_beam_early_stopping.onnx",
    GREEDY: "generate_greedy.onnx",
    SAMPLE: "generate_sample.onnx",
}
WEIGHTS_FILE = "weights.bin"
MANIFEST_FILE = "ortgen.json"
TOKENIZER_DIR = "tokenizer"
