"""One evaluation run: several packages on one data set, in one output directory, resumable.

    OUT/run.json              what the run is (data file and its sha256, mode, verdict method, index,
                              packages): a resumed run must be the same run
    OUT/items-<package>.jsonl one line per answered item (see runner.py), appended as items finish
    OUT/report.{json,md,png}  scores per package and paired tests, written (atomically) at the end

Run it again after a crash or a kill and it answers only the items each package's file lacks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ortgen.errors import OrtgenError
from ortgen.evaluate.pubmedqa import EvalItem, file_digest, load_items
from ortgen.evaluate.report import markdown, paired_tests, plot, summarise
from ortgen.evaluate.runner import EvalConfig, ItemLog, PackageEvaluation

log = logging.getLogger(__name__)

RUN_FORMAT = "ortgen-eval-1"


def package_names(packages: Sequence[Path]) -> list[str]:
    """A short unique name per package: its directory's name (…-2, -3 when two share one)."""
    names: list[str] = []
    for path in packages:
        base = Path(path).resolve().name or "package"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class Evaluation:
    """Evaluate ``packages`` on ``data`` under ``config``; results in ``out``."""

    def __init__(self, packages: Sequence[Path], data: Path, out: Path, config: EvalConfig, *,
                 index: Path | None = None, embedder: Path | None = None, threads: int | None = None) -> None:
        if not packages:
            raise OrtgenError("no packages to evaluate")
        if config.mode == "index" and index is None:
            raise OrtgenError("mode 'index' needs --index DIR (an index made by ortgen rag index)")
        if config.mode != "index" and index is not None:
            raise OrtgenError(f"--index is used by mode 'index' only (mode is {config.mode!r})")
        self.packages = [Path(p) for p in packages]
        for path in self.packages:
            if not path.is_dir():
                raise OrtgenError(f"{path}: not a package directory (made by ortgen export)")
        self.names = package_names(self.packages)
        self.data = Path(data)
        self.items: list[EvalItem] = load_items(self.data)
        self.out = Path(out)
        self.config = config
        self.index_dir = Path(index) if index is not None else None
        self.embedder = embedder
        self.threads = threads

    def identity(self) -> dict[str, Any]:
        return {"format": RUN_FORMAT, "data": str(self.data.resolve()), "data_sha256": file_digest(self.data),
                "config": self.config.to_dict(),
                "index": None if self.index_dir is None else str(self.index_dir.resolve()),
                "packages": {name: str(path.resolve()) for name, path in zip(self.names, self.packages)}}

    def _check_or_write_identity(self) -> None:
        """A directory holding another run's results is refused, not mixed with this one."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "run.json"
        mine = self.identity()
        if path.exists():
            try:
                theirs = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                theirs = {}
            different = [key for key in ("format", "data_sha256", "config", "index") if theirs.get(key) != mine[key]]
            clashing = [name for name, where in mine["packages"].items()
                        if name in theirs.get("packages", {}) and theirs["packages"][name] != where]
            if different or clashing:
                what = ", ".join(different + [f"package {name!r} at another path" for name in clashing])
                raise OrtgenError(f"{self.out} holds another evaluation ({what} differ): resume it with the same "
                                  "data and options, or choose another --out (or --restart to discard it)")
            mine["packages"] = {**theirs.get("packages", {}), **mine["packages"]}
        _write_atomic(path, json.dumps(mine, indent=2) + "\n")

    def run(self, *, progress: bool = True, restart: bool = False) -> dict[str, Any]:
        from ortgen.runtime.generator import Generator

        if restart:
            for stale in self.out.glob("items-*.jsonl"):
                stale.unlink()
            (self.out / "run.json").unlink(missing_ok=True)
        self._check_or_write_identity()
        index = None
        if self.index_dir is not None:
            from ortgen.rag.index import Index

            index = Index.open(self.index_dir, embedder=self.embedder, threads=self.threads or 0)
        runs: dict[str, list[dict[str, Any]]] = {}
        seconds: dict[str, float] = {}
        try:
            for name, path in zip(self.names, self.packages):
                items_log = ItemLog(self.out / f"items-{name}.jsonl")
                started = time.perf_counter()
                try:
                    with Generator.load(path, threads=self.threads) as generator:
                        evaluation = PackageEvaluation(name, generator, self.config, index)
                        runs[name] = evaluation.run(self.items, items_log, progress=progress)
                finally:
                    items_log.close()
                seconds[name] = time.perf_counter() - started
        finally:
            if index is not None:
                index.close()
        report = {"data": str(self.data), "data_name": self.data.name, "items": len(self.items),
                  "config": self.config.to_dict(),
                  "index": None if self.index_dir is None else str(self.index_dir),
                  "packages": [summarise(name, rows, seconds.get(name)) for name, rows in runs.items()],
                  "paired": paired_tests(runs)}
        _write_atomic(self.out / "report.json", json.dumps(report, indent=2) + "\n")
        _write_atomic(self.out / "report.md", markdown(report))
        plot(report, self.out / "report.png")
        return report
