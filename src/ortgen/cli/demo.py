"""``ortgen demo``: the whole path on the embedded default model, nothing downloaded."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ortgen.errors import OrtgenError

DEFAULT_PROMPTS = ["Aspirin reduces the risk of", "The primary outcome was"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build a small random BioGPT, export it and generate (no download)",
        description=(
            "The whole path on an embedded default model: build a small BioGPT with random weights and a "
            "tokenizer learned from a short biomedical text (nothing downloaded), export it, show the package "
            "and generate: beam search inside ONNX Runtime's BeamSearch operator, the same beams on ortgen's "
            "step engine, then greedy search. Random weights generate nonsense: this shows the machinery."
        ),
    )
    p.add_argument("--workdir", type=Path, default=Path("ortgen-demo"),
                   help="where the model and package go, rebuilt each run (default: ./ortgen-demo)")
    p.add_argument("--prompt", action="append",
                   help="prompt(s) to generate for (repeatable; default: two biomedical prompts)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.cli.generate import print_result
    from ortgen.cli.inspect import describe
    from ortgen.export.package import ExportOptions, export_package
    from ortgen.demo.models import build_random_biogpt
    from ortgen.runtime.generator import Generator

    workdir: Path = args.workdir
    model_dir, package_dir = workdir / "model", workdir / "package"
    if workdir.exists():
        if not (model_dir.exists() or package_dir.exists()) and any(workdir.iterdir()):
            raise OrtgenError(f"{workdir} exists and was not made by `ortgen demo`; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    print(f"1. building a small random BioGPT in {model_dir}")
    build_random_biogpt(model_dir, "demo")
    print(f"2. exporting it to {package_dir}")
    export_package(str(model_dir), package_dir, ExportOptions(force=True))
    print("3. the package:")
    print(describe(package_dir))
    prompts = args.prompt or DEFAULT_PROMPTS
    print("4. generating (random weights: expect nonsense): beam search inside ONNX Runtime's BeamSearch "
          "operator, then with ortgen's step engine (the default), then greedy")
    generator = Generator.load(package_dir)
    beam = {"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 12, "length_penalty": 0.0}
    for options in ({**beam, "backend": "graph"}, beam, {"max_new_tokens": 12}):
        print_result(generator.generate(prompts, **options), prompts)
    print(f'done: try `ortgen generate {package_dir} "your prompt" --num-beams 4`')
    return 0
