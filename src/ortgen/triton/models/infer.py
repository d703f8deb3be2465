"""The decoupled generator model for the infer endpoints (written by ``ortgen triton``).

Triton refuses decoupled models on HTTP /infer and gRPC ModelInfer. This model is not decoupled:
it forwards each request to the generator model (parameter ``target``) through BLS and answers with
the text of its final response. It holds no weights; requests are forwarded concurrently (threads),
so they still share the generator's decoder steps. Errors keep their code (a client's mistake is
INVALID_ARGUMENT, HTTP 400): BLS drops a response error's code, so the generator writes it into the
message ("[invalid_argument] ...") for this caller alone, and it is parsed back here.
"""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils

OUTPUTS = ("text_output", "cum_log_probs")
CODE_IN_MESSAGE = "ortgen_error_code_in_message"  # asks the generator to write its error code into the message
_CODES = {"invalid_argument": "INVALID_ARG", "unavailable": "UNAVAILABLE", "cancelled": "CANCELLED",
          "internal": "INTERNAL"}


class _Refused(Exception):
    """An error to answer with Triton's code (the generator's own, or invalid argument)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _coded(message):
    """(message, Triton code) from the generator's "[code] message" (BLS drops the error's own code)."""
    match = re.match(r"\[(\w+)\] (.*)", message, re.DOTALL)
    if not match:
        return message, getattr(pb_utils.TritonError, "INTERNAL", None)
    return match.group(2), getattr(pb_utils.TritonError, _CODES.get(match.group(1), "INTERNAL"), None)


def _error(message, code=None):
    invalid = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    code = invalid if code is None else code
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


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
                raise _Refused(f"stream=true needs the decoupled model {self.target!r} (gRPC streaming or "
                               "/generate_stream); this one answers once")
            outputs = {}
            call = pb_utils.InferenceRequest(model_name=self.target, inputs=request.inputs(),
                                             requested_output_names=list(OUTPUTS),
                                             parameters={CODE_IN_MESSAGE: True})
            for response in call.exec(decoupled=True):
                if response.has_error():  # keep the generator's code: a client's mistake stays a 400
                    raise _Refused(*_coded(response.error().message()))
                for tensor in response.output_tensors():
                    outputs[tensor.name()] = tensor
            if "text_output" not in outputs:
                raise RuntimeError(f"{self.target} answered without text_output")
            sender.send(pb_utils.InferenceResponse(output_tensors=list(outputs.values())), flags=final)
        except _Refused as exc:
            sender.send(pb_utils.InferenceResponse(error=_error(str(exc), exc.code)), flags=final)
        except Exception as exc:  # the client gets the reason
            internal = getattr(pb_utils.TritonError, "INTERNAL", None)
            sender.send(pb_utils.InferenceResponse(error=_error(str(exc), internal)), flags=final)

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
