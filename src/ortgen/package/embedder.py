"""The embedder directory's contract: file names and the manifest (``embedder.json``).

Written by ``ortgen export-embedder`` (:mod:`ortgen.export.embedder`), read by the query-time
runtime (:mod:`ortgen.rag.embedder`). A leaf module (json and dataclasses only) so both sides
import it without pulling in ONNX, Milvus or torch.

    EMB/
      embedder.json     this manifest: dims, pooling, normalisation, max_seq_length, checksums
      encoder.onnx      token ids + mask -> pooled (and normalised) sentence embeddings
      weights.bin       the encoder's weights (external data of encoder.onnx)
      tokenizer.json    the model's fast tokenizer (padding/truncation are set by the runtime)

The ``checksum`` identifies the embedder: an index records it and refuses to be searched or
extended with an embedder whose checksum differs (vectors from two models are not comparable).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ortgen.errors import OrtgenError
from ortgen.package.manifest_file import read_manifest

MANIFEST = "embedder.json"
ENCODER = "encoder.onnx"
WEIGHTS = "weights.bin"
TOKENIZER = "tokenizer.json"
FORMAT = "ortgen-embedder"
FORMAT_VERSION = 1

# Encoder graph I/O (int64 like Hugging Face tokenizers' output; float32 embeddings).
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
EMBEDDINGS = "embeddings"

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


class EmbedderError(OrtgenError):
    """An embedder directory that is missing, incomplete or not an ortgen embedder."""


@dataclass
class EmbedderManifest:
    """What an exported embedder is: enough to tokenize, run and identify it."""

    dims: int
    pooling: str  # one of POOLING_MODES
    normalize: bool
    max_seq_length: int  # word pieces including [CLS] and [SEP]; longer texts are truncated
    do_lower_case: bool  # sentence-transformers lowercases the text before tokenizing
    model_type: str
    num_layers: int
    source: dict[str, Any]  # {"path": ..., "name": ...}
    files: dict[str, str]  # file name -> sha256
    checksum: str  # sha256 over the files' sha256s and the settings above: the embedder's identity
    weight_type: str = "float32"  # or "int8" (linear layers)
    ortgen_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def compute_checksum(files: dict[str, str], dims: int, pooling: str, normalize: bool,
                         max_seq_length: int, do_lower_case: bool) -> str:
        """The identity of an embedder: same files and same settings give the same vectors."""
        text = json.dumps({"files": dict(sorted(files.items())), "dims": dims, "pooling": pooling,
                           "normalize": normalize, "max_seq_length": max_seq_length,
                           "do_lower_case": do_lower_case}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def identity(self) -> str:
        """A short, human-readable identity: source name and checksum prefix."""
        return f"{self.source.get('name', '?')}@{self.checksum[:12]}"

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "EmbedderManifest":
        """Read ``directory/embedder.json``; :class:`EmbedderError` says what is wrong."""
        path = Path(directory) / MANIFEST
        if not Path(directory).is_dir():
            raise EmbedderError(f"embedder directory {directory} does not exist; "
                                "make one with: ortgen export-embedder MODEL_DIR -o EMB")
        if not path.is_file():
            raise EmbedderError(f"{directory} is not an ortgen embedder (no {MANIFEST}); "
                                "make one with: ortgen export-embedder MODEL_DIR -o EMB")
        manifest = read_manifest(cls, path, format=FORMAT, version=FORMAT_VERSION, error=EmbedderError,
                                 remedy="re-export it with ortgen export-embedder")
        missing = [name for name in manifest.files if not (Path(directory) / name).is_file()]
        if missing:
            raise EmbedderError(f"embedder {directory} is missing {', '.join(missing)}; re-export it")
        return manifest
