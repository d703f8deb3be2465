"""``ortgen triton-env DIR``: the Python environment for Triton's python-backend models."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triton-env",
        help="build (or reuse) the Python environment Triton's python-backend models run in",
        description=(
            "Build a virtual environment for the python-backend models of `ortgen triton` repositories: ortgen's "
            "runtime dependencies with numpy<2 (Triton 2.51's stub crashes on BYTES tensors with numpy 2), ortgen "
            "itself, and (unless --no-server) Triton 2.51 with the python backend from the nvidia-pytriton wheel, "
            "plus DIR/bin/ortgen-tritonserver, which runs it with its libraries set. A second run reuses DIR. "
            "Point Triton at it: run DIR/bin/ortgen-tritonserver, or put DIR/bin first on PATH, or write the "
            "repository with `ortgen triton --python-env DIR` (EXECUTION_ENV_PATH). Reference: docs/triton.md."
        ),
        epilog="example: ortgen triton-env ~/ortgen-triton-env && "
               "~/ortgen-triton-env/bin/ortgen-tritonserver --model-repository=triton-repo",
    )
    p.add_argument("path", metavar="DIR", type=Path, help="the environment's directory (created, or reused)")
    p.add_argument("--no-server", action="store_true",
                   help="leave out the Triton server wheel, e.g. inside the Triton container (default: include it)")
    p.add_argument("--link", action="store_true",
                   help="import ortgen from this source checkout instead of installing a copy, for developing "
                        "ortgen (default: a copy)")
    p.add_argument("--python", metavar="EXE",
                   help="the Python the environment is made from; the Triton wheel has stubs for 3.8-3.13 "
                        "(default: the Python running ortgen)")
    p.add_argument("--rebuild", action="store_true", help="rebuild DIR from scratch (default: reuse it)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.triton.env import ensure_env

    env = ensure_env(args.path, with_server=not args.no_server, link=args.link, python=args.python,
                     rebuild=args.rebuild)
    print(f"environment ready: {env.path} (Python {env.python_version})")
    if env.with_server:
        print(f"  start Triton:  {env.launcher} --model-repository=REPO")
    print(f"  or set EXECUTION_ENV_PATH: ortgen triton PACKAGE -o REPO --python-env {env.path}")
    return 0
