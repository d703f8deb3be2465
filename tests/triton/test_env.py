"""The server environment: built once, reused, refuses to take over a directory that is not its own."""

from __future__ import annotations

import subprocess
import time

import pytest

from ortgen.triton.env import RECORD, TritonEnvError, ensure_env, open_env

pytestmark = pytest.mark.triton


def test_a_second_build_reuses_the_environment(triton_env):
    started = time.perf_counter()
    again = ensure_env(triton_env.path, link=True)
    assert time.perf_counter() - started < 30, "the environment was rebuilt"
    assert again == triton_env == open_env(triton_env.path)
    assert (triton_env.path / RECORD).is_file()
    check = subprocess.run([str(triton_env.python), "-c", "import numpy, onnxruntime, ortgen, tokenizers; "
                            "print(numpy.__version__)"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("1."), "the server's Python needs numpy<2"


def test_the_launcher_runs_the_wheels_server(triton_env):
    result = subprocess.run([str(triton_env.launcher), "--help"], capture_output=True, text=True, timeout=60)
    assert "Usage: tritonserver" in result.stdout + result.stderr  # (--help exits 1)


def test_a_directory_that_is_not_an_environment_is_never_touched(tmp_path):
    (tmp_path / "data.txt").write_text("keep")
    with pytest.raises(TritonEnvError, match="is not a virtual environment"):
        ensure_env(tmp_path)
    assert (tmp_path / "data.txt").read_text() == "keep"
    with pytest.raises(TritonEnvError, match="not a complete ortgen Triton environment"):
        open_env(tmp_path)
