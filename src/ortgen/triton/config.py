"""config.pbtxt: written as readable text (with comments saying why), then parsed back with
tritonclient's ``model_config_pb2`` through protobuf's text_format, which rejects unknown fields
and enum values, before a repository is complete.

    ModelConfigText(name, backend="python", inputs=[...], outputs=[...], parameters={...}, ...).render()
    check_config(text, "name") -> the parsed ModelConfig (raises TritonConfigError with protobuf's message)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from ortgen.errors import OrtgenError
from ortgen.triton.tensors import CONFIG_TYPES, TensorDecl

# ONNX TensorProto element types -> model config data types
ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
              8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
              13: "TYPE_UINT64", 16: "TYPE_BF16"}
# ortgen manifest dtype names -> model config data types
DTYPES = {"int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
          "bool": "TYPE_BOOL", "string": "TYPE_STRING", "uint64": "TYPE_UINT64"}


class TritonConfigError(OrtgenError):
    """A config.pbtxt that Triton's own schema refuses (a bug in the writer: the message says where)."""


@dataclass(frozen=True)
class ConfigTensor:
    name: str
    data_type: str  # TYPE_INT32, ...
    dims: tuple[int, ...]
    optional: bool = False
    comment: str = ""

    @classmethod
    def of(cls, decl: TensorDecl) -> "ConfigTensor":
        return cls(decl.name, decl.config_type, decl.dims, decl.optional, decl.doc)


def _string(value: str) -> str:
    return json.dumps(value)  # a protobuf text-format string literal for the ASCII we write


def _tensors(kind: str, tensors: Sequence[ConfigTensor]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        optional = " optional: true" if t.optional else ""
        comma = "," if i + 1 < len(tensors) else ""
        comment = f"  # {t.comment}" if t.comment else ""
        dims = ", ".join(str(d) for d in t.dims)
        lines.append(f"  {{ name: {_string(t.name)} data_type: {t.data_type} dims: [ {dims} ]{optional} }}{comma}"
                     f"{comment}")
    lines.append("]")
    return lines


@dataclass
class ModelConfigText:
    """One model's config.pbtxt. ``backend`` or ``platform`` ("ensemble"); ``blocks``: further
    top-level text (instance_group, optimization, ensemble_scheduling, ...)."""

    name: str
    inputs: Sequence[ConfigTensor]
    outputs: Sequence[ConfigTensor]
    backend: str | None = None
    platform: str | None = None
    max_batch_size: int = 0
    header: Sequence[str] = ()  # comment lines at the top
    parameters: dict[str, str] = field(default_factory=dict)
    parameter_comments: dict[str, str] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"# {line}" if line else "#" for line in self.header]
        lines.append(f"name: {_string(self.name)}")
        if self.backend:
            lines.append(f"backend: {_string(self.backend)}")
        if self.platform:
            lines.append(f"platform: {_string(self.platform)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        lines += _tensors("input", self.inputs)
        lines += _tensors("output", self.outputs)
        lines += self.blocks
        for key, value in self.parameters.items():
            comment = self.parameter_comments.get(key)
            if comment:
                lines.append(f"# {comment}")
            lines.append(f"parameters {{ key: {_string(key)} value: {{ string_value: {_string(value)} }} }}")
        return "\n".join(lines) + "\n"


def instance_group(count: int, kind: str) -> str:
    """``kind``: "cpu" or "gpu"."""
    return f"instance_group [ {{ count: {count} kind: KIND_{kind.upper()} }} ]"


def check_config(text: str, name: str) -> Any:
    """Parse ``text`` as Triton's ModelConfig (unknown fields and enum values are errors); the parsed
    message. Needs tritonclient (the triton extra)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise OrtgenError("checking config.pbtxt needs tritonclient and protobuf: pip install 'ortgen[triton]'") \
            from None
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise TritonConfigError(f"{name}/config.pbtxt does not parse as a Triton ModelConfig: {exc}") from None
    if config.name != name:
        raise TritonConfigError(f"{name}/config.pbtxt names the model {config.name!r}; Triton wants the directory's "
                                f"name, {name!r}")
    return config


def onnx_tensors(path) -> tuple[list[ConfigTensor], list[ConfigTensor]]:
    """An ONNX file's graph inputs and outputs exactly as it declares them: names, element types, and
    dims (a named or unknown dimension is -1). Reads the graph only, not its external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def convert(values) -> list[ConfigTensor]:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            if tensor.elem_type not in ONNX_TYPES:
                raise TritonConfigError(f"{path}: {value.name} has ONNX element type {tensor.elem_type}, which Triton "
                                        "has no data type for")
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            out.append(ConfigTensor(value.name, ONNX_TYPES[tensor.elem_type], dims))
        return out

    return convert(model.graph.input), convert(model.graph.output)


__all__ = ["ModelConfigText", "ConfigTensor", "check_config", "instance_group", "onnx_tensors", "CONFIG_TYPES",
           "TritonConfigError"]
