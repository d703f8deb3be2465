"""The benchmark's models: random-weight checkpoints of real shapes, their packages and conversions.

Everything is built once under a work directory and reused by later runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# name -> (family, preset, quick preset)
MODELS = {
    "biogpt-base": ("biogpt", "biogpt-base", "demo"),
    "biogpt-large": ("biogpt", "biogpt-large", "demo"),
    "gpt2-medium": ("gpt2", "gpt2-medium", "gpt2-tiny"),
}


@dataclass
class BenchModel:
    name: str
    family: str
    hf_dir: Path
    packages: dict[str, Path]  # weights dtype (float32, float16, int8, int4) -> package
    ct2_dir: Path | None
    vocab_size: int
    first_token: int | None  # prompts start with it (BioGPT's </s>)
    pad_token_id: int
    eos_token_id: int
    notes: list[str] = field(default_factory=list)


def prepare(name: str, workdir: Path, *, quick: bool, dtypes: list[str], ctranslate2: bool) -> BenchModel:
    from ortgen.export.package import ExportOptions, export_package
    from ortgen.package.manifest import Manifest
    from ortgen.demo.models import build_random_biogpt, build_random_gpt2

    family, preset, quick_preset = MODELS[name]
    preset = quick_preset if quick else preset
    root = workdir / preset
    hf_dir = root / "hf"
    if not (hf_dir / "config.json").is_file():
        log.info("building a random %s checkpoint in %s", preset, hf_dir)
        if family == "biogpt":
            build_random_biogpt(hf_dir, preset)
        else:
            build_random_gpt2(hf_dir, preset)
    packages = {}
    for dtype in dtypes:
        package = root / f"package-{dtype}"
        if not _is_current(package):
            log.info("exporting %s (%s weights)", preset, dtype)
            export_package(str(hf_dir), package, ExportOptions.for_weights(dtype, force=True, show_progress=False))
        packages[dtype] = package
    ct2_dir = None
    if ctranslate2 and family == "gpt2":
        ct2_dir = root / "ctranslate2"
        if not (ct2_dir / "model.bin").is_file():
            import ctranslate2 as ct2

            log.info("converting %s for CTranslate2", preset)
            ct2.converters.TransformersConverter(str(hf_dir)).convert(str(ct2_dir), force=True)
    manifest = Manifest.load(next(iter(packages.values())))
    special = manifest.special_tokens
    first = 2 if family == "biogpt" else None
    label = f"{preset} (quick)" if quick else name  # a quick run's tiny model is not the named shape
    return BenchModel(label, family, hf_dir, packages, ct2_dir, manifest.architecture.vocab_size, first,
                      special.pad_token_id, special.eos_token_id)


def _is_current(package: Path) -> bool:
    """Whether a package left by an earlier run can be reused: complete, with a step-engine graph
    this ortgen drives, and with its best-tokens outputs (older packages run on whole logits rows:
    not what this ortgen would measure)."""
    from ortgen.errors import PackageError
    from ortgen.package import contract, open_package
    from ortgen.runtime.backend import has_step_engine

    try:
        graphs = open_package(package).graphs
    except PackageError:
        return False
    engine = graphs.get(contract.DECODER_ENGINE)
    return has_step_engine(graphs) and engine is not None and any(t.name == contract.BEST_IDS for t in engine.outputs)
