"""The ``--backend onnxruntime`` repository on a real Triton server: its ensembles, preprocessing and
postprocessing as written, the generators swapped for a python-backend stand-in that runs the same
ONNX file with ONNX Runtime (the server here has no onnxruntime backend; the generator configs are
checked against the ONNX files in test_repository.py). Texts must equal ``Generator.generate`` with
the in-graph operators (``backend="graph"``) for the same settings.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.triton.conftest import NAME, infer_inputs, reference, texts
from ortgen.triton.server import running_tritonserver

pytestmark = pytest.mark.triton

PROMPTS = ["Aspirin reduces the risk of", "The cell membrane", "Statins"]


@pytest.fixture(scope="module")
def server(onnxruntime_repo, triton_env):
    with running_tritonserver(onnxruntime_repo, triton_env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)


def test_beam_ensemble_batch_of_prompts_several_sequences(http, generator):
    import tritonclient.http as httpclient

    settings = {"max_tokens": 10, "beam_width": 4, "num_return_sequences": 2, "length_penalty": 0.0}
    result = http.infer(NAME, infer_inputs(httpclient, PROMPTS, settings))
    assert texts(result) == reference(generator, PROMPTS, settings, backend="graph")
    # cum_log_probs: the operator's normalised scores times the length it normalised by
    graph = generator.generate(PROMPTS, **{"max_new_tokens": 10, "num_beams": 4, "num_return_sequences": 2,
                                           "length_penalty": 0.0}, backend="graph")
    np.testing.assert_allclose(result.as_numpy("cum_log_probs"), graph.extra["onnxruntime_scores"], rtol=1e-5)


def test_sample_ensemble_with_a_seed_over_grpc(server, generator):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_address)
    settings = {"max_tokens": 12, "random_seed": 3, "num_return_sequences": 2}
    try:
        first = texts(client.infer(f"{NAME}_sample", infer_inputs(grpcclient, PROMPTS[:2], settings)))
        again = texts(client.infer(f"{NAME}_sample", infer_inputs(grpcclient, PROMPTS[:2], settings)))
    finally:
        client.close()
    expected = generator.generate(PROMPTS[:2], max_new_tokens=12, do_sample=True, top_k=0, seed=3,
                                  num_return_sequences=2, backend="graph").texts
    assert first == again == expected


def test_greedy_ensemble_through_the_generate_extension(server, generator):
    body = {"text_input": PROMPTS[0], "max_tokens": 12, "repetition_penalty": 1.3}
    response = httpx.post(f"{server.http_url}/v2/models/{NAME}_greedy/generate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == reference(generator, PROMPTS[:1], {"max_tokens": 12,
                                                                                "repetition_penalty": 1.3},
                                                       backend="graph")[0][0]


@pytest.mark.parametrize("model, body, message", [
    (NAME, {"text_input": ""}, "text_input[0] is empty"),
    (NAME, {"text_input": "Aspirin", "temperature": 0.7}, f"send it to the '{NAME}_sample' model"),
    (NAME, {"text_input": "Aspirin", "stream": True}, "this ensemble does not stream"),
    (NAME, {"text_input": "Aspirin", "stop_words": ["cell"]}, "stop_strings: the operators have none"),
    (NAME, {"text_input": "Aspirin", "max_tokens": 300}, "positions; the model has 256"),
    (f"{NAME}_sample", {"text_input": "Aspirin", "top_k": 5}, "the Sampling operator has no top-k"),
    (f"{NAME}_sample", {"text_input": "Aspirin", "temperature": 0.5}, "fixed at export"),
    (f"{NAME}_greedy", {"text_input": "Aspirin", "beam_width": 3}, f"send it to the '{NAME}' model"),
])
def test_bad_input_is_a_triton_error_and_the_server_carries_on(server, model, body, message):
    response = httpx.post(f"{server.http_url}/v2/models/{model}/generate", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    ok = httpx.post(f"{server.http_url}/v2/models/{NAME}/generate", json={"text_input": "Aspirin", "max_tokens": 3},
                    timeout=60)
    assert ok.status_code == 200, ok.text
    assert server.ready()


def test_different_settings_per_prompt_are_refused_with_the_reason(http):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    inputs = infer_inputs(httpclient, PROMPTS[:2], {})
    per_row = httpclient.InferInput("max_tokens", [2, 1], "INT32")
    per_row.set_data_from_numpy(np.array([[4], [5]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="one call with one set of settings"):
        http.infer(NAME, inputs + [per_row])
