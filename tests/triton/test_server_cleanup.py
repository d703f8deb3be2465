"""``running_tritonserver`` leaves nothing behind: not when the test body fails, not when the server
crashes, not when the server cannot start, not when the process that started it is killed."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ortgen.triton.server import SHM_DIR, TritonServerError, group_members, remove_stale_shm, running_tritonserver

pytestmark = pytest.mark.triton

ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
                for r in requests]
"""


@pytest.fixture()
def echo_repo(tmp_path) -> Path:
    (tmp_path / "repo" / "echo" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (tmp_path / "repo" / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    return tmp_path / "repo"


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def _gone(pgid: int, prefix: str) -> bool:
    return not _group_alive(pgid) and not glob.glob(str(SHM_DIR / f"{prefix}*"))


def test_a_failing_test_body_still_stops_the_server_and_its_stubs(echo_repo, triton_env):
    with pytest.raises(RuntimeError, match="the test failed"):
        with running_tritonserver(echo_repo, triton_env) as server:
            assert glob.glob(str(SHM_DIR / f"{server.shm_prefix}*")), "the stub's shared memory"
            raise RuntimeError("the test failed")
    assert server.process.returncode is not None
    assert _gone(server.process.pid, server.shm_prefix)


def test_a_crashed_server_leaves_no_stub_and_no_shared_memory(echo_repo, triton_env):
    with running_tritonserver(echo_repo, triton_env) as server:
        os.kill(server.process.pid, signal.SIGKILL)  # no chance to stop its stubs or free its regions
        time.sleep(0.5)
    assert _gone(server.process.pid, server.shm_prefix)


def test_a_repository_that_does_not_load_is_an_error_with_the_reason(echo_repo, triton_env):
    (echo_repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG.replace("max_batch_size: 0", "max_batch_size: 0\nbogus: 1"))
    with pytest.raises(TritonServerError, match="failed to read text proto from .*echo.config.pbtxt"):
        with running_tritonserver(echo_repo, triton_env, startup_timeout=60):
            pass


PR_SET_CHILD_SUBREAPER = 36


def _subreaper(on: bool) -> None:
    """Orphans of our children become ours (so the test can reap the orphaned server, not leave a zombie
    to an init that may not reap)."""
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def test_killing_the_process_that_started_it_stops_the_server(echo_repo, triton_env, tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from ortgen.triton.env import open_env
        from ortgen.triton.server import running_tritonserver
        with running_tritonserver({str(echo_repo)!r}, open_env({str(triton_env.path)!r})) as server:
            print(server.process.pid, server.shm_prefix, flush=True)
            time.sleep(600)
    """)
    _subreaper(True)
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, prefix = starter.stdout.readline().split()
        starter.kill()  # SIGKILL: no finally runs in the starter
        starter.wait(10)
        deadline = time.monotonic() + 30
        while _group_alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(int(pid)), "the server outlived the process that started it"
        os.waitpid(int(pid), 0)  # reap the orphan (ours as the subreaper)
        remove_stale_shm()  # what the next start does: regions of dead starters
        assert not glob.glob(str(SHM_DIR / f"{prefix}*"))
    finally:
        _subreaper(False)
        if starter.poll() is None:
            starter.kill()
