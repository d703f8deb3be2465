"""ortgen: Hugging Face decoder-only LMs on ONNX Runtime, with generation inside the graph."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "Generator"]


def __getattr__(name: str):  # lazy: `import ortgen` stays cheap for the CLI
    if name == "Generator":
        from ortgen.runtime.generator import Generator

        return Generator
    raise AttributeError(f"module 'ortgen' has no attribute {name!r}")
