#!/usr/bin/env bash
# Fresh machine -> the main job on the embedded default model:
# create .venv, install ortgen (runtime dependencies only: no torch, no transformers),
# build a small BioGPT with random weights locally, export it, inspect it, generate.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
ortgen demo "$@"
