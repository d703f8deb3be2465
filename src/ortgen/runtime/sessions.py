"""ONNX Runtime sessions for a package's graphs: providers, threads, lazy creation."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import onnxruntime as ort

from ortgen.errors import OrtgenError, PackageError

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


def resolve_providers(providers: Sequence[str] | str | None) -> list[str]:
    """Provider names from aliases ("cpu", "cuda") or full names; CPU when unset."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    available = ort.get_available_providers()
    resolved = []
    for name in providers:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise OrtgenError(
                f"execution provider {name!r} is not available in this onnxruntime; available: {', '.join(available)}"
            )
        resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        env = os.environ.get("ORTGEN_THREADS")
        threads = int(env) if env else None
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT warns about the unused position_ids input
    return options


def create_session(path: Path, providers: Sequence[str], threads: int | None = None) -> ort.InferenceSession:
    """Open one ONNX file of a package."""
    if not path.is_file():
        raise PackageError(f"the package is incomplete: {path.name} is missing")
    log.debug("loading %s on %s", path.name, providers)
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PackageError(f"ONNX Runtime could not load {path}: {exc}") from exc
