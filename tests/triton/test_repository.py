"""``ortgen triton`` without a server: what it writes, checked against Triton's schema and the ONNX
files; nothing half-written on failure; the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient: pip install -e '.[dev]' (or '.[triton]')")

from ortgen.cli import main  # noqa: E402
from ortgen.errors import OrtgenError  # noqa: E402
from ortgen.triton.config import ONNX_TYPES, check_config  # noqa: E402
from ortgen.triton.repository import RECORD, RepositoryOptions, write_repository  # noqa: E402


def _configs(repo):
    return {p.parent.name: check_config(p.read_text(), p.parent.name) for p in repo.glob("*/config.pbtxt")}


@pytest.fixture(scope="module")
def ort_repo(demo_package, tmp_path_factory):
    out = tmp_path_factory.mktemp("repos") / "ort"
    write_repository(demo_package, out, RepositoryOptions(name="bio", backend="onnxruntime", instances=2, threads=3,
                                                          strategies=("beam", "greedy", "sample")))
    return out


def test_every_config_parses_and_names_its_directory(ort_repo, python_repo):
    assert sorted(_configs(ort_repo)) == sorted(
        f"bio{s}{part}" for s in ("", "_greedy", "_sample") for part in ("", "_preprocessing", "_generator",
                                                                         "_postprocessing"))
    assert sorted(_configs(python_repo)) == ["biogpt", "biogpt_infer"]


def test_each_generator_declares_exactly_the_onnx_models_inputs_and_outputs(ort_repo):
    configs = _configs(ort_repo)
    for name in ("bio_generator", "bio_greedy_generator", "bio_sample_generator"):
        model = onnx.load(str(ort_repo / name / "1" / "model.onnx"), load_external_data=False)
        config = configs[name]
        for declared, actual in ((config.input, model.graph.input), (config.output, model.graph.output)):
            assert [t.name for t in declared] == [v.name for v in actual]
            for t, v in zip(declared, actual):
                from tritonclient.grpc import model_config_pb2

                assert model_config_pb2.DataType.Name(t.data_type) == ONNX_TYPES[v.type.tensor_type.elem_type]
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                assert list(t.dims) == dims, (name, t.name)
        assert config.backend == "onnxruntime" and config.max_batch_size == 0
        assert config.instance_group[0].count == 2
        assert config.parameters["intra_op_thread_count"].string_value == "3"
        assert config.optimization.graph.level == 0


def test_generator_directories_hold_regular_weight_files(ort_repo, demo_package):
    """ONNX Runtime refuses external data that is a symlink or has several hard links."""
    for name in ("bio_generator", "bio_greedy_generator", "bio_sample_generator"):
        weights = ort_repo / name / "1" / "weights.bin"
        assert weights.is_file() and not weights.is_symlink() and os.stat(weights).st_nlink == 1
        assert weights.read_bytes() == (demo_package / "weights.bin").read_bytes()
    assert os.stat(demo_package / "weights.bin").st_nlink == 1


def test_the_generator_directory_runs_in_onnxruntime(ort_repo, generator):
    """model.onnx + weights.bin as written load and generate what the package's graph does."""
    import onnxruntime as ort

    from ortgen.triton.ensemble import Postprocessor, Preprocessor

    session = ort.InferenceSession(str(ort_repo / "bio_generator" / "1" / "model.onnx"))
    pre, post = Preprocessor(generator, "beam"), Postprocessor(generator, "beam")
    feeds = pre({"text_input": np.array([[b"Aspirin is"], [b"The cell"]], dtype=object),
                 "beam_width": np.array([[3]], dtype=np.int32), "max_tokens": np.array([[7]], dtype=np.int32)})
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))
    result = post({**outputs, **feeds})
    expected = generator.generate(["Aspirin is", "The cell"], num_beams=3, max_new_tokens=7, backend="graph").texts
    assert [[t.decode() for t in row] for row in result["text_output"]] == expected


def test_ensembles_wire_the_steps(ort_repo):
    configs = _configs(ort_repo)
    steps = [s.model_name for s in configs["bio_sample"].ensemble_scheduling.step]
    assert steps == ["bio_sample_preprocessing", "bio_sample_generator", "bio_sample_postprocessing"]
    assert [o.name for o in configs["bio"].output] == ["text_output", "cum_log_probs"]
    assert [o.name for o in configs["bio_greedy"].output] == ["text_output"]  # GreedySearch returns no scores
    assert (ort_repo / "bio" / "1").is_dir()
    pre = configs["bio_preprocessing"]
    assert json.loads(pre.parameters["routes"].string_value) == {"beam": "bio", "greedy": "bio_greedy",
                                                                 "sample": "bio_sample"}


