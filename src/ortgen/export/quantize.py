"""Weight-only quantization for com.microsoft MatMulNBits (int8 or int4, block-wise, symmetric).

Each linear layer's weight ``[K, N]`` is cut into blocks of ``block_size`` values along K
per output column; every block gets one float scale (``max|w| / (2**(bits-1) - 1)``) and
its values are stored as unsigned integers offset by ``2**(bits-1)`` (MatMulNBits' default
zero point, so no zero-point tensor is needed). Activations stay float32; with
``accuracy_level=4`` ONNX Runtime multiplies in int8 on the CPU, which is what makes
decoding faster: a decoding step reads every weight once, and int8 weights are a quarter of
float32's bytes.

Embeddings stay float32 (a Gather reads one row per token); the output projection is
quantized too (tied models get a quantized copy of the embedding table for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ortgen.errors import OrtgenError

QUANTIZATIONS = ("int8", "int4")
# Block sizes when none is given. int8 at 128: its prompt-sized products run ~30% faster than
# at 32 on the CPU (bigger integer blocks between float rescales), for ~20% more logit error;
# int4 keeps 32, its 15 levels need the finer scales (docs/quantization.md).
DEFAULT_BLOCK_SIZE = {"int8": 128, "int4": 32}


@dataclass(frozen=True)
class QuantConfig:
    bits: int
    block_size: int = 32
    accuracy_level: int = 4  # int8 compute on the CPU

    @classmethod
    def parse(cls, name: str | None, block_size: int | None = None) -> "QuantConfig | None":
        """``name`` none/int8/int4 (None: no quantization); ``block_size`` None: the type's default."""
        if name is None or name == "none":
            return None
        if name not in QUANTIZATIONS:
            raise OrtgenError(f"--quantize must be one of none, {', '.join(QUANTIZATIONS)}; got {name!r}")
        if block_size is None:
            block_size = DEFAULT_BLOCK_SIZE[name]
        if block_size < 16 or block_size & (block_size - 1):
            raise OrtgenError(f"--block-size must be a power of two >= 16, got {block_size}")
        return cls(bits=8 if name == "int8" else 4, block_size=block_size)

    @property
    def name(self) -> str:
        return f"int{self.bits}"


@dataclass(frozen=True)
class QuantizedLinear:
    """What a MatMulNBits node needs to know about one quantized weight."""

    K: int
    N: int
    bits: int
    block_size: int
    accuracy_level: int


_COLUMNS_PER_CHUNK = 4096  # output columns quantized at a time: a 128k-token head never has several float copies


def quantize_blockwise(weight: np.ndarray, config: QuantConfig) -> tuple[np.ndarray, np.ndarray]:
    """``weight`` [K, N] (in, out) -> (packed [N, blocks, block_size * bits / 8] uint8, scales [N * blocks]).

    Columns are independent, so they are quantized a chunk at a time: the temporaries stay a few
    hundred MB even for Llama 3's [2048, 128256] head (a whole-matrix pass held four float copies)."""
    K, N = weight.shape
    blocks = -(-K // config.block_size)
    packed = np.empty((N, blocks, config.block_size * config.bits // 8), dtype=np.uint8)
    scales = np.empty((N, blocks), dtype=np.float32)
    for start in range(0, N, _COLUMNS_PER_CHUNK):
        end = min(start + _COLUMNS_PER_CHUNK, N)
        packed[start:end], scales[start:end] = _quantize_columns(weight[:, start:end], config)
    return packed, scales.reshape(-1)


def _quantize_columns(weight: np.ndarray, config: QuantConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_blockwise` of a few columns: (packed [n, blocks, bytes per block], scales [n, blocks])."""
    K, N = weight.shape
    block = config.block_size
    blocks = -(-K // block)
    padded = np.zeros((N, blocks * block), dtype=np.float32)
    padded[:, :K] = weight.T
    grouped = padded.reshape(N, blocks, block)  # blocks along K, per output column
    qmax = 2 ** (config.bits - 1) - 1
    scales = np.abs(grouped).max(axis=-1) / qmax
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(grouped / scales[..., None]), -qmax, qmax).astype(np.int16) + 2 ** (config.bits - 1)
    q = q.astype(np.uint8)
    if config.bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return q, scales.astype(np.float32)


def dequantize_blockwise(packed: np.ndarray, scales: np.ndarray, K: int, config: QuantConfig) -> np.ndarray:
    """Inverse of :func:`quantize_blockwise`: the [K, N] float weight MatMulNBits computes with."""
    N, blocks = packed.shape[0], packed.shape[1]
    if config.bits == 4:
        low, high = packed & 0x0F, packed >> 4
        q = np.empty((N, blocks, packed.shape[2] * 2), dtype=np.uint8)
        q[..., 0::2], q[..., 1::2] = low, high
    else:
        q = packed
    values = (q.astype(np.float32) - 2 ** (config.bits - 1)) * scales.reshape(N, blocks)[..., None]
    return values.reshape(N, -1)[:, :K].T
