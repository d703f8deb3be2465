"""``ortgen.json``: what a package holds, written by export and read by the runtime.

The runtime decides everything from this file: which graphs exist and their I/O, the
model's dimensions and special tokens, the tokenizer, the generation defaults. It never
asks which Hugging Face architecture produced the package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ortgen.contract import MANIFEST_FILE
from ortgen.errors import PackageError
from ortgen.runtime.tokenizer import TokenizerInfo

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int32", "float32", ...
    shape: list[int | str]


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX file of the package."""

    file: str
    operator: str | None  # "BeamSearch", "GreedySearch", "Sampling"; None for the bare decoder
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    logits: str  # "all" or "last": which positions the decoder projects onto the vocabulary
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. sampling temperature / top_p


@dataclass(frozen=True)
class Architecture:
    """Dimensions of the exported decoder (informational except where the runtime needs them)."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    max_positions: int
    position_offset: int
    embed_scale: float
    activation: str
    norm_position: str
    parameters: int


@dataclass(frozen=True)
class SpecialTokens:
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass
class Manifest:
    ortgen_version: str
    source: dict[str, Any]
    architecture: Architecture
    special_tokens: SpecialTokens
    dtype: str
    graphs: dict[str, GraphInfo]
    weights_file: str
    files: dict[str, FileEntry]
    generation_defaults: dict[str, Any]
    tokenizer: TokenizerInfo | None
    prompt_format: dict[str, Any] | None = None
    weights_dtype: str = "float32"  # "float32", "int8" or "int4" (MatMulNBits, weight-only)
    quantization: dict[str, Any] | None = None  # {"bits", "block_size", "accuracy_level"} when quantized
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["tokenizer"] = self.tokenizer.to_dict() if self.tokenizer else None
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise PackageError(
                f"package format version {version} is not supported by this ortgen (it reads version {FORMAT_VERSION})"
            )
        graphs = {
            name: GraphInfo(
                file=g["file"],
                operator=g.get("operator"),
                inputs=[TensorSpec(**t) for t in g["inputs"]],
                outputs=[TensorSpec(**t) for t in g["outputs"]],
                logits=g.get("logits", "all"),
                attributes=dict(g.get("attributes", {})),
            )
            for name, g in data["graphs"].items()
        }
        return cls(
            ortgen_version=data["ortgen_version"],
            source=data.get("source", {}),
            architecture=Architecture(**data["architecture"]),
            special_tokens=SpecialTokens(**data["special_tokens"]),
            dtype=data["dtype"],
            graphs=graphs,
            weights_file=data["weights_file"],
            files={name: FileEntry(**entry) for name, entry in data["files"].items()},
            generation_defaults=dict(data.get("generation_defaults", {})),
            tokenizer=TokenizerInfo.from_dict(data["tokenizer"]) if data.get("tokenizer") else None,
            prompt_format=data.get("prompt_format"),
            weights_dtype=data.get("weights_dtype", "float32"),
            quantization=data.get("quantization"),
            format_version=version,
        )

    @classmethod
    def load(cls, package_dir: Path) -> "Manifest":
        path = Path(package_dir) / MANIFEST_FILE
        if not Path(package_dir).is_dir():
            raise PackageError(f"package {package_dir} does not exist (create one with `ortgen export`)")
        if not path.is_file():
            raise PackageError(f"{package_dir} is not an ortgen package: it has no {MANIFEST_FILE}")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise PackageError(f"{path} is damaged or from an incompatible ortgen: {exc}") from exc


def file_entry(path: Path, sha256: str | None = None) -> FileEntry:
    """Size and checksum of a file (the checksum is computed unless given)."""
    if sha256 is None:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sha256 = digest.hexdigest()
    return FileEntry(bytes=path.stat().st_size, sha256=sha256)


def verify_files(package_dir: Path, manifest: Manifest) -> list[str]:
    """Problems with the package's files (missing, wrong size, wrong checksum); empty when intact."""
    problems = []
    for name, entry in manifest.files.items():
        path = Path(package_dir) / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        actual = file_entry(path)
        if actual.bytes != entry.bytes:
            problems.append(f"{name} has {actual.bytes} bytes, the manifest says {entry.bytes}")
        elif actual.sha256 != entry.sha256:
            problems.append(f"{name} has checksum {actual.sha256[:12]}…, the manifest says {entry.sha256[:12]}…")
    return problems
