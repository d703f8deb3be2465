"""The ensemble's first step (written by ``ortgen triton --backend onnxruntime``): text and
TensorRT-LLM settings -> the generation graph's input tensors (ortgen.triton.ensemble.Preprocessor).
The package's manifest and tokenizer are in 1/package."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ortgen.triton.ensemble import Preprocessor, text_generator


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        package = Path(args["model_repository"]) / args["model_version"] / "package"
        self.step = Preprocessor(text_generator(package), params["graph"], json.loads(params.get("routes") or "{}"))
        self.inputs = [i["name"] for i in config["input"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensors = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        tensors[name] = tensor.as_numpy()
                outputs = self.step(tensors)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()]))
            except Exception as exc:  # the client gets the reason (OrtgenError messages say what is allowed)
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
