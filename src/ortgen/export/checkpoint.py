"""Find a checkpoint and read its configuration.

MODEL may be a local Hugging Face directory or a Hub id (downloaded when the Hub is
reachable). Reading happens here; nothing is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortgen.arch import ArchSpec, ModelDims, get_spec
from ortgen.errors import ModelSourceError
from ortgen.jsonfile import read_json
from ortgen.export.tensor_files import TensorSource, open_weights

log = logging.getLogger(__name__)

_HUB_COMMON = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt",
               "special_tokens_map.json"]
_HUB_SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
_HUB_PYTORCH = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


@dataclass
class Checkpoint:
    """A readable checkpoint: its directory, config, architecture and weights."""

    source: str  # what the user passed
    directory: Path
    config: dict[str, Any]
    generation_config: dict[str, Any]
    spec: ArchSpec
    dims: ModelDims
    tensors: TensorSource


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path, error=ModelSourceError)
    if not isinstance(data, dict):
        raise ModelSourceError(f"{path} should hold a JSON object")
    return data


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not model.startswith((".", "~"))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model_dir(model: str) -> Path:
    """A local directory for MODEL, downloading a Hub id if needed."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"MODEL {model!r} is a file; pass the checkpoint's directory")
        return path
    if not _looks_like_hub_id(model):
        raise ModelSourceError(f"MODEL {model!r} does not exist (expected a local directory or a Hub id)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelSourceError(
            f"MODEL {model!r} is not a local directory, and huggingface_hub is not installed to fetch it"
        ) from exc
    log.info("%s is not a local directory: fetching it from the Hugging Face Hub", model)
    try:
        from huggingface_hub import list_repo_files

        if _hub_offline():  # only the local cache can answer
            return Path(snapshot_download(model, allow_patterns=_HUB_COMMON + _HUB_SAFETENSORS + _HUB_PYTORCH,
                                          local_files_only=True))
        # one weight format only: safetensors when the repository has it (microsoft/biogpt has both)
        has_safetensors = any(name.endswith(".safetensors") for name in list_repo_files(model))
        patterns = _HUB_COMMON + (_HUB_SAFETENSORS if has_safetensors else _HUB_PYTORCH)
        return Path(snapshot_download(model, allow_patterns=patterns))
    except Exception as exc:  # the hub client raises many types (offline, 404, auth)
        raise ModelSourceError(
            f"MODEL {model!r} is not a local directory and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}). Pass a local checkpoint directory."
        ) from exc


def open_checkpoint(model: str) -> Checkpoint:
    """Resolve MODEL, read its config and open (not load) its weights."""
    directory = resolve_model_dir(model)
    config_path = directory / "config.json"
    if not config_path.is_file():
        hint = ""
        if (directory / "checkpoint.pt").is_file():
            hint = " It looks like a fairseq checkpoint, but dict.txt or bpecodes is missing beside checkpoint.pt."
        raise ModelSourceError(f"{directory} has no config.json; it is not a Hugging Face model directory.{hint}")
    config = _read_json(config_path)
    generation_path = directory / "generation_config.json"
    generation_config = _read_json(generation_path) if generation_path.is_file() else {}
    spec = get_spec(config.get("model_type"))
    dims = spec.read_dims(config)
    dims.validate()
    tensors = open_weights(directory)
    return Checkpoint(
        source=model,
        directory=directory,
        config=config,
        generation_config=generation_config,
        spec=spec,
        dims=dims,
        tensors=tensors,
    )
