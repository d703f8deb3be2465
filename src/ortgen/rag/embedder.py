"""Sentence embeddings at query and indexing time: ONNX Runtime + tokenizers + numpy, no torch.

Texts are tokenized as sentence-transformers does (strip, lowercase when the model says so,
truncate to ``max_seq_length`` word pieces including [CLS]/[SEP]), sorted by length and run in
batches padded to the longest text of each batch, rounded up to an even length; the graph's
pooling ignores PAD positions, so padding changes nothing but speed. The even length keeps every
matrix product of the batch on the kernels' batch-invariant path (no row alone in a tile:
:mod:`ortgen.runtime.batch_invariance`), so a text's vector is bitwise the same whatever texts share
its batch. int8 exports quantize the activations of a whole call with one scale
(DynamicQuantizeLinear), which would tie a text's vector to its batch-mates: they run one text per
call instead (slower than batching: docs/rag.md measures it). Both are tested bitwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ortgen.package.embedder import (
    ATTENTION_MASK,
    ENCODER,
    INPUT_IDS,
    TOKENIZER,
    EmbedderError,
    EmbedderManifest,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


class Embedder:
    """An exported embedder directory, loaded: ``encode(texts) -> (N, dims) float32``.

    ``texts_encoded`` counts every text that went through the encoder since loading (the
    indexer's tests use it to prove that unchanged documents are not embedded again).
    """

    def __init__(self, directory: Path, manifest: EmbedderManifest, *, threads: int = 0, spinning: bool = True) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        self.manifest = manifest
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per physical core)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:  # idle threads sleep instead of spinning: fairer beside other busy threads (benchmarks)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.directory / ENCODER), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbedderError(f"cannot load {self.directory / ENCODER}: {exc}") from exc
        self._tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(manifest.max_seq_length)
        self._counter = Tokenizer.from_file(str(self.directory / TOKENIZER))  # for chunk sizes: no truncation
        self._counter.no_padding()
        self._counter.no_truncation()
        self.pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self.texts_encoded = 0

    @classmethod
    def open(cls, directory: Path, *, threads: int = 0, spinning: bool = True) -> "Embedder":
        """Load the embedder exported to ``directory`` (``threads=0``: ONNX Runtime's default;
        ``spinning=False``: idle worker threads sleep rather than spin)."""
        return cls(Path(directory), EmbedderManifest.load(Path(directory)), threads=threads, spinning=spinning)

    @property
    def dims(self) -> int:
        return self.manifest.dims

    @property
    def identity(self) -> str:
        return self.manifest.checksum

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        texts = [str(t).strip() for t in texts]
        return [t.lower() for t in texts] if self.manifest.do_lower_case else texts

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, without special tokens and without truncation (chunk sizing)."""
        encodings = self._counter.encode_batch(self._prepare(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span in ``text`` of each of its word pieces (to cut an over-long sentence on token
        bounds); the raw text is tokenized, so spans index into it."""
        return list(self._counter.encode(text, add_special_tokens=False).offsets)

    def encode(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Embeddings of ``texts`` in order: (N, dims) float32 (unit length when the model normalises)."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(self._prepare(texts))
        if self.manifest.weight_type == "int8":  # per-call activation scales: one text a call (module docstring)
            batch_size = 1
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))  # longest first
        out = np.empty((len(encodings), self.dims), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = len(encodings[rows[0]].ids)  # the longest of this batch
            if width % 2 and width < self.manifest.max_seq_length and batch_size > 1:  # even (an odd cap stays)
                width += 1
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)  # (B, S)
            mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, S)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            (vectors,) = self.session.run(None, {INPUT_IDS: ids, ATTENTION_MASK: mask})  # (B, dims)
            out[rows] = vectors
        self.texts_encoded += len(texts)
        return out
