"""The ensemble's last step (written by ``ortgen triton --backend onnxruntime``): the operator's
sequences -> text_output (ortgen.triton.ensemble.Postprocessor). The package's manifest and
tokenizer are in 1/package."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ortgen.triton.ensemble import Postprocessor, text_generator


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        package = Path(args["model_repository"]) / args["model_version"] / "package"
        self.step = Postprocessor(text_generator(package), params["graph"])
        self.inputs = [i["name"] for i in config["input"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.inputs}
                outputs = self.step({k: v.as_numpy() for k, v in tensors.items() if v is not None})
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
