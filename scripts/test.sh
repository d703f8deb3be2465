#!/usr/bin/env bash
# Fresh machine -> the test suite: create .venv, install ortgen with the export extra
# (torch==2.13.0 CPU, transformers), the bench extra (CTranslate2, matplotlib: the benchmark's
# smoke test) and the dev extra (pytest), run pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow` for the real-size exports).
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv || exit 1
. .venv/bin/activate
python -m pip install -q --upgrade pip || exit 1
python -m pip install -q -e ".[export,bench,serve,rag,rag-dev,dev]" || exit 1
python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$status"
