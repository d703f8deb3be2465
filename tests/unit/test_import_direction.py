"""Imports only go downhill: the package floor imports nothing above it, the runtime never reaches
for the exporter, the validator, the converter or the heavy ML libraries, and converting never
needs the exporter. Checked statically over every import statement, function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ortgen"

FORBIDDEN = {
    "package": ("ortgen.runtime", "ortgen.export", "ortgen.validate", "ortgen.convert", "ortgen.serve",
                "ortgen.triton", "ortgen.rag", "ortgen.bench", "ortgen.cli", "torch", "transformers"),
    "runtime": ("ortgen.export", "ortgen.validate", "ortgen.convert", "ortgen.serve", "ortgen.triton",
                "ortgen.rag", "ortgen.bench", "ortgen.cli", "torch", "transformers"),
    "convert": ("ortgen.export", "ortgen.validate", "ortgen.runtime"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_imports_go_downhill(floor):
    files = sorted((SRC / floor).rglob("*.py"))
    assert files, floor
    bad = []
    for path in files:
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[floor]):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ortgen.export.package import export_package\n    import torch\n")
    assert {"ortgen.export.package", "torch"} <= set(_imports(module))
