"""``ortgen triton PACKAGE -o REPO``: a Triton model repository for a package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ortgen.cli._args import positive_int


def _strategies(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triton",
        help="write a Triton Inference Server model repository for a package",
        description=(
            "Write a Triton model repository for a package. --backend python: one python-backend model running "
            "ortgen's Generator (requests share decoder steps, every setting exact, decoupled: streams through gRPC "
            "and /generate_stream) plus NAME_infer for the infer endpoints. --backend onnxruntime: an ensemble per "
            "strategy: python preprocessing (tokenizer, prompt format) -> the package's BeamSearch / GreedySearch / "
            "Sampling graph on Triton's onnxruntime backend -> python postprocessing. Inputs take TensorRT-LLM's "
            "ensemble names (text_input, max_tokens, beam_width, ...), outputs text_output. Also writes README.md "
            "(starting Triton, clients, Kubernetes), k8s-*.yaml and a Dockerfile. Every config.pbtxt is checked "
            "against Triton's schema; the repository appears complete or not at all. Needs the triton extra: "
            "pip install 'ortgen[triton]'. The python models need ortgen in the server's Python: see `ortgen "
            "triton-env`. Reference: docs/triton.md."
        ),
        epilog="example: ortgen triton biogpt-pkg -o triton-repo --name biogpt && "
               "ortgen-env/bin/ortgen-tritonserver --model-repository=triton-repo",
    )
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("-o", "--output", metavar="REPO", type=Path, required=True,
                   help="the repository directory to write (required)")
    p.add_argument("--name", help="the model name clients call (default: the package directory's name)")
    p.add_argument("--backend", choices=("python", "onnxruntime"), default="python",
                   help="python: ortgen's step engine in Triton (streaming, batching across requests, every setting); "
                        "onnxruntime: the in-graph operators on Triton's onnxruntime backend (default: python)")
    p.add_argument("--instance-kind", choices=("cpu", "gpu"), default="cpu",
                   help="where the generating model's instances run (default: cpu)")
    p.add_argument("--instances", type=positive_int, default=1,
                   help="instances of the generating model, each with its own copy of the weights (default: 1)")
    p.add_argument("--threads", type=positive_int,
                   help="ONNX Runtime intra-op threads per instance (default: all cores)")
    p.add_argument("--strategies", type=_strategies,
                   help="--backend onnxruntime: comma-separated strategies, one ensemble each, the first named NAME, "
                        "the others NAME_<strategy>; from beam, greedy, sample (default: beam)")
    p.add_argument("--python-env", metavar="DIR",
                   help="write EXECUTION_ENV_PATH=DIR into the python models' configs: the environment built by "
                        "`ortgen triton-env DIR`, as the server will see it (default: none; the server's python3 on "
                        "PATH must have ortgen)")
    p.add_argument("--force", action="store_true",
                   help="replace REPO if it is a repository written by ortgen triton (default: refuse)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.errors import OrtgenError
    from ortgen.triton.repository import RepositoryOptions, write_repository

    if args.strategies is not None and args.backend != "onnxruntime":
        raise OrtgenError("--strategies applies to --backend onnxruntime (the python backend runs every strategy "
                          "in one model)")
    name = args.name or args.package.resolve().name
    options = RepositoryOptions(name=name, backend=args.backend, instance_kind=args.instance_kind,
                                instances=args.instances, threads=args.threads, strategies=args.strategies or ("beam",),
                                python_env=args.python_env)
    repo = write_repository(args.package, args.output, options, replace=args.force)
    print(f"wrote {repo.path} ({'package files reflinked' if repo.cloned else 'package files copied'}):")
    for model, what in repo.models.items():
        print(f"  {model:<28} {what}")
    print(f"start it and call it: {repo.path / 'README.md'}")
    return 0
