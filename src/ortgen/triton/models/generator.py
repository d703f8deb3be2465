"""ortgen's Generator as a decoupled Triton python-backend model (written by ``ortgen triton``).

Every request goes to one Generator whose scheduler runs all of them together (continuous
batching); execute() returns at once and the responses are sent as the text comes
(ortgen.triton.serving). Inputs and outputs: TensorRT-LLM's ensemble names (see config.pbtxt).
The package is in 1/package; model parameters: threads, max_running, max_queue, kv_budget_bytes (0: automatic).
"""

import json
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import ortgen
from ortgen.runtime.generator import Generator
from ortgen.runtime.scheduler import SchedulerLimits
from ortgen.triton.serving import GeneratorService

METRICS_SECONDS = 1.0
CODE_IN_MESSAGE = "ortgen_error_code_in_message"  # request parameter set by the _infer forwarder


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def triton_error(message, code):
    """A TritonError whose code Triton turns into the right HTTP status / gRPC code (400 /
    INVALID_ARGUMENT for the client's mistakes; without a code Triton answers 500 / INTERNAL)."""
    codes = {"invalid_argument": "INVALID_ARG", "unavailable": "UNAVAILABLE", "cancelled": "CANCELLED",
             "internal": "INTERNAL"}
    value = getattr(pb_utils.TritonError, codes.get(code, "INTERNAL"), None)
    return pb_utils.TritonError(message) if value is None else pb_utils.TritonError(message, value)


class _Sender:
    """ortgen.triton.serving's Sender over the request's response sender."""

    def __init__(self, request):
        self.sender = request.get_response_sender()
        try:
            self.code_in_message = bool(json.loads(request.parameters() or "{}").get(CODE_IN_MESSAGE))
        except (AttributeError, ValueError):
            self.code_in_message = False

    def send(self, outputs=None, *, error=None, code="internal", final=False):
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if error is not None:
            if self.code_in_message:  # a BLS caller loses the code otherwise (Triton 2.51): it parses it back
                error = f"[{code}] {error}"
            self.sender.send(pb_utils.InferenceResponse(error=triton_error(error, code)), flags=flags)
        elif outputs:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in outputs.items()]
            self.sender.send(pb_utils.InferenceResponse(output_tensors=tensors), flags=flags)
        else:
            self.sender.send(flags=flags)


class TritonPythonModel:
    def initialize(self, args):
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        params = _parameters(config)
        if params.get("ortgen_version") not in (None, "", ortgen.__version__):
            self.logger.log_warn(f"this repository was written by ortgen {params['ortgen_version']}; the server's "
                                 f"environment has ortgen {ortgen.__version__}")
        self.inputs = [i["name"] for i in config["input"]]
        package = Path(args["model_repository"]) / args["model_version"] / "package"
        provider = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        defaults = SchedulerLimits()
        limits = SchedulerLimits(max_requests=int(params.get("max_running") or defaults.max_requests),
                                 max_queue=int(params.get("max_queue") or defaults.max_queue),
                                 kv_budget=int(params.get("kv_budget_bytes") or 0) or None)
        threads = int(params.get("threads") or 0) or None
        generator = Generator.load(package, providers=provider, threads=threads, limits=limits)
        generator.scheduler  # load the engine now: the first request should not wait for it
        self.service = GeneratorService(generator)
        self.logger.log_info(f"{args['model_name']}: ortgen {ortgen.__version__}, {provider}, package {package}")
        self._metrics_stop = threading.Event()
        self._start_metrics(args["model_name"], generator)

    def _start_metrics(self, model, generator):
        """ortgen_requests_running / ortgen_requests_waiting on Triton's /metrics (for autoscaling: a
        decoupled model's requests wait in ortgen's scheduler, not in Triton's queue)."""
        try:
            running = pb_utils.MetricFamily(name="ortgen_requests_running", description="requests decoding in "
                                            "ortgen's scheduler", kind=pb_utils.MetricFamily.GAUGE)
            waiting = pb_utils.MetricFamily(name="ortgen_requests_waiting", description="requests waiting for a place "
                                            "in ortgen's scheduler", kind=pb_utils.MetricFamily.GAUGE)
            gauges = (running.Metric(labels={"model": model}), waiting.Metric(labels={"model": model}))
            self._metric_families = (running, waiting)  # a family must outlive its metrics
        except Exception as exc:  # metrics disabled on this server
            self.logger.log_warn(f"no custom metrics: {exc}")
            return

        def update():
            while not self._metrics_stop.wait(METRICS_SECONDS):
                scheduler = generator._scheduler
                gauges[0].set(scheduler.running if scheduler is not None else 0)
                gauges[1].set(scheduler.waiting if scheduler is not None else 0)

        threading.Thread(target=update, name="ortgen-metrics", daemon=True).start()

    def execute(self, requests):
        for request in requests:
            tensors = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    tensors[name] = tensor.as_numpy()
            self.service.start(tensors, _Sender(request), request.is_cancelled)
        return None

    def finalize(self):
        self._metrics_stop.set()
        self.service.close()
