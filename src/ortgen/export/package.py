"""``ortgen export``: a checkpoint in, a complete package directory out.

The package is written into a temporary directory beside the destination and moved
into place only when every file is complete, so a failure (bad input, full disk,
Ctrl-C) never leaves a half-written package behind.

    PACKAGE_DIR/
      ortgen.json            manifest: architecture, graphs and I/O, checksums, defaults
      weights.bin            every weight, once
      decoder.onnx           one decoding step with KV cache (all logits)
      decoder_engine.onnx    the step engine's decoder (in-place KV cache, last-token logits)
      generate_beam.onnx     BeamSearch                       ┐
      generate_beam_early_stopping.onnx   (early_stopping=1)  │ the decoder inside ONNX Runtime's
      generate_greedy.onnx   GreedySearch                     ├ generation ops (last-token logits),
      generate_sample.onnx   Sampling                         ┘ all pointing at weights.bin
      tokenizer/             files the runtime tokenizer loads
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ortgen import __version__
from ortgen.package import contract
from ortgen.arch import ModelDims
from ortgen.errors import ModelSourceError, PackageError
from ortgen.jsonfile import read_json
from ortgen.convert.source import resolve_source
from ortgen.export.checkpoint import Checkpoint, open_checkpoint
from ortgen.export.decoder import build_decoder_graph, write_decoder_weights
from ortgen.export.engine_graph import build_engine_graph, engine_attributes
from ortgen.export.generation import (
    SamplingOptions,
    SpecialTokens,
    build_beam_search,
    build_greedy_search,
    build_sampling,
    make_model,
)
from ortgen.export.onnx_graph import WeightFile
from ortgen.export.quantize import QuantConfig
from ortgen.export.tokenizer_files import has_tokenizer_files, package_tokenizer
from ortgen.export.weights import DecoderWeights
from ortgen.package.generation_options import GenerationDefaults
from ortgen.package.manifest import (DTYPES, Architecture, FileEntry, GraphInfo, Manifest, Quantization, TensorSpec,
                                     file_entry)
from ortgen.package.prompt_format import PromptFormat
from ortgen.package.manifest import SpecialTokens as ManifestSpecialTokens
from ortgen.progress import Progress
from ortgen.staging import make_staging_dir

log = logging.getLogger(__name__)

@dataclass
class ExportOptions:
    """What ``ortgen export`` can be told besides MODEL and PACKAGE_DIR."""

    force: bool = False
    tokenizer: Path | None = None  # take the tokenizer from this directory instead of MODEL's
    quantize: QuantConfig | None = None  # weight-only int8 / int4 (MatMulNBits)
    dtype: str = "float32"  # or "float16": activations, cache, logits and unquantized weights
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    show_progress: bool = True

    @classmethod
    def for_weights(cls, weights: str, **options: Any) -> "ExportOptions":
        """Options for a package of ``weights``: float32 / float16 (the package's dtype), or int8 /
        int4 (quantized, float32 activations)."""
        if weights in DTYPES:
            return cls(dtype=weights, **options)
        return cls(quantize=QuantConfig.parse(weights), **options)


def _ids(value: Any) -> list[int]:
    """A config's token id field (an int, a list of them, or null) as a list, duplicates dropped."""
    return list(dict.fromkeys(int(i) for i in (value if isinstance(value, list) else [value]) if i is not None))


def _eos_ids(ck: Checkpoint) -> list[int]:
    """Every EOS id the checkpoint names, generation_config.json's before config.json's (Llama 3's
    instruct models end turns with <|eot_id|> or <|eom_id|> as well as <|end_of_text|>); the first is
    the one ONNX Runtime's generation operators stop on."""
    value = ck.generation_config.get("eos_token_id")
    ids = _ids(value if value is not None else ck.config.get("eos_token_id"))
    if not ids:
        raise ModelSourceError("the checkpoint defines no eos_token_id (config.json or generation_config.json)")
    return ids


def _special_tokens(ck: Checkpoint) -> SpecialTokens:
    eos = _eos_ids(ck)[0]
    value = ck.generation_config.get("pad_token_id")
    pad = _ids(value)[0] if _ids(value) else ck.dims.pad_token_id
    return SpecialTokens(eos_token_id=eos, pad_token_id=eos if pad is None else pad)


def _tensor_specs(values: Any) -> list[TensorSpec]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        shape: list[int | str] = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
        specs.append(TensorSpec(value.name, dtype, shape))
    return specs


def _graph_info(model: onnx.ModelProto, file: str, operator: str | None, logits: str, **attributes: Any) -> GraphInfo:
    return GraphInfo(
        file=file,
        operator=operator,
        inputs=_tensor_specs(model.graph.input),
        outputs=_tensor_specs(model.graph.output),
        logits=logits,
        attributes=attributes,
    )


def _source_record(ck: Checkpoint) -> dict[str, Any]:
    local = Path(ck.source).expanduser()
    record = {"model": ck.source, "model_type": ck.dims.model_type,
              "directory": str(local.resolve() if local.exists() else ck.directory.resolve())}
    converted = ck.config.get("ortgen_converted_from")
    if converted:
        record["converted_from"] = converted
    return record


def _architecture(dims: ModelDims, parameters: int) -> Architecture:
    return Architecture(
        model_type=dims.model_type,
        num_layers=dims.num_layers,
        hidden_size=dims.hidden_size,
        num_heads=dims.num_heads,
        head_dim=dims.head_dim,
        ffn_size=dims.ffn_size,
        vocab_size=dims.vocab_size,
        max_positions=dims.max_positions,
        position_offset=dims.position_offset,
        embed_scale=dims.embed_scale,
        activation=dims.activation,
        norm_position=dims.norm_position,
        parameters=parameters,
        num_kv_heads=dims.num_kv_heads if dims.kv_heads != dims.num_heads else None,
        positions="rotary" if dims.rotary else "learned",
        norm="rmsnorm" if dims.norm_kind == "rmsnorm" else "layernorm",
        sliding_window=dims.sliding_window,
    )


def _check_destination(output: Path, force: bool) -> None:
    if output.exists():
        if not force:
            raise PackageError(f"{output} already exists; pass --force to replace it")
        if output.is_dir() and any(output.iterdir()) and not (output / contract.MANIFEST_FILE).is_file():
            raise PackageError(f"{output} exists and is not an ortgen package; refusing to replace it even with --force")
    if not output.parent.exists():
        raise PackageError(f"the parent directory of {output} does not exist")


def _install(staging: Path, output: Path) -> None:
    """Move the finished package into place (replacing an old one only after it is complete)."""
    if output.exists():
        trash = output.with_name(f".{output.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        output.rename(trash)
        staging.rename(output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(output)


def _write_package(ck: Checkpoint, staging: Path, options: ExportOptions) -> Manifest:
    dims = ck.dims
    weights = DecoderWeights(ck.spec, dims, ck.tensors)
    weights.check()
    tokens = _special_tokens(ck)

    tokenizer_source = options.tokenizer or ck.directory
    tokenizer_info = None
    if options.tokenizer is not None or has_tokenizer_files(ck.directory):
        tokenizer_info = package_tokenizer(
            ck.spec.tokenizer, tokenizer_source, staging / contract.TOKENIZER_DIR, dims.vocab_size
        )
    else:
        log.warning("%s has no tokenizer files: the package will generate from token ids only", ck.directory)

    weight_file = WeightFile(staging / contract.WEIGHTS_FILE)
    progress = Progress(f"writing {dims.num_layers} layers", dims.num_layers, enabled=options.show_progress)
    try:
        written = write_decoder_weights(dims, weights, weight_file, progress.update, options.quantize, options.dtype)
    finally:
        weights_sha = weight_file.close()
        progress.close()

    files = {contract.WEIGHTS_FILE: file_entry(staging / contract.WEIGHTS_FILE, weights_sha)}
    graphs: dict[str, GraphInfo] = {}

    def save(key: str, model: onnx.ModelProto, operator: str | None, logits: str, **attributes: Any) -> None:
        name = contract.GRAPH_FILES[key]
        onnx.save(model, staging / name)
        files[name] = file_entry(staging / name)
        graphs[key] = _graph_info(model, name, operator, logits, **attributes)

    save(contract.DECODER, make_model(build_decoder_graph(dims, written, logits="all")), None, "all")
    save(contract.DECODER_ENGINE, make_model(build_engine_graph(dims, written)), None, "last",
         **engine_attributes(dims))
    last_only = build_decoder_graph(dims, written, logits="last")
    save(contract.BEAM, build_beam_search(dims, last_only, tokens), "BeamSearch", "last", early_stopping=False)
    save(contract.BEAM_EARLY_STOPPING, build_beam_search(dims, last_only, tokens, early_stopping=True),
         "BeamSearch", "last", early_stopping=True)
    save(contract.GREEDY, build_greedy_search(dims, last_only, tokens), "GreedySearch", "last")
    sampling = options.sampling
    save(contract.SAMPLE, build_sampling(dims, last_only, tokens, sampling), "Sampling", "last",
         temperature=sampling.temperature, top_p=sampling.top_p)

    if tokenizer_info is not None:
        for name in tokenizer_info.files:
            rel = f"{contract.TOKENIZER_DIR}/{name}"
            files[rel] = file_entry(staging / rel)

    prompt_format = None
    format_file = ck.directory / "prompt_format.json"
    if format_file.is_file():
        try:
            prompt_format = PromptFormat.from_dict(read_json(format_file, error=ModelSourceError),
                                                   path="", source=str(format_file))
        except PackageError as exc:
            raise ModelSourceError(str(exc)) from None
        log.info("prompt format: %s", prompt_format.description or "recorded")
    manifest = Manifest(
        ortgen_version=__version__,
        source=_source_record(ck),
        architecture=_architecture(dims, weights.parameter_count()),
        special_tokens=ManifestSpecialTokens(
            bos_token_id=dims.bos_token_id, eos_token_id=tokens.eos_token_id, pad_token_id=tokens.pad_token_id,
            eos_token_ids=_eos_ids(ck),
        ),
        dtype=options.dtype,
        weights_dtype=written.dtype,
        quantization=(Quantization(options.quantize.bits, options.quantize.block_size,
                                   options.quantize.accuracy_level) if options.quantize else None),
        graphs=graphs,
        weights_file=contract.WEIGHTS_FILE,
        files=files,
        generation_defaults=GenerationDefaults.from_generation_config(ck.generation_config),
        tokenizer=tokenizer_info,
        prompt_format=prompt_format,
    )
    (staging / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def export_package(model: str, output: Path | str, options: ExportOptions | None = None) -> Manifest:
    """Export MODEL (a Hugging Face directory, a fairseq BioGPT directory or a Hub id) to the
    package directory ``output``."""
    options = options or ExportOptions()
    output = Path(output).expanduser().absolute()
    _check_destination(output, options.force)
    if options.dtype not in DTYPES:
        raise PackageError(f"--dtype must be one of {', '.join(DTYPES)}; got {options.dtype!r}")
    if options.sampling.temperature <= 0:
        raise PackageError(f"--temperature must be > 0, got {options.sampling.temperature}")
    if not 0 < options.sampling.top_p <= 1:
        raise PackageError(f"--top-p must be in (0, 1], got {options.sampling.top_p}")
    started = time.perf_counter()
    with resolve_source(model, scratch_dir=output.parent, show_progress=options.show_progress) as source:
        return _export_checkpoint(model, open_checkpoint(source.directory, model), output, options, started)


def _export_checkpoint(model: str, ck: Checkpoint, output: Path, options: ExportOptions, started: float) -> Manifest:
    ck.source = model
    log.info(
        "exporting %s: %s, %d layers x %d hidden, %d heads, vocab %d",
        model, ck.dims.model_type, ck.dims.num_layers, ck.dims.hidden_size, ck.dims.num_heads, ck.dims.vocab_size,
    )
    staging = make_staging_dir(output)
    try:
        manifest = _write_package(ck, staging, options)
        _install(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(entry.bytes for entry in manifest.files.values())
    log.info("wrote %s (%.1f MB) in %.1fs; peak memory of this process %s", output, size / 1e6,
             time.perf_counter() - started, _peak_memory())
    return manifest


def _peak_memory() -> str:
    """This process's peak resident memory (what an export of a 7B checkpoint is judged by)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return "unknown"
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return f"{kilobytes / 2**20:.2f} GB"


__all__ = ["ExportOptions", "SamplingOptions", "export_package", "FileEntry"]
