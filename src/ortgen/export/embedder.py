"""``ortgen export-embedder``: a sentence-transformers BERT directory in, an ONNX embedder out.

The directory is written into a temporary directory beside the destination and renamed into
place only when every file is complete (a failure never leaves a half embedder behind). Layout
and manifest: :mod:`ortgen.package.embedder`.

No torch: weights come from model.safetensors through numpy, and the graph is built by
:mod:`ortgen.export.embedder_graph` with ONNX Runtime's fused BERT operators.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import onnx

from ortgen import __version__
from ortgen.errors import OrtgenError
from ortgen.export.embedder_graph import WEIGHT_TYPES, build_encoder_model
from ortgen.export.embedder_source import EmbedderSourceError, open_embedder_source
from ortgen.export.onnx_graph import WeightFile
from ortgen.package.embedder import ENCODER, TOKENIZER, WEIGHTS, EmbedderManifest

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_embedder(source_dir: Path, out_dir: Path, *, weight_type: str = "float32",
                    overwrite: bool = False) -> EmbedderManifest:
    """Export the sentence-transformers model in ``source_dir`` to ``out_dir``; returns its manifest.

    ``weight_type`` "float32" (default: the sentence-transformers vectors to cosine 0.9999) or
    "int8" (linear layers in int8: faster on the CPU, vectors within about cosine 0.99)."""
    if weight_type not in WEIGHT_TYPES:
        raise OrtgenError(f"--weights must be one of {', '.join(WEIGHT_TYPES)}, got {weight_type!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OrtgenError(f"{out_dir} already exists; choose another -o or pass --overwrite")
    started = time.perf_counter()
    source = open_embedder_source(Path(source_dir))
    log.info("exporting %s: BERT %d layers x %d hidden, %s pooling%s, max %d tokens", source.name,
             source.dims.num_layers, source.dims.hidden_size, source.pooling,
             " + normalise" if source.normalize else "", source.max_seq_length)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        weight_file = WeightFile(tmp / WEIGHTS)
        try:
            model = build_encoder_model(source.dims, source.load_weights(), weight_file, source.pooling,
                                        source.normalize, weight_type)
        except ValueError as exc:
            raise EmbedderSourceError(f"{source.weights_path}: {exc}") from exc
        finally:
            weights_sha = weight_file.close()
        onnx.save_model(model, str(tmp / ENCODER))
        shutil.copyfile(source.tokenizer_path, tmp / TOKENIZER)
        files = {ENCODER: _sha256(tmp / ENCODER), WEIGHTS: weights_sha, TOKENIZER: _sha256(tmp / TOKENIZER)}
        manifest = EmbedderManifest(
            dims=source.dims.hidden_size, pooling=source.pooling, normalize=source.normalize,
            max_seq_length=source.max_seq_length, do_lower_case=source.do_lower_case, model_type="bert",
            num_layers=source.dims.num_layers, weight_type=weight_type,
            source={"path": str(source.directory.resolve()), "name": source.name}, files=files,
            checksum=EmbedderManifest.compute_checksum(files, source.dims.hidden_size, source.pooling,
                                                       source.normalize, source.max_seq_length,
                                                       source.do_lower_case),
            ortgen_version=__version__)
        manifest.write(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s (%s) in %.1fs", out_dir, manifest.identity, time.perf_counter() - started)
    return manifest
