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

from ortgen.jsonfile import read_json
from ortgen.errors import PackageError
from ortgen.package.contract import GRAPH_FILES, MANIFEST_FILE
from ortgen.package.fields import Fields
from ortgen.package.generation_options import GenerationDefaults
from ortgen.package.prompt_format import PromptFormat
from ortgen.package.tokenizer_info import TokenizerInfo

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")  # activations, KV cache and logits
QUANTIZED_DTYPES = ("int8", "int4")
WEIGHT_DTYPES = DTYPES + QUANTIZED_DTYPES
NORM_POSITIONS = ("pre", "post")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "int32", "float32", ...
    shape: list[int | str]

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "TensorSpec":
        f = Fields(data, path)
        shape = f.required("shape")
        if not isinstance(shape, list) or not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool))
                                                  for d in shape):
            raise f.fail("shape", shape, "a list of dimension sizes or names")
        return cls(f.str("name"), f.str("dtype"), list(shape))  # type: ignore[arg-type]


@dataclass(frozen=True)
class GraphInfo:
    """One ONNX file of the package."""

    file: str
    operator: str | None  # "BeamSearch", "GreedySearch", "Sampling"; None for the bare decoder
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    logits: str  # "all" or "last": which positions the decoder projects onto the vocabulary
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. sampling temperature / top_p

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "GraphInfo":
        f = Fields(data, path)
        specs = {}
        for side in ("inputs", "outputs"):
            values = f.required(side)
            if not isinstance(values, list):
                raise f.fail(side, values, "a list of tensors")
            specs[side] = [TensorSpec.from_dict(v, f"{path}.{side}[{i}]") for i, v in enumerate(values)]
        return cls(
            file=f.str("file"),  # type: ignore[arg-type]
            operator=f.str("operator", optional=True),
            inputs=specs["inputs"],
            outputs=specs["outputs"],
            logits=f.str("logits", choices=("all", "last")) if f.has("logits") else "all",  # type: ignore[arg-type]
            attributes=f.object("attributes", default={}),
        )


@dataclass(frozen=True)
class Architecture:
    """Dimensions of the exported decoder (the runtime sizes its cache and checks ids with them)."""

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
    num_kv_heads: int | None = None  # grouped-query attention: the cache's heads (None: num_heads)
    positions: str = "learned"  # "learned" (a position table) or "rotary"
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    sliding_window: int | None = None  # attention window in tokens (Mistral), None: unbounded

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @classmethod
    def from_dict(cls, data: Any) -> "Architecture":
        f = Fields(data, "architecture")
        arch = cls(
            model_type=f.str("model_type"),  # type: ignore[arg-type]
            num_layers=f.int("num_layers", minimum=1),  # type: ignore[arg-type]
            hidden_size=f.int("hidden_size", minimum=1),  # type: ignore[arg-type]
            num_heads=f.int("num_heads", minimum=1),  # type: ignore[arg-type]
            head_dim=f.int("head_dim", minimum=1),  # type: ignore[arg-type]
            ffn_size=f.int("ffn_size", minimum=1),  # type: ignore[arg-type]
            vocab_size=f.int("vocab_size", minimum=1),  # type: ignore[arg-type]
            max_positions=f.int("max_positions", minimum=1),  # type: ignore[arg-type]
            position_offset=f.int("position_offset", minimum=0),  # type: ignore[arg-type]
            embed_scale=f.float("embed_scale"),  # type: ignore[arg-type]
            activation=f.str("activation"),  # type: ignore[arg-type]
            norm_position=f.str("norm_position", choices=NORM_POSITIONS),  # type: ignore[arg-type]
            parameters=f.int("parameters", minimum=0),  # type: ignore[arg-type]
            num_kv_heads=f.int("num_kv_heads", minimum=1, optional=True),
            positions=f.str("positions", choices=("learned", "rotary"), optional=True) or "learned",
            norm=f.str("norm", choices=("layernorm", "rmsnorm"), optional=True) or "layernorm",
            sliding_window=f.int("sliding_window", minimum=1, optional=True),
        )
        if arch.positions == "learned" and arch.num_heads * arch.head_dim != arch.hidden_size:
            raise PackageError(f"ortgen.json: architecture.num_heads ({arch.num_heads}) x head_dim ({arch.head_dim}) "
                               f"must equal hidden_size ({arch.hidden_size})")
        if arch.num_heads % arch.kv_heads:
            raise PackageError(f"ortgen.json: architecture.num_heads ({arch.num_heads}) must be a multiple of "
                               f"num_kv_heads ({arch.kv_heads})")
        return arch