def test_python_repository(python_repo, demo_package):
    configs = _configs(python_repo)
    model = configs["biogpt"]
    assert model.model_transaction_policy.decoupled and model.backend == "python"
    assert not configs["biogpt_infer"].model_transaction_policy.decoupled
    names = [t.name for t in model.input]
    for name in ("text_input", "max_tokens", "beam_width", "num_return_sequences", "temperature", "top_k", "top_p",
                 "length_penalty", "repetition_penalty", "min_length", "random_seed", "stop_words", "stream"):
        assert name in names
    assert [t.name for t in model.input if not t.optional] == ["text_input"]
    package = python_repo / "biogpt" / "1" / "package"
    assert sorted(p.name for p in package.iterdir()) == sorted(p.name for p in demo_package.iterdir())
    for top in ("README.md", "Dockerfile", "k8s-deployment.yaml", "k8s-service.yaml", "k8s-hpa.yaml", RECORD):
        assert (python_repo / top).is_file()
    assert not [p for p in python_repo.iterdir() if p.is_dir() and not (p / "config.pbtxt").is_file()], \
        "Triton takes every directory for a model"
    readme = (python_repo / "README.md").read_text()
    assert "/v2/health/ready" in readme and "biogpt_infer" in readme and "ortgen_requests_waiting" in readme
    deployment = (python_repo / "k8s-deployment.yaml").read_text()
    assert "readinessProbe" in deployment and "/v2/health/ready" in deployment


def test_the_readme_of_an_onnxruntime_repository_says_where_the_operators_differ(ort_repo):
    readme = (ort_repo / "README.md").read_text()
    assert "normalised by another length" in readme and "One beam is not greedy search" in readme
    assert "nv_inference_queue_duration_us" in readme and "nv_inference_queue_duration_us" in (
        ort_repo / "k8s-hpa.yaml").read_text()


def test_failure_leaves_nothing(demo_package, tmp_path):
    out = tmp_path / "repo"
    (tmp_path / "bad-package").mkdir()
    with pytest.raises(OrtgenError):
        write_repository(tmp_path / "bad-package", out, RepositoryOptions(name="m"))
    with pytest.raises(OrtgenError, match="model name"):
        write_repository(demo_package, out, RepositoryOptions(name="../x"))
    with pytest.raises(OrtgenError, match="--strategies"):
        write_repository(demo_package, out, RepositoryOptions(name="m", backend="onnxruntime",
                                                              strategies=("beam", "nucleus")))
    assert list(tmp_path.iterdir()) == [tmp_path / "bad-package"]


def test_an_existing_directory_is_replaced_only_when_it_is_a_repository(demo_package, tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(OrtgenError, match="already exists"):
        write_repository(demo_package, out, RepositoryOptions(name="m"))
    with pytest.raises(OrtgenError, match="never replaced"):
        write_repository(demo_package, out, RepositoryOptions(name="m"), replace=True)
    assert (out / "precious.txt").read_text() == "keep"
    write_repository(demo_package, tmp_path / "ours", RepositoryOptions(name="m"))
    write_repository(demo_package, tmp_path / "ours", RepositoryOptions(name="n"), replace=True)
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if p.is_dir()) == ["n", "n_infer"]


def test_cli(demo_package, tmp_path, capsys):
    assert main(["triton", str(demo_package), "-o", str(tmp_path / "r"), "--backend", "onnxruntime",
                 "--strategies", "sample", "--instance-kind", "gpu", "--python-env", "/opt/env"]) == 0
    out = capsys.readouterr().out
    assert "demo-biogpt_generator" in out and "README.md" in out
    config = check_config((tmp_path / "r" / "demo-biogpt_preprocessing" / "config.pbtxt").read_text(),
                          "demo-biogpt_preprocessing")
    assert config.parameters["EXECUTION_ENV_PATH"].string_value == "/opt/env"
    generator = check_config((tmp_path / "r" / "demo-biogpt_generator" / "config.pbtxt").read_text(),
                             "demo-biogpt_generator")
    from tritonclient.grpc import model_config_pb2

    assert generator.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert main(["triton", str(demo_package), "-o", str(tmp_path / "r")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["triton", str(demo_package), "-o", str(tmp_path / "p"), "--strategies", "sample"]) == 1
    assert "--strategies applies to --backend onnxruntime" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_float16_package_gets_operators_only_on_gpu_instances(zoo, tmp_path):
    """ONNX Runtime's CPU kernels of the generation operators take float32 models only."""
    package = zoo.trained_package("biogpt", "float16")
    with pytest.raises(OrtgenError, match="float16 .* CUDA provider only: write --instance-kind gpu"):
        write_repository(package, tmp_path / "cpu", RepositoryOptions(name="m", backend="onnxruntime"))
    assert not (tmp_path / "cpu").exists()
    write_repository(package, tmp_path / "gpu", RepositoryOptions(name="m", backend="onnxruntime", instance_kind="gpu"))
    assert "KIND_GPU" in (tmp_path / "gpu" / "m_generator" / "config.pbtxt").read_text()
    write_repository(package, tmp_path / "python", RepositoryOptions(name="m"))  # the step engine runs it anywhere
    assert "KIND_CPU" in (tmp_path / "python" / "m" / "config.pbtxt").read_text()
