"""Start ``ortgen serve`` in a process of its own on a free loopback port, and always stop it.

Used by the load test (``ortgen loadtest --package``) and by the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

from ortgen.errors import OrtgenError

READY_LINE = re.compile(r"serving (\S+) on (http://\S+) ")


@dataclass
class Server:
    url: str
    model: str
    process: subprocess.Popen
    log: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        return "".join(self.log)


@contextlib.contextmanager
def running_server(package: Path, *args: str, startup_timeout: float = 60.0, env: dict | None = None
                   ) -> Iterator[Server]:
    """``ortgen serve PACKAGE --port 0 ARGS``; yields once it answers /v2/health/ready; stops it on exit
    (SIGTERM, then SIGKILL after 10 s) whatever happens in between."""
    command = [sys.executable, "-m", "ortgen", "serve", str(package), "--host", "127.0.0.1", "--port", "0", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, **(env or {})})
    lines: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = READY_LINE.search(line)
            if match and not ready.is_set():
                found["model"], found["url"] = match.group(1), match.group(2)
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(startup_timeout) or "url" not in found:
            raise OrtgenError(f"ortgen serve did not start:\n{''.join(lines)}")
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise OrtgenError(f"ortgen serve exited with {process.returncode}:\n{''.join(lines)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(found["url"] + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        yield Server(found["url"], found["model"], process, lines)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        reader.join(5)
