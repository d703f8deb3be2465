"""The systems a benchmark compares, each behind the same small interface.

``setup`` loads (not timed), ``run`` generates a workload's fixed number of tokens for its
prompts (timed), ``teardown`` frees memory. Every system receives the same token ids and
settings: num_beams, max_new_tokens = min_new_tokens (fixed length), no sampling. Each takes
a ``device`` ("cpu" or "cuda"): a GPU run of the suite adds rows, it is not another tool.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any, Protocol

from ortgen.bench.workloads import Workload


class System(Protocol):
    name: str  # e.g. "ortgen engine int8"
    dtype: str
    last_profile: dict[str, float] | None  # the step engine's last run: decoder steps and seconds inside them

    def spec(self) -> dict[str, Any]: ...  # rebuilds the system in another process (system_from_spec)

    def prepare_imports(self) -> None: ...  # import the libraries (memory baselines exclude them)

    def setup(self) -> None: ...

    def run(self, workload: Workload, prompts: list[list[int]]) -> None: ...

    def teardown(self) -> None: ...


def short_dtype(dtype: str) -> str:
    """float32 -> fp32, float16 -> fp16; int8 / int4 unchanged (how the tables name precisions)."""
    return {"float32": "fp32", "float16": "fp16"}.get(dtype, dtype)


def baseline_dtype(weights: str) -> str:
    """The precision transformers runs in as the baseline of a package of ``weights``: float16 for
    float16 (same precision, what a GPU user would otherwise run), float32 for everything else."""
    return "float16" if weights == "float16" else "float32"


class TransformersSystem:
    """transformers' generate() in ``dtype`` (float32 or float16) on ``device``, all cores."""

    last_profile = None

    def __init__(self, model_dir: Path, pad_token_id: int, eos_token_id: int, device: str = "cpu",
                 dtype: str = "float32") -> None:
        self.model_dir, self.pad, self.eos, self.device = model_dir, pad_token_id, eos_token_id, device
        self.dtype = dtype
        self.name = f"transformers {short_dtype(dtype)}"
        self.model = None

    def spec(self) -> dict[str, Any]:
        return {"kind": "transformers", "model_dir": str(self.model_dir), "pad_token_id": self.pad,
                "eos_token_id": self.eos, "device": self.device, "dtype": self.dtype}

    def prepare_imports(self) -> None:
        import torch  # noqa: F401
        import transformers  # noqa: F401

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(os.cpu_count() or 1)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype)
                                                          ).eval().to(self.device)

    def run(self, workload: Workload, prompts: list[list[int]]) -> None:
        import torch

        ids = torch.tensor(prompts, dtype=torch.long, device=self.device)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      num_beams=workload.num_beams, max_new_tokens=workload.new_tokens,
                                      min_new_tokens=workload.new_tokens, length_penalty=1.0, early_stopping=False,
                                      pad_token_id=self.pad, eos_token_id=self.eos)
            if self.device == "cuda":
                torch.cuda.synchronize()
        assert out.shape[1] == workload.prompt_tokens + workload.new_tokens

    def teardown(self) -> None:
        self.model = None
        gc.collect()


