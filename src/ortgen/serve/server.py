"""Running the app: uvicorn on a socket we bind ourselves, and a graceful SIGTERM.

SIGTERM (what Kubernetes and systemd send) does not close the listening socket at once, as
uvicorn would: the server keeps answering, with 503 for new requests (and for readiness, so a
load balancer stops routing here), lets the requests already running finish within the grace
period, then shuts down and exits 0. A second signal stops at once.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Callable

import uvicorn

from ortgen.serve.service import GenerationService

log = logging.getLogger("ortgen.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: GenerationService, grace_seconds: float) -> None:
        super().__init__(config)
        self.service = service
        self.grace_seconds = grace_seconds

    def handle_exit(self, sig: int, frame) -> None:  # called by uvicorn's signal handling
        if self.service.draining:
            log.warning("second signal: stopping now")
            super().handle_exit(sig, frame)
            return
        self.service.draining = True
        name = signal.Signals(sig).name if sig else "signal"
        log.info("%s: refusing new requests (503); waiting up to %gs for %d running", name, self.grace_seconds,
                 self.service.in_flight)
        threading.Thread(target=self._drain, name="ortgen-drain", daemon=True).start()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while self.service.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.service.in_flight:
            log.warning("grace period over: %d requests still running are cut off", self.service.in_flight)
        else:
            log.info("all requests finished; shutting down")
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port; read it back from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(service: GenerationService, sock: socket.socket, on_ready: Callable[[], None] | None = None,
          rag=None) -> None:
    """Serve until SIGTERM/SIGINT (then drain, see the module docstring); ``rag``: a RagPipeline."""
    from ortgen.serve.app import create_app

    app = create_app(service, rag)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5,
                            lifespan="off", timeout_keep_alive=30)
    server = DrainingServer(config, service, service.config.grace_seconds)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets=None) -> None:
            await original(sockets=sockets)
            on_ready()

        server.startup = startup  # type: ignore[method-assign]
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        if rag is not None:
            rag.index.close()