@dataclass(frozen=True)
class SpecialTokens:
    bos_token_id: int | None
    eos_token_id: int  # the first EOS id: what ONNX Runtime's generation operators stop on
    pad_token_id: int
    eos_token_ids: list[int] = field(default_factory=list)  # every EOS id the runtime stops on (Llama 3 has several)

    @property
    def all_eos(self) -> list[int]:
        """Every id that ends a sequence (eos_token_id first)."""
        return [self.eos_token_id] + [i for i in self.eos_token_ids if i != self.eos_token_id]

    @classmethod
    def from_dict(cls, data: Any, vocab_size: int) -> "SpecialTokens":
        f = Fields(data, "special_tokens")
        tokens = cls(
            bos_token_id=f.int("bos_token_id", minimum=0, optional=True),
            eos_token_id=f.int("eos_token_id", minimum=0),  # type: ignore[arg-type]
            pad_token_id=f.int("pad_token_id", minimum=0),  # type: ignore[arg-type]
            eos_token_ids=f.int_list("eos_token_ids", default=[]),
        )
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokens, name)
            if value is not None and value >= vocab_size:
                raise f.fail(name, value, f"a token id in the vocabulary [0, {vocab_size}) (architecture.vocab_size)")
        if any(i >= vocab_size for i in tokens.eos_token_ids):
            raise f.fail("eos_token_ids", tokens.eos_token_ids,
                         f"token ids in the vocabulary [0, {vocab_size}) (architecture.vocab_size)")
        return tokens


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "FileEntry":
        f = Fields(data, path)
        return cls(f.int("bytes", minimum=0), f.str("sha256"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Quantization:
    """Weight-only quantization of the linear layers (com.microsoft MatMulNBits)."""

    bits: int  # 8 or 4
    block_size: int
    accuracy_level: int

    @classmethod
    def from_dict(cls, data: Any) -> "Quantization":
        f = Fields(data, "quantization")
        bits = f.int("bits")
        if bits not in (4, 8):
            raise f.fail("bits", bits, "4 or 8")
        return cls(bits, f.int("block_size", minimum=16), f.int("accuracy_level", minimum=0))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, int]:
        return {"bits": self.bits, "block_size": self.block_size, "accuracy_level": self.accuracy_level}


@dataclass
class Manifest:
    """``ortgen.json``, parsed and checked field by field (see :meth:`from_dict`)."""

    ortgen_version: str
    source: dict[str, Any]
    architecture: Architecture
    special_tokens: SpecialTokens
    dtype: str  # "float32" or "float16": activations, the KV cache, logits (DTYPES)
    graphs: dict[str, GraphInfo]
    weights_file: str
    files: dict[str, FileEntry]
    generation_defaults: GenerationDefaults
    tokenizer: TokenizerInfo | None
    prompt_format: PromptFormat | None = None
    weights_dtype: str = "float32"  # the dtype when unquantized, else "int8" / "int4" (MatMulNBits, weight-only)
    quantization: Quantization | None = None  # when weights_dtype is int8 / int4
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "ortgen_version": self.ortgen_version,
            "source": self.source,
            "architecture": asdict(self.architecture),
            "special_tokens": asdict(self.special_tokens),
            "dtype": self.dtype,
            "weights_dtype": self.weights_dtype,
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "graphs": {name: asdict(g) for name, g in self.graphs.items()},
            "weights_file": self.weights_file,
            "files": {name: asdict(e) for name, e in self.files.items()},
            "generation_defaults": self.generation_defaults.as_dict(),
            "tokenizer": self.tokenizer.to_dict() if self.tokenizer else None,
            "prompt_format": self.prompt_format.to_dict() if self.prompt_format else None,
            "format_version": self.format_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """Parse every field strictly: a wrong type, a value out of range or a missing field raises a
        PackageError naming it (``ortgen.json: architecture.num_layers must be ...``)."""
        f = Fields(data, "")
        version = f.raw("format_version")
        if version != FORMAT_VERSION:
            raise PackageError(
                f"package format version {version!r} is not supported by this ortgen (it reads version "
                f"{FORMAT_VERSION}); re-export the model with this ortgen"
            )
        architecture = Architecture.from_dict(f.required("architecture"))
        vocab = architecture.vocab_size
        graphs_field = f.child("graphs")
        graphs = {}
        for name, g in graphs_field.data.items():
            if name not in GRAPH_FILES:
                raise PackageError(f"ortgen.json: graphs.{name} is not a graph ortgen knows; "
                                   f"known: {', '.join(GRAPH_FILES)}")
            graphs[name] = GraphInfo.from_dict(g, f"graphs.{name}")
        files = {name: FileEntry.from_dict(e, f"files.{name}") for name, e in f.child("files").data.items()}
        tokenizer = TokenizerInfo.from_dict(f.raw("tokenizer")) if f.has("tokenizer") else None
        prompt_format = PromptFormat.from_dict(f.raw("prompt_format")) if f.has("prompt_format") else None
        for where, ids in (("tokenizer.prefix_ids", tokenizer.prefix_ids if tokenizer else []),
                           ("tokenizer.suffix_ids", tokenizer.suffix_ids if tokenizer else []),
                           ("prompt_format.learned_prompt_ids",
                            prompt_format.learned_prompt_ids if prompt_format else [])):
            bad = [i for i in ids if i >= vocab]
            if bad:
                raise PackageError(f"ortgen.json: {where} holds token id {bad[0]}, outside the vocabulary "
                                   f"[0, {vocab}) (architecture.vocab_size)")
        dtype = f.str("dtype", choices=DTYPES)
        weights_dtype = f.str("weights_dtype", choices=WEIGHT_DTYPES) if f.has("weights_dtype") else dtype
        quantization = Quantization.from_dict(f.raw("quantization")) if f.has("quantization") else None
        if (weights_dtype in QUANTIZED_DTYPES) != (quantization is not None):
            raise PackageError(f"ortgen.json: weights_dtype {weights_dtype!r} and quantization "
                               f"{f.raw('quantization')!r} disagree")
        if quantization is None and weights_dtype != dtype:
            raise PackageError(f"ortgen.json: weights_dtype {weights_dtype!r} and dtype {dtype!r} disagree "
                               "(unquantized weights are stored in the package's dtype)")
        return cls(
            ortgen_version=f.str("ortgen_version"),  # type: ignore[arg-type]
            source=f.object("source", default={}),
            architecture=architecture,
            special_tokens=SpecialTokens.from_dict(f.required("special_tokens"), vocab),
            dtype=dtype,  # type: ignore[arg-type]
            graphs=graphs,
            weights_file=f.str("weights_file"),  # type: ignore[arg-type]
            files=files,
            generation_defaults=GenerationDefaults.from_dict(f.object("generation_defaults", default={})),
            tokenizer=tokenizer,
            prompt_format=prompt_format,
            weights_dtype=weights_dtype,  # type: ignore[arg-type]
            quantization=quantization,
            format_version=version,
        )

    @classmethod
    def load(cls, package_dir: Path) -> "Manifest":
        """Read and parse ``ortgen.json`` (fields only; :func:`ortgen.package.check_package` compares
        them with the graphs on disk)."""
        path = Path(package_dir) / MANIFEST_FILE
        if not Path(package_dir).is_dir():
            raise PackageError(f"package {package_dir} does not exist (create one with `ortgen export`)")
        if not path.is_file():
            raise PackageError(f"{package_dir} is not an ortgen package: it has no {MANIFEST_FILE}")
        data = read_json(path, what="the manifest ", error=PackageError)
        return cls.from_dict(data)


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