class OrtgenSystem:
    """An ortgen package on one backend: "graph" (in-graph operators) or "engine" (step engine)."""

    def __init__(self, package_dir: Path, backend: str, device: str = "cpu") -> None:
        from ortgen.package.manifest import Manifest

        self.package_dir, self.backend, self.device = package_dir, backend, device
        self.dtype = Manifest.load(package_dir).weights_dtype
        label = {"graph": "in-graph op", "engine": "step engine"}[backend]
        self.name = f"ortgen {label} {short_dtype(self.dtype)}"
        self.generator = None
        self.last_profile: dict[str, float] | None = None

    def spec(self) -> dict[str, Any]:
        return {"kind": "ortgen", "package_dir": str(self.package_dir), "backend": self.backend, "device": self.device}

    def prepare_imports(self) -> None:
        import ortgen.runtime.generator  # noqa: F401

    def setup(self) -> None:
        from ortgen.runtime.generator import Generator

        # one graph loaded at a time (each holds its own pre-packed weights); the untimed warm-up run
        # of each workload loads the graph it needs
        self.generator = Generator.load(self.package_dir, providers=self.device, max_sessions=1)

    def run(self, workload: Workload, prompts: list[list[int]]) -> None:
        stats = self.generator.scheduler.stats if self.backend == "engine" else None
        before = (stats.steps, stats.step_seconds) if stats else (0, 0.0)
        result = self.generator.generate(input_ids=prompts, num_beams=workload.num_beams,
                                         max_new_tokens=workload.new_tokens, min_new_tokens=workload.new_tokens,
                                         backend=self.backend)
        assert all(len(s.token_ids) == workload.new_tokens for g in result.sequences for s in g)
        if stats is not None:  # where a step's time goes: inside ONNX Runtime's run, or on the host around it
            self.last_profile = {"steps": stats.steps - before[0], "decoder_seconds": stats.step_seconds - before[1]}

    def teardown(self) -> None:
        self.generator = None
        gc.collect()


class CTranslate2System:
    """CTranslate2's Generator on a converted copy of the model (GPT-2 / OPT only: it has no BioGPT)."""

    last_profile = None

    def __init__(self, ct2_dir: Path, compute_type: str, device: str = "cpu") -> None:
        self.ct2_dir, self.compute_type, self.device = ct2_dir, compute_type, device
        self.dtype = "int8" if compute_type.startswith("int8") else "float32"
        self.name = f"CTranslate2 {'fp32' if self.dtype == 'float32' else 'int8'}"
        self.generator = None
        self.tokens: list[str] = []

    def spec(self) -> dict[str, Any]:
        return {"kind": "ctranslate2", "ct2_dir": str(self.ct2_dir), "compute_type": self.compute_type,
                "device": self.device}

    def prepare_imports(self) -> None:
        import ctranslate2  # noqa: F401

    def setup(self) -> None:
        import ctranslate2

        self.generator = ctranslate2.Generator(str(self.ct2_dir), device=self.device, compute_type=self.compute_type,
                                               intra_threads=os.cpu_count() or 1)
        vocab_file = next((self.ct2_dir / name for name in ("vocabulary.json", "vocabulary.txt")
                           if (self.ct2_dir / name).is_file()))
        if vocab_file.suffix == ".json":
            self.tokens = json.loads(vocab_file.read_text(encoding="utf-8"))
        else:
            self.tokens = vocab_file.read_text(encoding="utf-8").split("\n")

    def run(self, workload: Workload, prompts: list[list[int]]) -> None:
        batch = [[self.tokens[i] for i in prompt] for prompt in prompts]
        results = self.generator.generate_batch(batch, beam_size=workload.num_beams, max_length=workload.new_tokens,
                                                min_length=workload.new_tokens, include_prompt_in_result=False)
        assert all(len(r.sequences_ids[0]) == workload.new_tokens for r in results)

    def teardown(self) -> None:
        self.generator = None
        gc.collect()


def system_from_spec(spec: dict[str, Any]) -> System:
    """The system a ``spec()`` describes (for measurements in another process)."""
    kind = spec["kind"]
    if kind == "transformers":
        return TransformersSystem(Path(spec["model_dir"]), spec["pad_token_id"], spec["eos_token_id"], spec["device"],
                                  spec.get("dtype", "float32"))
    if kind == "ortgen":
        return OrtgenSystem(Path(spec["package_dir"]), spec["backend"], spec["device"])
    if kind == "ctranslate2":
        return CTranslate2System(Path(spec["ct2_dir"]), spec["compute_type"], spec["device"])
    raise ValueError(f"unknown system kind {kind!r}")
