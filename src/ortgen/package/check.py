"""The manifest against the graphs on disk: what a runtime relies on must be true of the files.

:meth:`Manifest.from_dict` checks each field on its own (types, ranges, ids inside the
vocabulary). :func:`check_package` then reads every graph's structure (the ONNX protos only,
not the weights: a few milliseconds) and compares it with the manifest, so a hand-edited or
mismatched ``ortgen.json`` is refused at load time with the field named, instead of failing
inside ONNX Runtime at the first request (an input-name error, a Gather out of bounds) or,
worse, running with wrong settings:

- every graph file and tokenizer file the manifest lists exists;
- each graph's inputs and outputs (names, dtypes) are the manifest's, and the decoders' cache
  and logits are in the manifest's ``dtype``;
- ``architecture.num_layers`` = the decoders' past inputs, ``vocab_size`` = their logits'
  last dimension and the token embedding's rows, ``max_positions + position_offset`` <= the
  position embedding's rows, ``num_heads`` / ``head_dim`` = the cache's dimensions;
- the generation operators' ``eos_token_id`` / ``vocab_size`` attributes = the manifest's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import onnx
from onnx import helper

from ortgen.errors import PackageError
from ortgen.package import contract
from ortgen.package.manifest import GraphInfo, Manifest
from ortgen.package.tokenizer_info import TOKENIZER_FILES

TOKEN_EMBEDDING = "embed_tokens.weight"
POSITION_EMBEDDING = "embed_positions.weight"


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _dtype(value: onnx.ValueInfoProto) -> str:
    return helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name


def _initializer_dims(graph: onnx.GraphProto, name: str) -> list[int] | None:
    for tensor in graph.initializer:
        if tensor.name == name:
            return list(tensor.dims)
    return None


def _decoder_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """The graph holding the decoder: the model's own, or the generation operator's ``decoder``
    attribute."""
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "decoder" and attribute.type == onnx.AttributeProto.GRAPH:
                return attribute.g
    return model.graph


def _compare_io(key: str, info: GraphInfo, model: onnx.ModelProto) -> None:
    for side, declared, actual in (("inputs", info.inputs, model.graph.input),
                                   ("outputs", info.outputs, model.graph.output)):
        names = [t.name for t in declared]
        on_disk = [v.name for v in actual]
        if names != on_disk:
            raise PackageError(f"ortgen.json: graphs.{key}.{side} lists {names}, but {info.file} has {on_disk}")
        for spec, value in zip(declared, actual):
            if spec.dtype != _dtype(value):
                raise PackageError(f"ortgen.json: graphs.{key}.{side} says {spec.name} is {spec.dtype}, "
                                   f"{info.file} has {_dtype(value)}")


def _count_past(names: Iterable[str]) -> int:
    return sum(1 for n in names if n.startswith(("past_key_", "past_")) and not n.startswith("past_value_"))


def _check_decoder(key: str, info: GraphInfo, model: onnx.ModelProto, manifest: Manifest) -> None:
    a = manifest.architecture
    graph = _decoder_graph(model)
    layers = _count_past(v.name for v in graph.input)
    if layers != a.num_layers:
        raise PackageError(f"ortgen.json: architecture.num_layers is {a.num_layers}, but {info.file} has "
                           f"{layers} layers (past inputs)")
    logits = next((v for v in graph.output if v.name == contract.LOGITS), None)
    past = next((v for v in graph.input if v.name in (contract.past_name(0), contract.past_key_name(0))), None)
    for value in (logits, past):
        if value is not None and _dtype(value) != manifest.dtype:
            raise PackageError(f"ortgen.json: dtype is {manifest.dtype}, but {info.file}'s {value.name} is "
                               f"{_dtype(value)}")
    if logits is not None:
        vocab = _dims(logits)[-1]
        if isinstance(vocab, int) and vocab and vocab != a.vocab_size:
            raise PackageError(f"ortgen.json: architecture.vocab_size is {a.vocab_size}, but {info.file} "
                               f"projects onto {vocab} tokens")
    if past is not None:
        dims = _dims(past)
        heads, head_dim = (dims[2], dims[4]) if past.name == contract.past_name(0) else (dims[1], dims[3])
        expected = info.attributes.get("cache_head_dim", a.head_dim) if key == contract.DECODER_ENGINE else a.head_dim
        if (heads, head_dim) != (a.kv_heads, expected):
            raise PackageError(f"ortgen.json: architecture key/value heads / head_dim are {a.kv_heads} / {a.head_dim}"
                               f"{f' (cache_head_dim {expected})' if expected != a.head_dim else ''}, "
                               f"but {info.file}'s cache has {heads} / {head_dim}")
    tokens = _initializer_dims(graph, TOKEN_EMBEDDING)
    if tokens is not None and tokens[0] != a.vocab_size:
        raise PackageError(f"ortgen.json: architecture.vocab_size is {a.vocab_size}, but {info.file}'s token "
                           f"embedding has {tokens[0]} rows")
    positions = _initializer_dims(graph, POSITION_EMBEDDING)
    if positions is not None and a.max_positions + a.position_offset > positions[0]:
        raise PackageError(
            f"ortgen.json: architecture.max_positions is {a.max_positions} (+ position_offset "
            f"{a.position_offset}), but {info.file}'s position embedding has {positions[0]} rows: at most "
            f"{positions[0] - a.position_offset} positions")


def _check_operator(key: str, info: GraphInfo, model: onnx.ModelProto, manifest: Manifest) -> None:
    node = next((n for n in model.graph.node if n.domain == "com.microsoft"), None)
    if node is None:
        raise PackageError(f"{info.file} holds no com.microsoft generation operator (graphs.{key})")
    if info.operator is not None and node.op_type != info.operator:
        raise PackageError(f"ortgen.json: graphs.{key}.operator is {info.operator!r}, {info.file} runs {node.op_type}")
    attributes: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "decoder"}
    expected = {"eos_token_id": (manifest.special_tokens.eos_token_id, "special_tokens.eos_token_id"),
                "vocab_size": (manifest.architecture.vocab_size, "architecture.vocab_size")}
    for name, (value, where) in expected.items():
        if name in attributes and attributes[name] != value:
            raise PackageError(f"ortgen.json: {where} is {value}, but {info.file}'s {node.op_type} operator was "
                               f"built with {name}={attributes[name]}")


def check_package(package_dir: Path, manifest: Manifest) -> None:
    """Raise a PackageError naming the first manifest field that the files on disk contradict."""
    package_dir = Path(package_dir)
    for key, info in manifest.graphs.items():
        path = package_dir / info.file
        if not path.is_file():
            raise PackageError(f"the package is incomplete: {info.file} (graphs.{key}) is missing")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise PackageError(f"{path} is not a readable ONNX model: {exc}") from exc
        _compare_io(key, info, model)
        if key in (contract.DECODER, contract.DECODER_ENGINE):
            _check_decoder(key, info, model, manifest)
        else:
            _check_operator(key, info, model, manifest)
            _check_decoder(key, info, model, manifest)
    if not (package_dir / manifest.weights_file).is_file():
        raise PackageError(f"the package is incomplete: {manifest.weights_file} (weights_file) is missing")
    if manifest.tokenizer is not None:
        needed = TOKENIZER_FILES.get(manifest.tokenizer.kind, ())
        missing = [n for n in needed if not (package_dir / contract.TOKENIZER_DIR / n).is_file()]
        if missing:
            raise PackageError(f"the package's tokenizer is incomplete: {contract.TOKENIZER_DIR}/{missing[0]} is "
                               f"missing (tokenizer.kind {manifest.tokenizer.kind!r})")


def open_package(package_dir: Path | str) -> Manifest:
    """The manifest of the package at ``package_dir``, parsed and checked against its files."""
    manifest = Manifest.load(Path(package_dir))
    check_package(Path(package_dir), manifest)
    return manifest
