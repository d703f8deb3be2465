"""Architecture registry: ``config.model_type`` -> :class:`~ortgen.arch.spec.ArchSpec`.

This package is the only place in ortgen with per-model knowledge.
"""

from __future__ import annotations

from ortgen.arch import biogpt, gpt2, llama, mistral, opt, qwen2
from ortgen.arch.spec import ArchSpec, ModelDims, ParityTolerance, WeightLayout
from ortgen.errors import UnsupportedModelError

_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add a spec to the registry (one per model_type)."""
    if spec.model_type in _REGISTRY:
        raise ValueError(f"model_type {spec.model_type!r} is registered twice")
    _REGISTRY[spec.model_type] = spec
    return spec


for _module in (biogpt, gpt2, llama, mistral, opt, qwen2):
    register(_module.SPEC)


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(model_type: str | None) -> ArchSpec:
    """The spec for ``model_type``; the error lists the supported ones."""
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise UnsupportedModelError(
        f"no exporter for model_type {model_type!r}; supported: {', '.join(supported_model_types())}"
    )


__all__ = [
    "ArchSpec",
    "ModelDims",
    "ParityTolerance",
    "WeightLayout",
    "get_spec",
    "register",
    "supported_model_types",
]
