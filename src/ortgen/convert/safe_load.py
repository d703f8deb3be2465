"""Load a fairseq ``checkpoint.pt`` without fairseq and without running code from the pickle.

torch's ``weights_only`` unpickler rebuilds only tensors and plain containers; we allow a
few more globals that fairseq checkpoints legitimately hold (the legacy ``args``
``argparse.Namespace``, numpy scalars and arrays in ``extra_state``). Before loading, the
pickle's globals are listed and anything else is refused by name.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ortgen.errors import ModelSourceError

log = logging.getLogger(__name__)


def _numpy_globals() -> list[tuple[Any, str]]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    pairs: list[tuple[Any, str]] = []
    for prefix in ("numpy.core", "numpy._core"):
        pairs.append((core.multiarray.scalar, f"{prefix}.multiarray.scalar"))
        pairs.append((core.multiarray._reconstruct, f"{prefix}.multiarray._reconstruct"))
    pairs.append((np.dtype, "numpy.dtype"))
    pairs.append((np.ndarray, "numpy.ndarray"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                pairs.append((getattr(dtypes, name), f"numpy.dtypes.{name}"))
    return pairs


def _allowed() -> list[tuple[Any, str]]:
    return [(argparse.Namespace, "argparse.Namespace"), *_numpy_globals()]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict; tensors stay memory-mapped (no full copy in memory)."""
    try:
        import torch
    except ImportError as exc:
        raise ModelSourceError("reading fairseq checkpoints needs torch: pip install 'ortgen[export]'") from exc
    if not path.is_file():
        raise ModelSourceError(f"{path} does not exist")
    allowed = _allowed()
    allowed_names = {name for _, name in allowed}
    try:
        globals_in_file = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a torch zip file, truncated, ...
        raise ModelSourceError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    refused = sorted(set(globals_in_file) - allowed_names)
    if refused:
        raise ModelSourceError(
            f"{path} refers to objects ortgen will not unpickle: {', '.join(refused)}. ortgen loads checkpoints "
            "without executing code from them and accepts tensors, plain containers, argparse.Namespace and numpy "
            "scalars/arrays only. If you trust this file, load it with fairseq and save the model state again."
        )
    try:
        with torch.serialization.safe_globals(allowed):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelSourceError(f"cannot load {path}: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ModelSourceError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state
