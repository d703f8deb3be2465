"""Progress for long work: a bar on a terminal, periodic log lines elsewhere (CI logs)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("ortgen.progress")


class Progress:
    """Report ``done / total`` steps of a named task.

    On a terminal it redraws one line; otherwise it logs at most every 10% so logs stay
    short. ``enabled=False`` silences it (library use).
    """

    def __init__(self, label: str, total: int, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self._tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def update(self, done: int, total: int | None = None) -> None:
        if total:
            self.total = max(total, 1)
        if not self.enabled:
            return
        fraction = min(done / self.total, 1.0)
        elapsed = time.perf_counter() - self.started
        if self._tty:
            width = 30
            filled = int(width * fraction)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {elapsed:6.1f}s")
            self.stream.flush()
        else:
            decile = int(fraction * 10)
            if decile > self._last_decile:
                self._last_decile = decile
                log.info("%s: %d/%d (%.0f%%) %.1fs", self.label, done, self.total, 100 * fraction, elapsed)

    def close(self) -> float:
        """Finish the line; returns the elapsed seconds."""
        elapsed = time.perf_counter() - self.started
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
        return elapsed
