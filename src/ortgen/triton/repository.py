"""``ortgen triton``: a package -> a Triton model repository, written atomically.

``--backend python`` (default): ortgen's step engine inside Triton.

    REPO/<NAME>/            python backend, decoupled: ortgen's Generator (cross-request batching,
      config.pbtxt            every setting exact, streaming through gRPC streams and generate_stream)
      1/model.py              copied from ortgen/triton/models/generator.py
      1/package/              a copy of the package (weights.bin once: every graph points at it)
    REPO/<NAME>_infer/      python backend, not decoupled: forwards to <NAME> (BLS) and answers with
                              its one final response, for HTTP /infer and gRPC ModelInfer, which
                              Triton refuses for decoupled models; holds no weights

``--backend onnxruntime``: the in-graph operators on Triton's onnxruntime backend, per strategy
(``--strategies``, default beam; the first is <NAME>, others <NAME>_<strategy>):

    REPO/<E>                ensemble: text_input + settings -> text_output (+ cum_log_probs)
    REPO/<E>_preprocessing  python backend: tokenizer, prompt format, settings -> the graph's tensors
    REPO/<E>_generator      onnxruntime backend: 1/model.onnx (generate_<strategy>.onnx) and
                              1/weights.bin, its external data (one copy per generator: ONNX Runtime
                              refuses external data behind a symlink or with several hard links)
    REPO/<E>_postprocessing python backend: sequences -> text

Plus README.md (starting it, clients, Kubernetes), k8s-deployment.yaml, k8s-service.yaml,
k8s-hpa.yaml, Dockerfile and ortgen-triton.json (what was written, from what) at the top level
(files there are ignored by Triton; a sub-directory would be taken for a model). Every config.pbtxt
is parsed with Triton's ModelConfig schema and every ensemble's wiring checked before the
repository is moved into place.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ortgen import __version__
from ortgen.errors import OrtgenError
from ortgen.package import Manifest, contract, open_package
from ortgen.runtime.settings import BEAM, GREEDY, SAMPLE
from ortgen.staging import atomic_directory
from ortgen.triton import readme
from ortgen.triton.config import (ConfigTensor, ModelConfigText, TritonConfigError, check_config, instance_group,
                                  onnx_tensors)
from ortgen.triton.ensemble import PROMPT_WIDTH, postprocessing_inputs, preprocessing_outputs
from ortgen.triton.tensors import CUM_LOG_PROBS, TEXT_OUTPUT, request_inputs, response_outputs

log = logging.getLogger(__name__)

BACKENDS = ("python", "onnxruntime")
INSTANCE_KINDS = ("cpu", "gpu")
STRATEGIES = (BEAM, GREEDY, SAMPLE)
MODELS_DIR = Path(__file__).resolve().parent / "models"
RECORD = "ortgen-triton.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PACKAGE_DIR = "package"  # inside a python model's version directory


@dataclass(frozen=True)
class RepositoryOptions:
    name: str
    backend: str = "python"
    instance_kind: str = "cpu"
    instances: int = 1
    threads: int | None = None  # ONNX Runtime intra-op threads (None: all cores)
    strategies: tuple[str, ...] = (BEAM,)  # onnxruntime backend: one ensemble each
    python_env: str | None = None  # EXECUTION_ENV_PATH of the python models (None: the server's python3)

    def check(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise OrtgenError(f"model name {self.name!r} is not usable: letters, digits, '_', '.', '-' only, "
                              "starting with a letter or digit")
        if self.backend not in BACKENDS:
            raise OrtgenError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise OrtgenError(f"unknown instance kind {self.instance_kind!r}; choose one of: "
                              f"{', '.join(INSTANCE_KINDS)}")
        if self.instances < 1:
            raise OrtgenError(f"--instances must be >= 1, got {self.instances}")
        if self.threads is not None and self.threads < 1:
            raise OrtgenError(f"--threads must be >= 1, got {self.threads}")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise OrtgenError(f"--strategies must name each of {', '.join(STRATEGIES)} at most once, got "
                              f"{','.join(self.strategies) or 'nothing'}")


@dataclass
class Repository:
    """What was written."""

    path: Path
    options: RepositoryOptions
    models: dict[str, str] = field(default_factory=dict)  # model name -> what it is
    ensembles: dict[str, str] = field(default_factory=dict)  # ensemble name -> strategy (onnxruntime)
    cloned: bool = True  # package files reflinked (copy-on-write clones); False: plain copies


# -- files --------------------------------------------------------------------------------------

class _Placer:
    """Copy a file into the repository: a reflink (copy-on-write clone sharing the blocks) where the
    filesystem has them (btrfs, XFS), a plain copy elsewhere. Never a hard link or a symlink: ONNX
    Runtime refuses external data with several hard links or behind a symlink ("potential hardlink
    attack", the ONNX checker), which would break the repository's graphs and the package's own."""

    def __init__(self) -> None:
        self.cloned = True

    def place(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _reflink(source, target):
            self.cloned = False
            shutil.copyfile(source, target)
        shutil.copymode(source, target)

    def tree(self, source: Path, target: Path, names: list[str] | None = None) -> None:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and (names is None or relative.parts[0] in names):
                self.place(path, target / relative)


FICLONE = 0x40049409  # ioctl: clone a whole file (Linux)


def _reflink(source: Path, target: Path) -> bool:
    try:
        import fcntl

        with open(source, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except (OSError, ImportError):
        target.unlink(missing_ok=True)
        return False


def _model_file(target: Path, source: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODELS_DIR / source, target)


def _write_config(root: Path, config: ModelConfigText, configs: dict[str, Any]) -> None:
    text = config.render()
    configs[config.name] = check_config(text, config.name)
    (root / config.name).mkdir(parents=True, exist_ok=True)
    (root / config.name / "config.pbtxt").write_text(text, encoding="utf-8")


def _python_parameters(options: RepositoryOptions, extra: dict[str, str]) -> dict[str, str]:
    parameters = {"ortgen_version": __version__, **extra}
    if options.python_env:
        parameters["EXECUTION_ENV_PATH"] = options.python_env
    return parameters


ENV_COMMENT = ("the Python environment with ortgen and numpy<2 (`ortgen triton-env DIR`); absent: the server's "
               "python3 on PATH")


# -- the python backend -------------------------------------------------------------------------

def _write_python(root: Path, package: Path, manifest: Manifest, options: RepositoryOptions, placer: _Placer,
                  configs: dict[str, Any], repo: Repository) -> None:
    name = options.name
    inputs = [ConfigTensor.of(t) for t in request_inputs()]
    outputs = [ConfigTensor.of(t) for t in response_outputs()]
    from ortgen.runtime.scheduler import SchedulerLimits

    limits = SchedulerLimits()
    params = {"threads": str(options.threads or 0), "max_running": str(limits.max_requests),
              "max_queue": str(limits.max_queue), "kv_budget_bytes": "0"}
    _write_config(root, ModelConfigText(
        name=name, backend="python", inputs=inputs, outputs=outputs,
        header=[f"{name}: ortgen's Generator (step engine, requests share decoder steps) on the package in 1/{PACKAGE_DIR}.",
                "Decoupled: streams with stream=true (gRPC streaming, /generate_stream); /generate and gRPC streams",
                f"without it get one final response. HTTP /infer and gRPC ModelInfer: use {name}_infer.",
                f"Written by ortgen {__version__} (`ortgen triton`)."],
        blocks=["model_transaction_policy { decoupled: true }", instance_group(options.instances, options.instance_kind)],
        parameters=_python_parameters(options, params),
        parameter_comments={"threads": "ONNX Runtime intra-op threads per instance (0: all cores)",
                            "max_running": "requests decoding at once (rows of the KV pool)",
                            "max_queue": "requests waiting for a place; more are refused (UNAVAILABLE)",
                            "kv_budget_bytes": "KV cache bytes for running requests (0: a quarter of the RAM, at "
                                               "most 4 GiB)",
                            "EXECUTION_ENV_PATH": ENV_COMMENT}), configs)
    _model_file(root / name / "1" / "model.py", "generator.py")
    placer.tree(package, root / name / "1" / PACKAGE_DIR)
    repo.models[name] = "python backend, decoupled: ortgen's Generator (streaming, every setting)"

    infer = f"{name}_infer"
    _write_config(root, ModelConfigText(
        name=infer, backend="python", inputs=inputs, outputs=outputs,
        header=[f"{infer}: {name} for HTTP /infer and gRPC ModelInfer (Triton refuses both for decoupled models).",
                f"Forwards each request to {name} (BLS) and returns its final response; holds no weights."],
        blocks=[instance_group(1, "cpu")],
        parameters=_python_parameters(options, {"target": name, "max_concurrency": "256"}),
        parameter_comments={"max_concurrency": "requests forwarded at once (threads)",
                            "EXECUTION_ENV_PATH": ENV_COMMENT}), configs)
    _model_file(root / infer / "1" / "model.py", "infer.py")
    repo.models[infer] = f"python backend: forwards to {name} for the infer endpoints (no streaming)"


# -- the onnxruntime backend --------------------------------------------------------------------

def _graph_for(strategy: str, manifest: Manifest) -> str:
    if strategy == BEAM:
        early = manifest.generation_defaults.get("early_stopping") is True
        key = contract.BEAM_EARLY_STOPPING if early else contract.BEAM
    else:
        key = {GREEDY: contract.GREEDY, SAMPLE: contract.SAMPLE}[strategy]
    if key not in manifest.graphs:
        have = [k for k in (contract.BEAM, contract.GREEDY, contract.SAMPLE) if k in manifest.graphs]
        raise OrtgenError(f"the package has no {key!r} graph ({contract.GRAPH_FILES[key]}) for --strategies "
                          f"{strategy}; it has: {', '.join(have) or 'none'}")
    return key


def _tensor_index(tensors: list[ConfigTensor]) -> dict[str, ConfigTensor]:
    return {t.name: t for t in tensors}


def _write_onnxruntime(root: Path, package: Path, manifest: Manifest, options: RepositoryOptions,
                       placer: _Placer, configs: dict[str, Any], repo: Repository) -> None:
    if manifest.tokenizer is None:
        raise OrtgenError("the package has no tokenizer: the ensemble takes text, so it needs one (export the model "
                          "with its tokenizer)")
    names = {s: options.name if i == 0 else f"{options.name}_{s}" for i, s in enumerate(options.strategies)}
    routes = json.dumps(names)
    client_inputs = [ConfigTensor.of(t) for t in request_inputs()]
    for strategy, ensemble in names.items():
        key = _graph_for(strategy, manifest)
        info = manifest.graphs[key]
        graph_path = package / info.file
        graph_inputs, graph_outputs = onnx_tensors(graph_path)
        for t in graph_inputs + graph_outputs:
            if not t.dims:
                raise TritonConfigError(f"{info.file}: {t.name} is a scalar; Triton needs at least one dimension")
        generator, pre, post = f"{ensemble}_generator", f"{ensemble}_preprocessing", f"{ensemble}_postprocessing"
        operator = info.operator or "?"

        # the generator: the ONNX model exactly as it is
        _write_config(root, ModelConfigText(
            name=generator, backend="onnxruntime", inputs=graph_inputs, outputs=graph_outputs,
            header=[f"{generator}: com.microsoft {operator} ({info.file} of the package) on Triton's onnxruntime backend.",
                    "Inputs and outputs exactly as the ONNX model declares them; max_batch_size 0 because its",
                    "settings are [1] tensors: one call runs one request (no dynamic batching across requests).",
                    "1/weights.bin holds the weights (external data of model.onnx, a regular file: ONNX Runtime",
                    "refuses external data behind a symlink or with several hard links)."],
            blocks=[instance_group(options.instances, options.instance_kind),
                    "# 0: the framework's default level, ORT_ENABLE_ALL, what ortgen's own sessions use "
                    "(-1: basic, 1: extended)",
                    "optimization { graph { level: 0 } }"],
            parameters={"intra_op_thread_count": str(options.threads or 0), "inter_op_thread_count": "1",
                        "execution_mode": "0"},
            parameter_comments={"intra_op_thread_count": "threads inside an operator (0: ONNX Runtime's default, "
                                                         "all cores)",
                                "execution_mode": "0: sequential (inter_op_thread_count unused)"}), configs)
        placer.place(graph_path, root / generator / "1" / "model.onnx")
        placer.place(package / manifest.weights_file, root / generator / "1" / manifest.weights_file)

        # preprocessing: client inputs -> the graph's inputs (+ what postprocessing needs)
        graph_in = _tensor_index(graph_inputs)
        extra = {PROMPT_WIDTH: ConfigTensor(PROMPT_WIDTH, "TYPE_INT32", (1,))}
        pre_outputs = [graph_in.get(n) or extra.get(n) or ConfigTensor(n, "TYPE_INT32", (1,))
                       for n in preprocessing_outputs(info)]
        small_package = [contract.MANIFEST_FILE, contract.TOKENIZER_DIR]
        _write_config(root, ModelConfigText(
            name=pre, backend="python", inputs=client_inputs, outputs=pre_outputs,
            header=[f"{pre}: text and TensorRT-LLM settings -> {info.file}'s inputs (the package's tokenizer and "
                    "prompt format,", "prompts left-padded with their own first token, as ortgen's graph runner "
                    "does)."],
            blocks=[instance_group(options.instances, "cpu")],
            parameters=_python_parameters(options, {"graph": key, "routes": routes}),
            parameter_comments={"graph": "which of the package's generation graphs the generator runs",
                                "routes": "strategy -> the ensemble that runs it (for error messages)",
                                "EXECUTION_ENV_PATH": ENV_COMMENT}), configs)
        _model_file(root / pre / "1" / "model.py", "preprocessing.py")
        placer.tree(package, root / pre / "1" / PACKAGE_DIR, small_package)

        # postprocessing: sequences -> text
        pre_index = _tensor_index(pre_outputs)
        graph_out = _tensor_index(graph_outputs)
        post_inputs = [graph_out.get(n) or pre_index[n] for n in postprocessing_inputs(info)]
        post_outputs = [ConfigTensor.of(t) for t in response_outputs()]
        if operator != "BeamSearch":
            post_outputs = [t for t in post_outputs if t.name != CUM_LOG_PROBS]
        _write_config(root, ModelConfigText(
            name=post, backend="python", inputs=post_inputs, outputs=post_outputs,
            header=[f"{post}: {operator}'s rows up to the first EOS after the prompt, decoded."],
            blocks=[instance_group(options.instances, "cpu")],
            parameters=_python_parameters(options, {"graph": key}),
            parameter_comments={"EXECUTION_ENV_PATH": ENV_COMMENT}), configs)
        _model_file(root / post / "1" / "model.py", "postprocessing.py")
        placer.tree(package, root / post / "1" / PACKAGE_DIR, small_package)

        # the ensemble
        steps = [
            _step(pre, {t.name: t.name for t in client_inputs}, {t.name: f"_{t.name}" for t in pre_outputs}),
            _step(generator, {t.name: f"_{t.name}" for t in graph_inputs}, {t.name: f"_{t.name}" for t in graph_outputs}),
            _step(post, {n: f"_{n}" for n in postprocessing_inputs(info)}, {t.name: t.name for t in post_outputs}),
        ]
        _write_config(root, ModelConfigText(
            name=ensemble, platform="ensemble", inputs=client_inputs, outputs=post_outputs,
            header=[f"{ensemble}: text in, texts out: {pre} -> {generator} ({operator}) -> {post}.",
                    f"Written by ortgen {__version__} (`ortgen triton --backend onnxruntime`)."],
            blocks=["ensemble_scheduling {", "  step [", ",\n".join(steps), "  ]", "}"]), configs)
        _check_ensemble(ensemble, configs)
        # an ensemble needs a version directory too (empty; the file keeps it in git and archives)
        (root / ensemble / "1").mkdir()
        (root / ensemble / "1" / ".gitkeep").write_text("", encoding="utf-8")
        repo.ensembles[ensemble] = strategy
        repo.models[ensemble] = f"ensemble ({operator}): text in, {TEXT_OUTPUT} out"
        repo.models[pre] = "python backend: tokenizer, prompt format, settings -> tensors"
        repo.models[generator] = f"onnxruntime backend: {info.file} (com.microsoft {operator})"
        repo.models[post] = "python backend: sequences -> text"


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    lines = ["    {", f"      model_name: {json.dumps(model)}", "      model_version: -1"]
    lines += [f"      input_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in inputs.items()]
    lines += [f"      output_map {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in outputs.items()]
    lines.append("    }")
    return "\n".join(lines)


def _compatible(a: Any, b: Any) -> bool:
    return a.data_type == b.data_type and len(a.dims) == len(b.dims) and all(
        x == y or -1 in (x, y) for x, y in zip(a.dims, b.dims))


def _check_ensemble(name: str, configs: dict[str, Any]) -> None:
    """Every step's inputs come from the ensemble's inputs or an earlier step's outputs, with the same
    data type and compatible dims; every ensemble output is produced; every required input is fed.
    (Triton checks this when it loads the ensemble; the onnxruntime backend cannot be loaded here.)"""
    ensemble = configs[name]
    produced = {t.name: t for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            raise TritonConfigError(f"ensemble {name}: step {step.model_name} has no config")
        model_inputs = {t.name: t for t in model.input}
        missing = [t.name for t in model.input if not t.optional and t.name not in step.input_map]
        if missing:
            raise TritonConfigError(f"ensemble {name}: {step.model_name} needs {', '.join(missing)}, not mapped")
        for key, source in step.input_map.items():
            if key not in model_inputs or source not in produced:
                raise TritonConfigError(f"ensemble {name}: {step.model_name} input {key} <- {source}: unknown name")
            if not _compatible(produced[source], model_inputs[key]):
                raise TritonConfigError(f"ensemble {name}: {step.model_name} input {key} does not match {source}")
        model_outputs = {t.name: t for t in model.output}
        for key, target in step.output_map.items():
            if key not in model_outputs:
                raise TritonConfigError(f"ensemble {name}: {step.model_name} has no output {key}")
            produced[target] = model_outputs[key]
    for output in ensemble.output:
        if output.name not in produced or not _compatible(produced[output.name], output):
            raise TritonConfigError(f"ensemble {name}: output {output.name} is not produced as declared")


# -- the whole repository -----------------------------------------------------------------------

def write_repository(package: Path, output: Path, options: RepositoryOptions, *, replace: bool = False
                     ) -> Repository:
    """Write the repository for ``package`` at ``output`` (see the module docstring). Nothing is left
    behind on failure; an existing ``output`` is replaced only with ``replace`` and only when it is
    a repository this command wrote."""
    options.check()
    package = Path(package)
    manifest = open_package(package)
    output = Path(output).absolute()
    if output.exists() and replace and not (output / RECORD).is_file():
        raise OrtgenError(f"{output} exists and is not a repository written by `ortgen triton` (no {RECORD}); it is "
                          "never replaced: choose another directory")
    if options.backend == "onnxruntime" and manifest.dtype == "float16" and options.instance_kind != "gpu":
        raise OrtgenError("the package is float16, and ONNX Runtime runs BeamSearch / GreedySearch / Sampling on "
                          "float16 models on the CUDA provider only: write --instance-kind gpu, --backend python (the "
                          "step engine runs float16 on the CPU too), or export the model with --dtype float32")
    if options.backend == "python" and contract.DECODER_ENGINE not in manifest.graphs:
        raise OrtgenError("the package has no step-engine graph (decoder_engine.onnx): it was exported by an older "
                          "ortgen; re-export it, or write --backend onnxruntime")
    with atomic_directory(output, replace=replace) as root:
        repo = Repository(output, options)
        placer = _Placer()
        configs: dict[str, Any] = {}
        if options.backend == "python":
            _write_python(root, package, manifest, options, placer, configs, repo)
        else:
            _write_onnxruntime(root, package, manifest, options, placer, configs, repo)
        repo.cloned = placer.cloned
        for filename, text in readme.files(repo, manifest).items():
            (root / filename).write_text(text, encoding="utf-8")
        record = {"ortgen_version": __version__, "package": str(package.resolve()),
                  "source": manifest.source, "options": asdict(options), "models": repo.models,
                  "weights": "reflinked copies" if repo.cloned else "copies"}
        (root / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return repo
