"""A small ONNX graph builder and the single external weights file.

:class:`WeightFile` streams large tensors into one file (``weights.bin``) and hands back
``TensorProto`` references to it, so several graphs (the decoder, and the BeamSearch /
GreedySearch / Sampling models that embed it) point at the same bytes: weights are
stored once, and models of any size stay under protobuf's 2 GB limit.

:class:`GraphBuilder` collects nodes with hierarchical names
(``/model/layers.3/attn/Attention``) and shares small constants by value.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"

_INLINE_LIMIT_BYTES = 1024  # smaller tensors stay inside the graph
_PAGE = 4096


class WeightFile:
    """Append-only external-data file; every tensor is written exactly once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._offset = 0
        self._sha = hashlib.sha256()
        self._tensors: dict[str, TensorProto] = {}

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._sha.update(data)
        self._offset += memoryview(data).nbytes

    def add(self, name: str, array: np.ndarray) -> TensorProto:
        """Write ``array`` (page-aligned, so ONNX Runtime can map it) and reference it."""
        if name in self._tensors:
            raise ValueError(f"weight {name!r} written twice")
        array = np.ascontiguousarray(array)
        padding = -self._offset % _PAGE
        if padding:
            self._write(b"\0" * padding)
        offset = self._offset
        self._write(memoryview(array.reshape(-1).view(np.uint8)))  # no copy of the tensor
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self._tensors[name] = tensor
        return tensor

    @property
    def nbytes(self) -> int:
        return self._offset

    def close(self) -> str:
        """Close the file; returns its sha256."""
        self._file.close()
        return self._sha.hexdigest()


class GraphBuilder:
    """Collects the nodes, initializers, inputs and outputs of one graph."""

    def __init__(self, name: str, weights: WeightFile | None = None, quantized: dict | None = None,
                 float_dtype: str = "float32") -> None:
        self.name = name
        self.weights = weights
        self.quantized = quantized or {}  # role -> QuantizedLinear, for MatMulNBits
        self.float_dtype = np.dtype(float_dtype)  # activations, cache and logits: float32 or float16
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._node_names: set[str] = set()
        self._initializer_names: set[str] = set()

    @property
    def float_type(self) -> int:
        """The TensorProto element type of the graph's floating-point values."""
        return helper.np_dtype_to_tensor_dtype(self.float_dtype)

    def input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        name: str,
        outputs: int | Sequence[str] = 1,
        domain: str = "",
        **attributes: Any,
    ) -> list[str]:
        """Add a node named ``name``; its outputs are ``{name}/output_{k}`` unless named."""
        if name in self._node_names:
            raise ValueError(f"node name {name!r} used twice")
        self._node_names.add(name)
        output_names = [f"{name}/output_{k}" for k in range(outputs)] if isinstance(outputs, int) else list(outputs)
        attrs = {k: v for k, v in attributes.items() if v is not None}
        self.nodes.append(
            helper.make_node(op_type, list(inputs), output_names, name=name, domain=domain or None, **attrs)
        )
        return output_names

    def op(self, op_type: str, inputs: Sequence[str], *, name: str, domain: str = "", **attributes: Any) -> str:
        """A single-output node; returns its output name."""
        return self.node(op_type, inputs, name=name, domain=domain, **attributes)[0]

    def add_initializers(self, tensors: Any) -> None:
        """Add already-built initializers (the written weights a graph refers to)."""
        for tensor in tensors:
            self.initializers.append(tensor)
            self._initializer_names.add(tensor.name)

    def has(self, name: str) -> bool:
        """Whether an initializer called ``name`` was added (optional weights: biases)."""
        return name in self._initializer_names

    def constant(self, value: Any, dtype: Any = np.int64) -> str:
        """A small constant initializer, shared by value across the graph."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._constants:
            name = f"/const/{array.dtype.name}_{len(self._constants)}"
            self.add_initializers([numpy_helper.from_array(array, name)])
            self._constants[key] = name
        return self._constants[key]

    def weight(self, name: str, array: np.ndarray) -> str:
        """A model weight: external when large (and a weight file is attached), inline otherwise."""
        if self.weights is not None and array.nbytes > _INLINE_LIMIT_BYTES:
            self.add_initializers([self.weights.add(name, array)])
        else:
            self.add_initializers([numpy_helper.from_array(np.ascontiguousarray(array), name)])
        return name

    def build(self) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )
