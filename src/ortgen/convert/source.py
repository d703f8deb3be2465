"""MODEL as the user names it -> a Hugging Face model directory, for export and validate alike.

MODEL may be a local Hugging Face directory, a fairseq BioGPT directory (``checkpoint.pt``,
``dict.txt``, ``bpecodes``: converted into a temporary Hugging Face directory that lives as
long as the ``with`` block), or a Hub id (fetched when the Hub is reachable). Every way it can
fail ends in a :class:`ModelSourceError` that says which of these MODEL was taken for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ortgen.convert.fairseq_biogpt import convert_fairseq_biogpt, is_fairseq_dir
from ortgen.errors import ModelSourceError

log = logging.getLogger(__name__)

HF_DIR, FAIRSEQ_DIR, HUB_ID = "huggingface-directory", "fairseq-directory", "hub-id"

_HUB_COMMON = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt",
               "special_tokens_map.json"]
_HUB_SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
_HUB_PYTORCH = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


@dataclass(frozen=True)
class ResolvedSource:
    """What MODEL turned out to be, and the Hugging Face directory to read."""

    model: str  # as the user gave it
    kind: str  # HF_DIR, FAIRSEQ_DIR or HUB_ID
    directory: Path


def looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not model.startswith((".", "~", "/"))


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _fetch_from_hub(model: str) -> Path:
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError as exc:
        raise ModelSourceError(
            f"MODEL {model!r} is not a local directory, and huggingface_hub is not installed to fetch it "
            "(pip install 'ortgen[export]', or pass a local checkpoint directory)") from exc
    log.info("%s is not a local directory: fetching it from the Hugging Face Hub", model)
    try:
        if _hub_offline():  # only the local cache can answer
            return Path(snapshot_download(model, allow_patterns=_HUB_COMMON + _HUB_SAFETENSORS + _HUB_PYTORCH,
                                          local_files_only=True))
        # one weight format only: safetensors when the repository has it (microsoft/biogpt has both)
        has_safetensors = any(name.endswith(".safetensors") for name in list_repo_files(model))
        return Path(snapshot_download(model, allow_patterns=_HUB_COMMON + (
            _HUB_SAFETENSORS if has_safetensors else _HUB_PYTORCH)))
    except Exception as exc:  # the hub client raises many types (offline, 404, auth)
        raise ModelSourceError(
            f"MODEL {model!r} is not a local directory and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}). Pass a local checkpoint directory."
        ) from exc


@contextlib.contextmanager
def resolve_source(model: str, *, scratch_dir: Path | None = None, show_progress: bool = True
                   ) -> Iterator[ResolvedSource]:
    """Yield MODEL as a Hugging Face directory (see the module docstring). A fairseq checkpoint is
    converted into a temporary directory under ``scratch_dir`` (default: the system's), removed on
    exit."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelSourceError(f"MODEL {model!r} is a file; pass the checkpoint's directory")
        if is_fairseq_dir(path):
            with tempfile.TemporaryDirectory(prefix=".ortgen-fairseq-", dir=scratch_dir) as scratch:
                log.info("%s is a fairseq checkpoint: converting it to Hugging Face format first", model)
                hf_dir = convert_fairseq_biogpt(str(path), Path(scratch) / "hf", show_progress=show_progress)
                yield ResolvedSource(model, FAIRSEQ_DIR, hf_dir)
            return
        if not (path / "config.json").is_file():
            hint = ""
            if (path / "checkpoint.pt").is_file():
                hint = " It looks like a fairseq checkpoint, but dict.txt or bpecodes is missing beside checkpoint.pt."
            raise ModelSourceError(f"{path} has no config.json; it is not a Hugging Face model directory "
                                   f"(nor a fairseq BioGPT directory: checkpoint.pt, dict.txt, bpecodes).{hint}")
        yield ResolvedSource(model, HF_DIR, path)
        return
    if not looks_like_hub_id(model):
        raise ModelSourceError(f"MODEL {model!r} does not exist (expected a local Hugging Face or fairseq "
                               "directory, or a Hub id like microsoft/biogpt)")
    yield ResolvedSource(model, HUB_ID, _fetch_from_hub(model))
