"""A python-backend stand-in for an ``<E>_generator`` model (copied into a test repository as model.py).

The nvidia-pytriton wheel's server has no onnxruntime backend, so the ensemble tests swap the
generator's backend for this model: it runs the same 1/model.onnx with ONNX Runtime and declares the
same inputs and outputs, so the ensemble, the preprocessing and the postprocessing run unchanged.
"""

import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            values = self.session.run(self.outputs, feeds)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return responses
