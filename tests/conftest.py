"""Shared fixtures: tiny random models of every architecture, and their exported packages.

Models and packages are built once per test session under pytest's temporary directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# the real BioGPT tokenizer files, beside the checkout (never copied into the repository)
REAL_BIOGPT_TOKENIZER = Path(
    os.environ.get("ORTGEN_BIOGPT_TOKENIZER", Path(__file__).resolve().parents[2] / "shared/data/biogpt-tokenizer")
)

try:  # torch/transformers come with the `export` extra; unit tests run without them
    import torch  # noqa: F401
    import transformers  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs the export extra (torch, transformers)")


def pytest_collection_modifyitems(config, items):
    # parity tests compare against transformers
    for item in items:
        if "parity" in item.path.parts and not HAVE_TORCH:
            item.add_marker(needs_torch)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.WARNING, logger="ortgen")
    yield


class _Zoo:
    """Builds tiny models and packages on first request, keeps them for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict = {}
        self._packages: dict = {}
        self._trained: dict = {}

    def model(self, arch: str, *, eos_bias: float | None = None, sharpness: float | None = None):
        from tests.helpers.models import build_tiny_model

        key = (arch, eos_bias, sharpness)
        if key not in self._models:
            name = arch + (f"-eos{eos_bias:g}" if eos_bias else "") + (f"-sharp{sharpness:g}" if sharpness else "")
            self._models[key] = build_tiny_model(arch, self.root / "models" / name, eos_bias=eos_bias,
                                                 sharpness=sharpness)
        return self._models[key]

    def package(self, arch: str, *, eos_bias: float | None = None, sharpness: float | None = None) -> Path:
        from ortgen.export.package import ExportOptions, export_package

        key = (arch, eos_bias, sharpness)
        if key not in self._packages:
            model = self.model(arch, eos_bias=eos_bias, sharpness=sharpness)
            out = self.root / "packages" / model.directory.name
            out.parent.mkdir(parents=True, exist_ok=True)
            export_package(str(model.directory), out, ExportOptions(show_progress=False))
            self._packages[key] = out
        return self._packages[key]


    def weights_package(self, arch: str, weights: str, *, eos_bias: float | None = None) -> Path:
        """The random ``arch`` model (as :meth:`model`) exported with ``weights`` (float32, float16, int8, int4)."""
        from ortgen.export.package import ExportOptions, export_package

        key = ("weights", arch, weights, eos_bias)
        if key not in self._packages:
            model = self.model(arch, eos_bias=eos_bias)
            out = self.root / "packages" / f"{model.directory.name}-{weights}"
            out.parent.mkdir(parents=True, exist_ok=True)
            export_package(str(model.directory), out, ExportOptions.for_weights(weights, show_progress=False))
            self._packages[key] = out
        return self._packages[key]

    def trained(self, arch: str):
        """A tiny model fitted to the demo corpus (confident predictions, like a real LM) and the
        corpus lines as its token ids."""
        from tests.helpers.models import build_tiny_model, train_on_demo_corpus

        if arch not in self._trained:
            model = build_tiny_model(arch, self.root / "models" / f"{arch}-trained")
            self._trained[arch] = (model, train_on_demo_corpus(model))
        return self._trained[arch]

    def trained_package(self, arch: str, weights: str = "float32") -> Path:
        """The trained ``arch`` model (generates words, like a real LM) exported with ``weights``
        (float32, float16, int8, int4; int8 / int4 with float32 activations)."""
        from ortgen.export.package import ExportOptions, export_package

        key = ("trained", arch, weights)
        if key not in self._packages:
            model, _ = self.trained(arch)
            out = self.root / "packages" / f"{arch}-trained-{weights}"
            out.parent.mkdir(parents=True, exist_ok=True)
            export_package(str(model.directory), out, ExportOptions.for_weights(weights, show_progress=False))
            self._packages[key] = out
        return self._packages[key]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> _Zoo:
    return _Zoo(tmp_path_factory.mktemp("zoo"))


def _random_biogpt_package(tmp_path_factory, size: str) -> Path:
    """ortgen's own random BioGPT of ``size`` (demo tokenizer), exported: built without torch."""
    from ortgen.demo.models import build_random_biogpt
    from ortgen.export.package import ExportOptions, export_package

    root = tmp_path_factory.mktemp(size)
    build_random_biogpt(root / "hf", size)
    export_package(str(root / "hf"), root / f"{size}-biogpt", ExportOptions(show_progress=False))
    return root / f"{size}-biogpt"


@pytest.fixture(scope="session")
def demo_package(tmp_path_factory) -> Path:
    """The embedded demo BioGPT (random weights, demo tokenizer), exported."""
    return _random_biogpt_package(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def small_package(tmp_path_factory) -> Path:
    """A 20M-parameter random BioGPT: steps take milliseconds, so tests can act while a request runs."""
    return _random_biogpt_package(tmp_path_factory, "small")
