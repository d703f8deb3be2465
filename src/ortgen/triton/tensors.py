"""The tensors a Triton client sends and gets back (TensorRT-LLM's ensemble names), as plain values.

Both repository kinds take the same inputs and return the same outputs, shaped the way clients of
TensorRT-LLM's ensemble send them ([batch, 1] per setting), with ``max_batch_size: 0`` so the
shapes are explicit (the onnxruntime generator cannot batch: its settings are [1] tensors):

    text_input          BYTES [B, 1]   one prompt per row (required)
    max_tokens, ...     [B or 1, 1]    optional; one row applies to every prompt (ortgen.serve.trtllm.SETTINGS)
    stop_words, bad_words  BYTES [B or 1, W]   words per row; empty strings are ignored
    stream              BOOL  [1, 1]   stream deltas (the decoupled model only)
    return_log_probs    BOOL  [1, 1]   also return cum_log_probs
    ->
    text_output         BYTES [B, N]   N sequences per prompt (num_return_sequences)
    cum_log_probs       FP32  [B, N]   the sequences' summed log-probabilities (when available)

No Triton and no web framework here: the python-backend models hand numpy arrays in and take
numpy arrays back, and the tests call these functions directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ortgen.errors import GenerationSettingsError
from ortgen.serve.trtllm import SETTINGS, STREAM, settings_to_options

TEXT_INPUT = "text_input"
TEXT_OUTPUT = "text_output"
CUM_LOG_PROBS = "cum_log_probs"
RETURN_LOG_PROBS = "return_log_probs"
BAD_WORDS = "bad_words"

# name -> (Triton datatype, what it does): the inputs beyond ortgen.serve.trtllm.SETTINGS
EXTRA_INPUTS: dict[str, tuple[str, str]] = {
    STREAM: ("BOOL", "stream text as it is generated (decoupled model)"),
    RETURN_LOG_PROBS: ("BOOL", "also return cum_log_probs"),
    BAD_WORDS: ("BYTES", "words that must not be generated"),
}
WORD_LISTS = ("stop_words", BAD_WORDS)  # BYTES [rows, words]
# KServe datatype -> model config data_type
CONFIG_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
                "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32"}


@dataclass(frozen=True)
class TensorDecl:
    """One input or output as a model config declares it."""

    name: str
    datatype: str  # KServe name: BYTES, INT32, FP32, ...
    dims: tuple[int, ...]
    optional: bool = False
    doc: str = ""

    @property
    def config_type(self) -> str:
        return CONFIG_TYPES[self.datatype]


def request_inputs(names: Mapping[str, tuple[str, str]] | None = None) -> list[TensorDecl]:
    """``text_input`` and every optional setting, as the models declare them."""
    names = {**SETTINGS, **EXTRA_INPUTS} if names is None else names
    inputs = [TensorDecl(TEXT_INPUT, "BYTES", (-1, 1), doc="one prompt per row")]
    for name, (datatype, doc) in names.items():
        inputs.append(TensorDecl(name, datatype, (-1, -1) if name in WORD_LISTS else (-1, 1), True, doc))
    return inputs


def response_outputs() -> list[TensorDecl]:
    return [TensorDecl(TEXT_OUTPUT, "BYTES", (-1, -1), doc="[prompts, sequences]"),
            TensorDecl(CUM_LOG_PROBS, "FP32", (-1, -1), doc="summed log-probabilities, [prompts, sequences]")]


@dataclass
class Prompt:
    """One row of a request: its text and its settings (TensorRT-LLM names, unset ones absent)."""

    text: str
    values: dict[str, Any] = field(default_factory=dict)


def _text(value: Any, what: str) -> str:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise GenerationSettingsError(f"{what} is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    raise GenerationSettingsError(f"{what} must be text (BYTES), got {type(value).__name__}")


def _scalar(name: str, value: Any) -> Any:
    datatype = SETTINGS.get(name, EXTRA_INPUTS.get(name, ("",)))[0]
    item = value.item() if isinstance(value, np.generic) else value
    if datatype == "BOOL":
        return bool(item)
    if isinstance(item, float) and not math.isfinite(item):
        raise GenerationSettingsError(f"{name} must be a finite number, got {item}")
    return item


def _rows_of(name: str, array: np.ndarray, batch: int) -> list[np.ndarray]:
    """A [rows, k] tensor as one array per prompt: rows == batch, or one row for every prompt."""
    if array.ndim == 1:  # tolerate [k] from clients that drop the row dimension
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[0] not in (1, batch):
        raise GenerationSettingsError(f"{name} must have shape [1, k] or [{batch}, k] (one row per prompt), got "
                                      f"{list(array.shape)}")
    return [array[0 if array.shape[0] == 1 else b] for b in range(batch)]


def read_prompts(tensors: Mapping[str, np.ndarray | None]) -> list[Prompt]:
    """Triton input tensors (numpy arrays, absent inputs missing or None) -> one Prompt per row.

    Raises GenerationSettingsError for a missing or empty text_input, an unknown input, or a
    setting with the wrong shape; the settings' values are checked later, by the Generator."""
    tensors = {k: v for k, v in tensors.items() if v is not None}
    unknown = sorted(set(tensors) - {TEXT_INPUT} - set(SETTINGS) - set(EXTRA_INPUTS))
    if unknown:
        raise GenerationSettingsError(f"unknown input(s) {', '.join(unknown)}; inputs: {TEXT_INPUT}, "
                                      f"{', '.join([*SETTINGS, *EXTRA_INPUTS])}")
    if TEXT_INPUT not in tensors:
        raise GenerationSettingsError(f"the request has no {TEXT_INPUT} (BYTES [prompts, 1])")
    texts = np.asarray(tensors[TEXT_INPUT], dtype=object).reshape(-1)
    if texts.size == 0:
        raise GenerationSettingsError(f"{TEXT_INPUT} holds no prompt")
    prompts = []
    for row, value in enumerate(texts):
        text = _text(value, f"{TEXT_INPUT}[{row}]")
        if not text.strip():
            raise GenerationSettingsError(f"{TEXT_INPUT}[{row}] is empty; every prompt needs some text")
        prompts.append(Prompt(text))
    for name, array in tensors.items():
        if name == TEXT_INPUT:
            continue
        for prompt, row in zip(prompts, _rows_of(name, np.asarray(array), len(prompts))):
            if name in WORD_LISTS:
                words = [_text(v, name) for v in row.reshape(-1)]
                words = [w for w in words if w]
                if words:
                    prompt.values[name] = words
            elif row.size != 1:
                raise GenerationSettingsError(f"{name} takes one value per prompt, got {row.size}")
            else:
                prompt.values[name] = _scalar(name, row.reshape(-1)[0])
    return prompts


def to_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """TensorRT-LLM settings -> Generator options (:func:`ortgen.serve.trtllm.settings_to_options`), with
    beam_width checked first: a width below 1 is an error, not greedy search."""
    beams = values.get("beam_width")
    if beams is not None and (isinstance(beams, bool) or not isinstance(beams, int) or beams < 1):
        raise GenerationSettingsError(f"beam_width must be an integer >= 1 (1: greedy search or sampling), got {beams}")
    return settings_to_options(dict(values))


def text_matrix(rows: list[list[str]]) -> np.ndarray:
    """[prompts, sequences] of text as a BYTES tensor (rows padded with "" to the widest)."""
    width = max((len(r) for r in rows), default=0)
    out = np.empty((len(rows), width), dtype=object)
    for b, row in enumerate(rows):
        for i in range(width):
            out[b, i] = (row[i] if i < len(row) else "").encode("utf-8")
    return out
