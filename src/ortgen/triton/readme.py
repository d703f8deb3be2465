"""The files beside the models: README.md, Kubernetes manifests, a Dockerfile.

Written for the repository at hand (its model names, its backend, the package's defaults), so the
commands in them work as printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ortgen import __version__
from ortgen.package import Manifest
from ortgen.serve.trtllm import SETTINGS
from ortgen.triton.tensors import EXTRA_INPUTS

if TYPE_CHECKING:
    from ortgen.triton.repository import Repository

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the server ortgen's tests run


def files(repo: "Repository", manifest: Manifest) -> dict[str, str]:
    return {"README.md": _readme(repo, manifest), "Dockerfile": _dockerfile(repo),
            "k8s-deployment.yaml": _deployment(repo), "k8s-service.yaml": _service(repo),
            "k8s-hpa.yaml": _hpa(repo)}


def _app(repo: "Repository") -> str:
    return f"{repo.options.name.lower().replace('_', '-').replace('.', '-')}-triton"


def _defaults(manifest: Manifest) -> str:
    values = manifest.generation_defaults.values
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) if values else "none (ortgen's own: 32 new tokens, greedy)"


def _readme(repo: "Repository", manifest: Manifest) -> str:
    o = repo.options
    name = o.name
    python = o.backend == "python"
    infer_model = f"{name}_infer" if python else name
    models = "\n".join(f"| `{m}` | {what} |" for m, what in repo.models.items())
    inputs = "\n".join(f"| `{n}` | {d} | {doc} |" for n, (d, doc) in {**SETTINGS, **EXTRA_INPUTS}.items())
    source = manifest.source.get("model") or manifest.source.get("directory") or "?"
    weights = ("copy-on-write clones of the package's files (reflinks: no extra disk)" if repo.cloned
               else "copies of the package's files")
    sections = [f"""# `{name}`: a Triton model repository written by ortgen {__version__}

From the ortgen package of `{source}` ({manifest.architecture.model_type}, {manifest.architecture.parameters:,}
parameters), `ortgen triton --backend {o.backend}`. Weights: {weights}.

| model | what it is |
|---|---|
{models}

Every `config.pbtxt` was parsed with Triton's `ModelConfig` schema when it was written.
{_backend_notes(repo)}
## Start Triton with it

### With the Triton container (GPU or CPU host)

The python-backend models import ortgen (and numpy<2: Triton 2.51's stub mishandles BYTES tensors
with numpy 2). `Dockerfile` here builds an image with both on top of `{TRITON_IMAGE}` and this
directory as `/models`:

```bash
pip wheel --no-deps /path/to/ortgen -w .      # ortgen-{__version__}-py3-none-any.whl beside the Dockerfile
docker build -t {_app(repo)} .
docker run --rm {'--gpus all ' if o.instance_kind == 'gpu' else ''}-p 8000:8000 -p 8001:8001 -p 8002:8002 {_app(repo)}
```

{_gpu_note(repo)}

### Without Docker (Triton's python backend only)

```bash
ortgen triton-env ~/ortgen-triton-env    # a venv: Triton 2.51 (nvidia-pytriton wheel), numpy<2, onnxruntime, ortgen
~/ortgen-triton-env/bin/ortgen-tritonserver --model-repository=$PWD --http-port 8000 --grpc-port 8001
```

