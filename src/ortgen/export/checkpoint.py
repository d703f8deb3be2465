"""Read a Hugging Face checkpoint directory: its configuration, architecture and weights.

Reading happens here; nothing is written. Which directory MODEL means (a local directory, a
fairseq checkpoint, a Hub id) is decided by :mod:`ortgen.convert.source`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortgen.arch import ArchSpec, ModelDims, get_spec
from ortgen.errors import ModelSourceError
from ortgen.jsonfile import read_json
from ortgen.tensor_files import TensorSource, open_weights

log = logging.getLogger(__name__)


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


def open_checkpoint(directory: Path, source: str | None = None) -> Checkpoint:
    """Read the config of the Hugging Face directory ``directory`` and open (not load) its weights.
    ``source`` is what the user named (a Hub id, a fairseq directory); MODEL directories are
    resolved by :func:`ortgen.convert.source.resolve_source`."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(f"{directory} has no config.json; it is not a Hugging Face model directory")
    config = _read_json(config_path)
    generation_path = directory / "generation_config.json"
    generation_config = _read_json(generation_path) if generation_path.is_file() else {}
    spec = get_spec(config.get("model_type"))
    dims = spec.read_dims(config)
    dims.validate()
    tensors = open_weights(directory)
    return Checkpoint(
        source=source or str(directory),
        directory=directory,
        config=config,
        generation_config=generation_config,
        spec=spec,
        dims=dims,
        tensors=tensors,
    )
