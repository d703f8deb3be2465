"""export-embedder: the ONNX encoder reproduces sentence-transformers, refuses what it cannot export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ortgen.errors import OrtgenError
from ortgen.export.embedder import export_embedder
from ortgen.rag.embedder import Embedder
from ortgen.package.embedder import EmbedderError, EmbedderManifest

TEXTS = [
    "BRCA1",  # one word
    "What is the first-line treatment for type 2 diabetes?",
    "  Leading and trailing spaces are stripped, as sentence-transformers does.  ",
    "Ünïcödé: 日本語のテキスト, émigré café, naïve résumé, Δ9-tetrahydrocannabinol and β-blockers (±10 µg).",
    "Aspirin irreversibly inhibits cyclooxygenase-1. " * 80,  # ~1000 word pieces: truncated at 256
    "IL-6 and TNF-α levels rose after 2.5 mg/kg dexamethasone; p < 0.001 (n = 1,024).",
    "a",
    "Statins inhibit HMG-CoA reductase, the rate-limiting enzyme of cholesterol synthesis in the liver, and lower "
    "low-density lipoprotein cholesterol by 30 to 50 percent depending on dose and agent.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_embeddings_equal_sentence_transformers(embedder, sentence_transformer):
    ours = embedder.encode(TEXTS, batch_size=3)  # batches mix lengths: padding must not matter
    reference = sentence_transformer.encode(TEXTS, convert_to_numpy=True)
    cos = _cosines(ours, reference)
    print("cosine vs sentence-transformers:", np.round(cos, 6))
    assert cos.min() >= 0.9999, f"text {int(cos.argmin())} has cosine {cos.min():.6f}"
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised as the model says


def test_padding_is_masked(embedder):
    """A text alone and in a batch with a much longer one (so padded) gets the same vector."""
    short = "Metformin lowers hepatic glucose output."
    alone = embedder.encode([short])[0]
    padded = embedder.encode([short, "long context " * 100], batch_size=2)[0]
    assert float(alone @ padded) > 0.99999


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_a_texts_vector_does_not_depend_on_its_batch_mates(weights, model_dir: Path, embedder, tmp_path: Path):
    """Bitwise, whatever shares the call: alone, beside shorter and longer texts (odd and even widths, one of
    129 word pieces: the kernels' 128-row ranges), in batches of several sizes."""
    if weights == "float32":
        model = embedder
    else:
        export_embedder(model_dir, tmp_path / "int8", weight_type="int8")
        model = Embedder.open(tmp_path / "int8", threads=2)
    texts = TEXTS + ["word " * 126, "longer companion text " * 40, "a", "b c"]
    alone = np.stack([model.encode([t])[0] for t in texts])
    for batch_size in (2, 3, 8, 32):
        together = model.encode(texts, batch_size=batch_size)
        differing = [i for i in range(len(texts)) if not np.array_equal(together[i], alone[i])]
        assert not differing, f"{weights}, batches of {batch_size}: texts {differing} changed with their batch-mates"
    shuffled = model.encode(texts[::-1], batch_size=5)[::-1]
    assert np.array_equal(shuffled, alone)


def test_manifest_records_what_the_runtime_needs(embedder_dir: Path, model_dir: Path):
    manifest = EmbedderManifest.load(embedder_dir)
    assert (manifest.dims, manifest.pooling, manifest.normalize, manifest.max_seq_length) == (384, "mean", True, 256)
    assert manifest.source["path"] == str(model_dir.resolve())
    assert set(manifest.files) == {"encoder.onnx", "weights.bin", "tokenizer.json"}
    assert len(manifest.checksum) == 64
    assert not [p for p in embedder_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_int8_weights_stay_close(model_dir: Path, embedder, tmp_path: Path):
    export_embedder(model_dir, tmp_path / "int8", weight_type="int8")
    int8 = Embedder.open(tmp_path / "int8", threads=2)
    cos = _cosines(int8.encode(TEXTS), embedder.encode(TEXTS))
    print("int8 cosine vs float32:", np.round(cos, 4))
    assert cos.min() >= 0.98  # the tolerance docs/rag.md states for int8
    assert int8.identity != embedder.identity  # another embedder: an index must refuse to mix them


def _copy_model(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model directory to break in one way (the weights file is linked, not copied)."""
    out = tmp_path / "model"
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors"))
    (out / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    return out


@pytest.mark.parametrize("breakage, message", [
    ("gpt2", "model_type 'gpt2' has no embedder exporter; supported: bert"),
    ("no_modules", "no modules.json: not a sentence-transformers model directory"),
    ("dense", "Dense after Pooling are not supported"),
    ("two_poolings", "pooling mean + max is not supported; supported: exactly one of"),
    ("bin_weights", "has pytorch_model.bin; supported: model.safetensors"),
    ("no_tokenizer", "no tokenizer.json"),
])
def test_unsupported_directories_are_refused(model_dir: Path, tmp_path: Path, breakage: str, message: str):
    src = _copy_model(model_dir, tmp_path)
    if breakage == "gpt2":
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    elif breakage == "no_modules":
        (src / "modules.json").unlink()
    elif breakage == "dense":
        modules = json.loads((src / "modules.json").read_text())
        modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (src / "modules.json").write_text(json.dumps(modules))
    elif breakage == "two_poolings":
        pooling = json.loads((src / "1_Pooling/config.json").read_text())
        (src / "1_Pooling/config.json").write_text(json.dumps({**pooling, "pooling_mode_max_tokens": True}))
    elif breakage == "bin_weights":
        (src / "model.safetensors").rename(src / "pytorch_model.bin")
    elif breakage == "no_tokenizer":
        (src / "tokenizer.json").unlink()
    with pytest.raises(OrtgenError, match=message.replace("+", r"\+").replace("(", r"\(")):
        export_embedder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_is_not_overwritten(model_dir: Path, tmp_path: Path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OrtgenError, match="already exists"):
        export_embedder(model_dir, tmp_path / "out")


def test_not_an_embedder_directory(tmp_path: Path):
    with pytest.raises(EmbedderError, match="not an ortgen embedder"):
        Embedder.open(tmp_path)