The launcher sets the wheel's backend directory, its libraries and libpython, and puts the venv
first on PATH (the python backend's stub finds its packages through `python3` on PATH). Or name the
environment in each python model's config: write the repository with `--python-env DIR`
(`EXECUTION_ENV_PATH`). The wheel has no onnxruntime backend: the `--backend onnxruntime`
repository's generators need the container.

Ready when `curl -sf localhost:8000/v2/health/ready` succeeds.

## Clients

Inputs use TensorRT-LLM's ensemble names, shaped `[1, 1]` per prompt as its clients send them
(`text_input` `[prompts, 1]`; a setting `[1, 1]` applies to every prompt, `[prompts, 1]` gives each
its own); `text_output` is `[prompts, sequences]`. Unset settings take the package's generation
defaults: {_defaults(manifest)}.

| input | datatype | what |
|---|---|---|
| `text_input` | BYTES | the prompt (required) |
{inputs}

Outputs: `text_output` (BYTES), and `cum_log_probs` (FP32, summed log-probabilities{' with return_log_probs=true' if python else ', BeamSearch ensembles'}).

```bash
# the generate extension
curl -s localhost:8000/v2/models/{name}/generate \\
  -d '{{"text_input": "Aspirin is", "max_tokens": 20, "beam_width": 4, "num_return_sequences": 2}}'
# HTTP /infer
curl -s localhost:8000/v2/models/{infer_model}/infer -d '{{"inputs": [
  {{"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": ["Aspirin is"]}},
  {{"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [20]}}]}}'
```
{_stream_example(repo)}
```python
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

def tensor(module, name, value):
    value = np.asarray(value)
    t = module.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
    t.set_data_from_numpy(value)
    return t

client = httpclient.InferenceServerClient("localhost:8000")
inputs = [tensor(httpclient, "text_input", np.array([["Aspirin is"], ["The cell"]], dtype=object)),
          tensor(httpclient, "max_tokens", np.array([[20]], dtype=np.int32)),
          tensor(httpclient, "beam_width", np.array([[4]], dtype=np.int32))]
result = client.infer("{infer_model}", inputs)
print(result.as_numpy("text_output"))      # [[b'...'], [b'...']]
```
{_grpc_example(repo)}
Errors (an empty prompt, settings that cannot work, a prompt over the model's {manifest.architecture.max_positions}
positions) come back as Triton errors with the reason; the server carries on.

## Kubernetes

`k8s-deployment.yaml` (the image above; readiness on `/v2/health/ready`, liveness on
`/v2/health/live`), `k8s-service.yaml` (HTTP 8000, gRPC 8001, metrics 8002) and `k8s-hpa.yaml`:

```bash
kubectl apply -f k8s-deployment.yaml -f k8s-service.yaml
kubectl apply -f k8s-hpa.yaml     # needs a metrics adapter: see the file
```

Each replica is one Triton server; the Service spreads requests over the ready ones. {_autoscaling(repo)}
"""]
    return "\n".join(sections)


def _backend_notes(repo: "Repository") -> str:
    o = repo.options
    name = o.name
    if o.backend == "python":
        return f"""
`{name}` runs ortgen's step engine: every request (and every prompt of a request) is a request of
one Generator, and all running requests share each decoder step (continuous batching across
`execute()` calls), so concurrency needs no more instances: more instances mean more copies of the
weights and separate batches. Every transformers generation setting is exact (beam search with any
length_penalty, top-k, stop words, no_repeat_ngram_size, bad_words). `{name}` is decoupled so it can
stream; Triton 2.51 refuses decoupled models on HTTP `/infer` and gRPC `ModelInfer`, hence
`{name}_infer`, which forwards to it. Its scheduler's state is on Triton's `/metrics` as
`ortgen_requests_running` and `ortgen_requests_waiting`.

Model parameters in `{name}/config.pbtxt` you may edit: `threads` (ONNX Runtime threads, 0: all
cores), `max_running` (requests decoding at once, default 64), `max_queue` (requests waiting, default
1024; more are refused with UNAVAILABLE), `kv_budget_bytes` (0, the default: a quarter of the RAM, at most
4 GiB). A request the model cannot run as sent (a missing `text_input`, `beam_width` beyond the limits,
`max_tokens` below 1) is answered with INVALID_ARGUMENT (HTTP 400), on `{name}` and `{name}_infer` alike.
"""
    lines = ["", "Ensembles (a Triton ensemble is a fixed pipeline, so each strategy has its own):", ""]
    for ensemble, strategy in repo.ensembles.items():
        lines.append(f"- `{ensemble}`: {_strategy_text(strategy)}")
    lines += ["", """No Python in the generation itself: the generator runs ONNX Runtime's operator on Triton's
onnxruntime backend, one operator call per request (its settings are `[1]` tensors, so requests
cannot be batched together; all prompts of one request share one set of settings). For concurrency
raise `--instances` (each instance holds its own copy of the weights in memory). Each generator
model also holds its own copy in memory, and its directory its own `weights.bin`: ONNX Runtime
refuses external data behind a symlink or with several hard links, so the files cannot be shared
(on btrfs or XFS they are reflinked: no extra disk). Requests the operators cannot run are refused with the reason; the
`--backend python` repository (ortgen's step engine inside Triton) runs them, and streams.

### Where the ONNX Runtime operators differ from transformers

(ortgen's docs/ort-vs-transformers.md has the tests that show each.)

- **Beam scores are normalised by another length**: ONNX Runtime divides a hypothesis' summed
  log-probability by `(prompt + generated) ** length_penalty`, transformers by
  `(generated + EOS) ** length_penalty`. With `length_penalty != 0` and beams that end with EOS at
  different steps, the operator can pick other beams than transformers. `length_penalty = 0`, or no
  EOS before `max_tokens`, gives the same beams. `cum_log_probs` is the unnormalised sum (the
  search's log-probabilities after the repetition penalty, EOS included).
- **One beam is not greedy search**: with `beam_width = 1` the BeamSearch ensemble runs beam search
  with one beam, which applies `repetition_penalty` to log-probabilities where greedy search applies
  it to logits: with `repetition_penalty != 1` the tokens can differ from greedy search."""]
    if GREEDY_STRATEGY in repo.ensembles.values():
        greedy = next(e for e, s in repo.ensembles.items() if s == GREEDY_STRATEGY)
        lines.append(f"  `{greedy}` runs real greedy search (GreedySearch).")
    else:
        lines.append("  Write the repository with `--strategies beam,greedy` for a GreedySearch ensemble.")
    lines += ["""- **Sampling**: temperature and top_p are fixed in the Sampling graph at export (other values are
  refused); there is no top-k; `random_seed` reproduces a draw (seed s runs as s + 1: the operator
  takes 0 as "from the clock"); `num_return_sequences = n` repeats each prompt n times.
- **Not in the operators** (refused): stop_words, bad_words, no_repeat_ngram_size, beam sampling,
  early_stopping other than the graph's, streaming.
- Repetition penalty and left padding: the preprocessing pads each prompt with its own first token,
  so the penalty (which ONNX Runtime applies to padding too) equals transformers'.
"""]
    return "\n".join(lines)


GREEDY_STRATEGY = "greedy"


def _strategy_text(strategy: str) -> str:
    return {"beam": "beam search (com.microsoft BeamSearch; beam_width from the request, 1 runs one beam)",
            "greedy": "greedy search (com.microsoft GreedySearch)",
            "sample": "sampling (com.microsoft Sampling; temperature and top_p fixed at export)"}[strategy]


def _gpu_note(repo: "Repository") -> str:
    if repo.options.instance_kind == "gpu":
        if repo.options.backend == "python":
            return ("This repository asks for GPU instances (`KIND_GPU`): the python model then runs ONNX Runtime's "
                    "CUDA provider, so install `onnxruntime-gpu` instead of `onnxruntime` in the image (edit the "
                    "Dockerfile's pip line).")
        return "This repository asks for GPU instances (`KIND_GPU`): the generators run on the CUDA provider."
    return ("This repository asks for CPU instances (`KIND_CPU`); write it with `--instance-kind gpu` for a GPU "
            "host. The same image runs on a host without a GPU (leave out `--gpus all`).")


def _stream_example(repo: "Repository") -> str:
    if repo.options.backend != "python":
        return ""
    return f"""```bash
# streamed: server-sent events, one per batch of new text (text_output holds the new text of each sequence)
curl -sN localhost:8000/v2/models/{repo.options.name}/generate_stream \\
  -d '{{"text_input": "Aspirin is", "max_tokens": 20, "stream": true}}'
```
"""


def _grpc_example(repo: "Repository") -> str:
    name = repo.options.name
    if repo.options.backend != "python":
        return f"""
```python
import tritonclient.grpc as grpcclient      # gRPC: the same inputs, grpcclient.InferInput
client = grpcclient.InferenceServerClient("localhost:8001")
result = client.infer("{name}", [tensor(grpcclient, "text_input", np.array([["Aspirin is"]], dtype=object))])
```
"""
    return f"""
```python
import queue
import tritonclient.grpc as grpcclient      # streaming: gRPC bidirectional stream to the decoupled model
client = grpcclient.InferenceServerClient("localhost:8001")
responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put(error or result))
client.async_stream_infer("{name}", [tensor(grpcclient, "text_input", np.array([["Aspirin is"]], dtype=object)),
                                      tensor(grpcclient, "stream", np.array([[True]]))],
                          enable_empty_final_response=True)
while True:
    item = responses.get()
    if isinstance(item, Exception):
        raise item
    if item.get_response().parameters["triton_final_response"].bool_param:
        break
    print(item.as_numpy("text_output")[0, 0].decode(), end="", flush=True)
client.stop_stream()
```
"""


def _autoscaling(repo: "Repository") -> str:
    if repo.options.backend == "python":
        return """
Autoscaling: Triton's own queue metrics (`nv_inference_queue_duration_us`,
`nv_inference_pending_request_count`) stay near zero for this repository, because the decoupled
model takes each request at once and requests wait inside ortgen's scheduler. Scale on the
scheduler's gauges that the model publishes on Triton's `/metrics` instead: `ortgen_requests_waiting`
(requests admitted to no decoder step yet) per pod, e.g. more replicas while it averages above a few.
`k8s-hpa.yaml` does that through a Pods metric; it needs Prometheus scraping port 8002 and the
Prometheus adapter (or KEDA) exposing the series to the custom metrics API.
"""
    return f"""
Autoscaling: requests queue in Triton in front of each generator instance, so Triton's queue
metrics measure the overload: `nv_inference_queue_duration_us` (cumulative microseconds) and
`nv_inference_request_success` per model. The average queue time of `{repo.options.name}_generator`,
`rate(nv_inference_queue_duration_us[1m]) / rate(nv_inference_request_success[1m])`, is the signal:
more replicas while it stays above what your latency target allows. `k8s-hpa.yaml` scales on it as a
Pods metric; it needs Prometheus scraping port 8002 and the Prometheus adapter (or KEDA) exposing the
series (its rule is in the file).
"""


def _dockerfile(repo: "Repository") -> str:
    ort = "onnxruntime-gpu" if repo.options.instance_kind == "gpu" and repo.options.backend == "python" else ""
    extra = f" {ort}" if ort else ""
    return f"""# Triton {TRITON_IMAGE.split(':')[1]} with ortgen for this repository's python-backend models.
# Put ortgen's wheel beside this file first:  pip wheel --no-deps /path/to/ortgen -w .
FROM {TRITON_IMAGE}
COPY ortgen-*.whl /tmp/
# numpy<2: Triton 2.51's python-backend stub mishandles BYTES tensors with numpy 2
RUN pip install --no-cache-dir "numpy<2"{extra} /tmp/ortgen-*.whl && rm /tmp/ortgen-*.whl
COPY . /models
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--disable-auto-complete-config", "--exit-on-error=true", \\
     "--strict-readiness=true"]
"""


def _deployment(repo: "Repository") -> str:
    app = _app(repo)
    gpu = repo.options.instance_kind == "gpu"
    resources = ("          limits:\n            nvidia.com/gpu: 1\n" if gpu else
                 "          requests:\n            cpu: \"4\"\n            memory: 8Gi\n")
    return f"""# {repo.options.name} on Triton: one server per pod (written by ortgen {__version__}).
# The image: `docker build -t {app} .` in this directory (see README.md), pushed where the cluster pulls from.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  labels: {{app: {app}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "8002"
    spec:
      containers:
      - name: triton
        image: {app}:latest
        ports:
        - {{name: http, containerPort: 8000}}
        - {{name: grpc, containerPort: 8001}}
        - {{name: metrics, containerPort: 8002}}
        readinessProbe:          # ready once every model has loaded (--strict-readiness)
          httpGet: {{path: /v2/health/ready, port: http}}
          periodSeconds: 5
          failureThreshold: 3
        startupProbe:            # loading the models can take minutes for a large package
          httpGet: {{path: /v2/health/live, port: http}}
          periodSeconds: 10
          failureThreshold: 60
        livenessProbe:
          httpGet: {{path: /v2/health/live, port: http}}
          periodSeconds: 10
        resources:
{resources}        volumeMounts:
        - {{name: shm, mountPath: /dev/shm}}   # the python backend talks to its stubs through shared memory
      volumes:
      - name: shm
        emptyDir: {{medium: Memory, sizeLimit: 1Gi}}
      terminationGracePeriodSeconds: 60
"""


def _service(repo: "Repository") -> str:
    app = _app(repo)
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {app}
  labels: {{app: {app}}}
spec:
  selector: {{app: {app}}}
  ports:
  - {{name: http, port: 8000, targetPort: http}}
  - {{name: grpc, port: 8001, targetPort: grpc}}
  - {{name: metrics, port: 8002, targetPort: metrics}}
"""


def _hpa(repo: "Repository") -> str:
    app = _app(repo)
    if repo.options.backend == "python":
        metric, target, rule = "ortgen_requests_waiting", "4", (
            "#   - seriesQuery: 'ortgen_requests_waiting{namespace!=\"\",pod!=\"\"}'\n"
            "#     resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}\n"
            "#     metricsQuery: 'avg_over_time(ortgen_requests_waiting{<<.LabelMatchers>>}[1m])'\n")
        why = "requests waiting in ortgen's scheduler, per pod (Triton's own queue stays empty for a decoupled model)"
    else:
        metric, target, rule = "triton_queue_us_per_request", "50000", (
            "#   - seriesQuery: 'nv_inference_queue_duration_us{namespace!=\"\",pod!=\"\"}'\n"
            "#     resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}\n"
            "#     name: {as: triton_queue_us_per_request}\n"
            f"#     metricsQuery: 'sum(rate(nv_inference_queue_duration_us{{<<.LabelMatchers>>,model=\"{repo.options.name}_generator\"}}[1m])) by (<<.GroupBy>>)\n"
            f"#       / clamp_min(sum(rate(nv_inference_request_success{{<<.LabelMatchers>>,model=\"{repo.options.name}_generator\"}}[1m])) by (<<.GroupBy>>), 1e-3)'\n")
        why = "microseconds a request waits in Triton's queue before the generator runs it, per pod"
    return f"""# Scale {app} on {why}.
# Needs Prometheus scraping the pods' port 8002 and prometheus-adapter exposing the series, e.g. this rule:
# rules:
{rule}apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {app}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {app}}}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Pods
    pods:
      metric: {{name: {metric}}}
      target: {{type: AverageValue, averageValue: "{target}"}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 300}}
"""
