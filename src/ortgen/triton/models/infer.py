"""The decoupled generator model for the infer endpoints (written by ``ortgen triton``).

Triton refuses decoupled models on HTTP /infer and gRPC ModelInfer. This model is not decoupled:
it forwards each request to the generator model (parameter ``target``) through BLS and answers with
the text of its final response. It holds no weights; requests are forwarded concurrently (threads),
so they still share the generator's decoder steps.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils

OUTPUTS = ("text_output", "cum_log_probs")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.target = params["target"]
        self.pool = ThreadPoolExecutor(max_workers=int(params.get("max_concurrency") or 256),
                                       thread_name_prefix="ortgen-infer")

    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._forward, request)
        return None  # each request is answered through its response sender

    def _forward(self, request):
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            stream = pb_utils.get_input_tensor_by_name(request, "stream")
            if stream is not None and stream.as_numpy().any():
                raise ValueError(f"stream=true needs the decoupled model {self.target!r} (gRPC streaming or "
                                 "/generate_stream); this one answers once")
            outputs = {}
            call = pb_utils.InferenceRequest(model_name=self.target, inputs=request.inputs(),
                                             requested_output_names=list(OUTPUTS))
            for response in call.exec(decoupled=True):
                if response.has_error():
                    raise ValueError(response.error().message())
                for tensor in response.output_tensors():
                    outputs[tensor.name()] = tensor
            if "text_output" not in outputs:
                raise ValueError(f"{self.target} answered without text_output")
            sender.send(pb_utils.InferenceResponse(output_tensors=list(outputs.values())), flags=final)
        except Exception as exc:  # the client gets the reason
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), flags=final)

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
