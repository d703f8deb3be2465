"""Fixtures for the Triton tests: the server's environment, repositories written by ``ortgen triton``
for the demo BioGPT package, and real Triton servers on loopback (one per repository and module).

The environment (Triton 2.51 from the nvidia-pytriton wheel, numpy<2, onnxruntime, ortgen linked to
this checkout) is built by ``ortgen.triton.env.ensure_env`` under ``.triton-env/`` at the repository
root (``ORTGEN_TRITON_ENV`` overrides) and reused by later runs; when it cannot be installed (no
package index, unsupported Python) the server tests are skipped with pip's reason. Servers are
stopped, their process groups killed and their shared memory removed however a test ends.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ortgen.runtime.generator import Generator
from ortgen.triton.tensors import to_options

ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = Path(os.environ.get("ORTGEN_TRITON_ENV", ROOT / ".triton-env"))
STANDIN = Path(__file__).with_name("standin_generator.py")
NAME = "biogpt"


def _import_clients():
    try:
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401  (both clients are used by the tests)
    except ImportError:
        pytest.skip("needs tritonclient: pip install -e '.[dev]' (or '.[triton]')")


@pytest.fixture(scope="session")
def triton_env():
    """The server environment; skips the tests that need it when it cannot be built."""
    from ortgen.triton.env import TritonEnvError, ensure_env

    _import_clients()
    try:
        return ensure_env(ENV_DIR, link=True)
    except TritonEnvError as exc:
        pytest.skip(f"the Triton environment could not be built at {ENV_DIR}: {exc}")


@pytest.fixture(scope="session")
def generator(demo_package):
    with Generator.load(demo_package) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def python_repo(demo_package, tmp_path_factory) -> Path:
    from ortgen.triton.repository import RepositoryOptions, write_repository

    out = tmp_path_factory.mktemp("triton") / "python-repo"
    write_repository(demo_package, out, RepositoryOptions(name=NAME, backend="python", threads=1))
    return out


def install_standins(repo: Path) -> list[str]:
    """Every onnxruntime-backend generator of ``repo`` -> the python stand-in (same I/O, same ONNX file)."""
    swapped = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        text = config.read_text()
        if 'backend: "onnxruntime"' not in text:
            continue
        lines = [line for line in text.splitlines() if not line.startswith(("optimization", "parameters", "# 0:"))]
        config.write_text("\n".join(lines).replace('backend: "onnxruntime"', 'backend: "python"') + "\n")
        shutil.copyfile(STANDIN, config.parent / "1" / "model.py")
        swapped.append(config.parent.name)
    return swapped


@pytest.fixture(scope="session")
def onnxruntime_repo(demo_package, tmp_path_factory, triton_env) -> Path:
    """The --backend onnxruntime repository (beam, greedy, sample ensembles) as written, its python
    models pointed at the environment through EXECUTION_ENV_PATH, generators swapped for stand-ins."""
    from ortgen.triton.repository import RepositoryOptions, write_repository

    out = tmp_path_factory.mktemp("triton") / "onnxruntime-repo"
    write_repository(demo_package, out, RepositoryOptions(name=NAME, backend="onnxruntime",
                                                          strategies=("beam", "greedy", "sample"),
                                                          python_env=str(triton_env.path)))
    served = out.with_name("onnxruntime-repo-served")
    shutil.copytree(out, served)
    assert install_standins(served) == [f"{NAME}_generator", f"{NAME}_greedy_generator", f"{NAME}_sample_generator"]
    return served


# -- clients ---------------------------------------------------------------------------------------

def tensor(module, name: str, value) -> object:
    from tritonclient.utils import np_to_triton_dtype

    value = np.asarray(value)
    t = module.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    t.set_data_from_numpy(value)
    return t


TYPES = {"max_tokens": np.int32, "beam_width": np.int32, "num_return_sequences": np.int32, "top_k": np.int32,
         "min_length": np.int32, "no_repeat_ngram_size": np.int32, "temperature": np.float32, "top_p": np.float32,
         "length_penalty": np.float32, "repetition_penalty": np.float32, "random_seed": np.uint64,
         "stream": np.bool_, "return_log_probs": np.bool_, "early_stopping": np.bool_}


def infer_inputs(module, prompts: list[str], settings: dict) -> list:
    """Inputs as TensorRT-LLM clients send them: [prompts, 1] text, [1, 1] settings."""
    inputs = [tensor(module, "text_input", np.array([[p] for p in prompts], dtype=object))]
    for key, value in settings.items():
        if key == "stop_words":
            inputs.append(tensor(module, key, np.array([value], dtype=object)))
        else:
            inputs.append(tensor(module, key, np.array([[value]], dtype=TYPES[key])))
    return inputs


def texts(result) -> list[list[str]]:
    return [[t.decode() for t in row] for row in result.as_numpy("text_output")]


def reference(generator: Generator, prompts: list[str], settings: dict, **extra) -> list[list[str]]:
    """What ortgen's Generator gives for the same TensorRT-LLM settings."""
    return generator.generate(prompts, **to_options(settings), **extra).texts
