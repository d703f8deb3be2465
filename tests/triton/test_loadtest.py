"""``ortgen loadtest --package PKG --triton-env DIR``: the same clients, prompts and settings against
``ortgen serve`` and Triton (the package's --backend python repository, generate_stream); Triton's
texts must equal ortgen serve's for each prompt alone."""

from __future__ import annotations

import json

import pytest

from ortgen.cli import main

pytestmark = pytest.mark.triton
pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")


def test_loadtest_against_ortgen_serve_and_triton(demo_package, triton_env, tmp_path, capsys):
    assert main(["loadtest", "--package", str(demo_package), "--triton-env", str(triton_env.path),
                 "--concurrency", "2", "--compare-at", "2", "--duration", "1", "--prompts", "2",
                 "--prompt-tokens", "6", "--max-tokens", "5", "--beam-width", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "loadtest.json").read_text())
    servers = [level["server"] for level in result["levels"]]
    assert servers == ["ortgen serve", "--max-running 1", "Triton (--backend python)"]
    for level in result["levels"]:
        assert level["completed"] > 0 and level["mismatches"] == 0 and level["status_5xx"] == 0, level
    assert "text prompts" in result["prompts"]
    assert "Triton (--backend python)" in capsys.readouterr().out
