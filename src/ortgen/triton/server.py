"""Start the Triton server of an environment (:mod:`ortgen.triton.env`) on loopback, and always stop it.

Used by the tests and the load test, the way :mod:`ortgen.serve.process` starts ``ortgen serve``:

    with running_tritonserver(repository, env) as server:     # free ports for HTTP, gRPC, metrics
        httpx.post(server.http_url + "/v2/models/m/generate", ...)
    # stopped: SIGTERM, then SIGKILL to its process group (the python-backend stubs included)

Readiness is ``GET /v2/health/ready`` == 200 while the server's PID is alive (a second server on
the same ports exits, and the first would keep answering). The python backend's shared-memory
regions get a prefix unique to this server, so the regions a crashed stub leaves behind are
found and removed without touching any other server's.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ortgen.errors import OrtgenError
from ortgen.triton.env import TritonEnv

SHM_DIR = Path("/dev/shm")
STOP_SECONDS = 20.0
SHM_PREFIX = "ortgen_"  # + the starting process's pid + "_" + random + "_"
PR_SET_PDEATHSIG = 1


class TritonServerError(OrtgenError):
    """The server did not start (its log's last lines are in the message)."""


@dataclass
class TritonServer:
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    shm_prefix: str
    log: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def output(self, last: int | None = None) -> str:
        lines = self.log if last is None else self.log[-last:]
        return "".join(lines)

    def problems(self) -> str:
        """The log's error lines (Triton's start with E and the date) and its last lines: why it stopped."""
        errors = [line for line in self.log if re.match(r"^E\d{4} ", line)]
        return "".join(errors[-20:] + ["...\n"] + self.log[-8:])

    def ready(self) -> bool:
        return _status(self.http_url + "/v2/health/ready") == 200


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel reports free on loopback now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def remove_shm(prefix: str) -> list[str]:
    """Remove the python backend's shared-memory regions whose names start with ``prefix``."""
    removed = []
    for path in glob.glob(str(SHM_DIR / f"{prefix}*")):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def remove_stale_shm() -> list[str]:
    """Remove the regions of servers this module started from processes that no longer exist (killed
    before they could clean up)."""
    removed = []
    for path in glob.glob(str(SHM_DIR / f"{SHM_PREFIX}*_*_*")):
        pid = Path(path).name[len(SHM_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(path)
    return removed


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the server when the process that started it dies (even by
    SIGKILL), so a killed test run leaves no server behind; None where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def command(env: TritonEnv, repository: Path, ports: Sequence[int], shm_prefix: str,
            extra: Sequence[str] = ()) -> list[str]:
    http, grpc, metrics = ports
    return [str(env.tritonserver), f"--model-repository={repository}",
            f"--backend-directory={env.backend_directory}", f"--cache-directory={env.cache_directory}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
            "--disable-auto-complete-config", "--exit-on-error=true", "--strict-readiness=true",
            "--exit-timeout-secs=10", f"--backend-config=python,shm-region-prefix-name={shm_prefix}", *extra]


@contextlib.contextmanager
def running_tritonserver(repository: Path, env: TritonEnv, *args: str, startup_timeout: float = 180.0,
                         attempts: int = 3) -> Iterator[TritonServer]:
    """Start ``tritonserver`` for ``repository`` on free loopback ports; yield once ready; stop it
    (SIGTERM, then SIGKILL to its process group) and remove its shared memory whatever happens.
    A start that loses a port race is retried (``attempts``)."""
    if not env.with_server:
        raise TritonServerError(f"{env.path} has no Triton server (built without it); rebuild it with "
                                f"`ortgen triton-env {env.path}`")
    for attempt in range(attempts):
        server = _start(Path(repository).absolute(), env, args)
        try:
            _wait_ready(server, startup_timeout)
        except TritonServerError as exc:
            _stop(server)
            if "address already in use" in str(exc).lower() and attempt + 1 < attempts:
                continue
            raise
        except BaseException:
            _stop(server)
            raise
        try:
            yield server
        finally:
            _stop(server)
        return


def _start(repository: Path, env: TritonEnv, args: Sequence[str]) -> TritonServer:
    remove_stale_shm()
    ports = free_ports(3)
    prefix = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"
    # a process group of its own (the stubs join it: one kill reaches them all), not a session: the
    # server still dies with the terminal; and with its starter (PR_SET_PDEATHSIG)
    process = subprocess.Popen(command(env, repository, ports, prefix, args), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0,
                               preexec_fn=_die_with_parent(), env=env.server_environment())
    server = TritonServer(*ports, process=process, shm_prefix=prefix)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.log.append(line)

    threading.Thread(target=read, name="tritonserver-log", daemon=True).start()
    return server


def _wait_ready(server: TritonServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            time.sleep(0.2)  # let the reader catch the last lines
            raise TritonServerError(f"tritonserver exited with {server.process.returncode} before it was ready:\n"
                                    f"{server.problems()}")
        if server.ready():
            return
        time.sleep(0.1)
    raise TritonServerError(f"tritonserver was not ready within {timeout:g} s:\n{server.problems()}")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(Path(stat).parent.name))
    return members


def _exited(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, without reaping it: while it is an unreaped zombie its
    process-group id cannot be reused, so the group kill below reaches only what it started."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stop(server: TritonServer) -> None:
    process = server.process
    try:
        if process.returncode is None:  # not reaped yet
            if not _exited(process.pid):
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            while not _exited(process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            # the server's process group: the server if SIGTERM was not enough, and its python-backend
            # stubs, which can outlive a killed server
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        deadline = time.monotonic() + 10
        while group_members(process.pid) and time.monotonic() < deadline:  # stubs: killed, not yet gone
            time.sleep(0.05)
    finally:
        remove_shm(server.shm_prefix)
