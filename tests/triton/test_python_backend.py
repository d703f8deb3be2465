"""The ``--backend python`` repository on a real Triton server (loopback), with the real clients:
tritonclient.http (through ``<NAME>_infer``), tritonclient.grpc (infer, and a stream to the decoupled
model), and the generate extension. Every text must equal ``Generator.generate`` for the same
settings in this process; concurrent clients must get what they get alone; bad input must get a
Triton error with the reason while the server carries on.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import numpy as np
import pytest

from tests.triton.conftest import NAME, infer_inputs, reference, tensor, texts
from ortgen.triton.server import running_tritonserver

pytestmark = pytest.mark.triton

PROMPTS = ["Aspirin reduces the risk of", "The cell membrane"]
INFER = f"{NAME}_infer"


@pytest.fixture(scope="module")
def server(python_repo, triton_env):
    with running_tritonserver(python_repo, triton_env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), concurrency=8,
                                            network_timeout=120, connection_timeout=120)


@pytest.fixture(scope="module")
def grpc(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


def test_http_infer_batch_beam_search_several_sequences(http, generator):
    import tritonclient.http as httpclient

    settings = {"max_tokens": 10, "beam_width": 4, "num_return_sequences": 2, "length_penalty": 1.0}
    result = http.infer(INFER, infer_inputs(httpclient, PROMPTS, settings))
    assert texts(result) == reference(generator, PROMPTS, settings)
    assert result.as_numpy("text_output").shape == (2, 2)


def test_grpc_infer_seeded_sampling(grpc, generator):
    import tritonclient.grpc as grpcclient

    settings = {"max_tokens": 12, "temperature": 0.8, "top_k": 20, "random_seed": 11, "num_return_sequences": 3}
    first = texts(grpc.infer(INFER, infer_inputs(grpcclient, PROMPTS[:1], settings)))
    again = texts(grpc.infer(INFER, infer_inputs(grpcclient, PROMPTS[:1], settings)))
    assert first == again == reference(generator, PROMPTS[:1], settings)
    assert len(set(first[0])) > 1  # three draws, not one text three times


def _stream(grpc, model: str, inputs) -> list:
    """A gRPC stream to ``model``: the responses until the final flag (raises a response's error)."""
    responses: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: responses.put(error or result))
    try:
        grpc.async_stream_infer(model, inputs, enable_empty_final_response=True)
        out = []
        while True:
            item = responses.get(timeout=120)
            if isinstance(item, Exception):
                raise item
            out.append(item)
            if item.get_response().parameters["triton_final_response"].bool_param:
                return out
    finally:
        grpc.stop_stream()


def test_grpc_stream_sends_deltas_that_add_up_to_the_text(grpc, generator):
    import tritonclient.grpc as grpcclient

    settings = {"max_tokens": 120, "min_length": 120, "stream": True, "return_log_probs": True}
    responses = _stream(grpc, NAME, infer_inputs(grpcclient, PROMPTS, settings))
    deltas = [r.as_numpy("text_output") for r in responses if r.as_numpy("text_output") is not None]
    assert len(deltas) > 1, "the text came in one piece"
    joined = [["".join(d[b, i].decode() for d in deltas) for i in range(deltas[0].shape[1])] for b in range(2)]
    expected = reference(generator, PROMPTS, {"max_tokens": 120, "min_length": 120})
    assert joined == expected
    final = responses[-1]
    assert final.as_numpy("cum_log_probs").shape == (2, 1)
    logprobs = generator.generate(PROMPTS, max_new_tokens=120, min_new_tokens=120, logprobs=0)
    sums = [[sum(p.logprob for p in s.logprobs) for s in group] for group in logprobs.sequences]
    np.testing.assert_allclose(final.as_numpy("cum_log_probs"), sums, rtol=1e-5)


def test_grpc_stream_of_beam_search(grpc, generator):
    import tritonclient.grpc as grpcclient

    settings = {"max_tokens": 16, "beam_width": 3, "num_return_sequences": 2, "stream": True}
    responses = _stream(grpc, NAME, infer_inputs(grpcclient, PROMPTS[:1], settings))
    deltas = [r.as_numpy("text_output") for r in responses if r.as_numpy("text_output") is not None]
    joined = [["".join(d[0, i].decode() for d in deltas) for i in range(2)]]
    assert joined == reference(generator, PROMPTS[:1], {k: v for k, v in settings.items() if k != "stream"})


def test_generate_extension(server, generator):
    settings = {"max_tokens": 10, "beam_width": 3, "num_return_sequences": 2}
    body = {"text_input": PROMPTS[0], **settings}
    response = httpx.post(f"{server.http_url}/v2/models/{NAME}/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["text_output"] == reference(generator, PROMPTS[:1], settings)[0]

    body = {"text_input": PROMPTS[1], "max_tokens": 40, "stream": True}
    events = []
    with httpx.stream("POST", f"{server.http_url}/v2/models/{NAME}/generate_stream", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert all("error" not in e for e in events), events
    assert "".join(e["text_output"] for e in events) == reference(generator, PROMPTS[1:], {"max_tokens": 40})[0][0]


def test_concurrent_clients_get_what_they_get_alone(server, generator):
    import tritonclient.http as httpclient

    cases = [([f"{p} case {i}"], {"max_tokens": 8 + i, **({"beam_width": 3} if i % 2 else {})})
             for i, p in enumerate(PROMPTS * 4)]
    expected = [reference(generator, prompts, settings) for prompts, settings in cases]
    results: dict[int, object] = {}
    start = threading.Barrier(len(cases))

    def client(i: int) -> None:
        c = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)
        prompts, settings = cases[i]
        start.wait()
        try:
            results[i] = texts(c.infer(INFER, infer_inputs(httpclient, prompts, settings)))
        except Exception as exc:  # noqa: BLE001 - compared below
            results[i] = exc
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results.get(i) for i in range(len(cases))] == expected


@pytest.mark.parametrize("body, message", [
    ({"text_input": "   "}, "text_input[0] is empty"),
    ({"text_input": "Aspirin", "beam_width": 0}, "beam_width must be an integer >= 1"),
    ({"text_input": "Aspirin", "temperature": -1.0}, "temperature"),
    ({"text_input": "Aspirin", "beam_width": 2, "num_return_sequences": 3}, "num_return_sequences (3) must be <= "),
    ({"text_input": "Aspirin", "max_tokens": 400}, "positions; the model has 256"),
    ({"text_input": "Aspirin " * 300}, "positions; the model has 256"),
])
def test_bad_input_is_a_triton_error_and_the_server_carries_on(server, generator, body, message):
    response = httpx.post(f"{server.http_url}/v2/models/{NAME}/generate", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert server.ready()
    ok = httpx.post(f"{server.http_url}/v2/models/{NAME}/generate", json={"text_input": "Aspirin", "max_tokens": 4},
                    timeout=60)
    assert ok.status_code == 200 and ok.json()["text_output"] == reference(generator, ["Aspirin"], {"max_tokens": 4})[0][0]


def test_bad_input_through_the_clients(http, grpc):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="text_input.0. is empty"):
        http.infer(INFER, infer_inputs(httpclient, [""], {}))
    with pytest.raises(InferenceServerException, match="stream=true needs the decoupled model"):
        grpc.infer(INFER, infer_inputs(grpcclient, ["Aspirin"], {"stream": True}))
    with pytest.raises(InferenceServerException, match="greedy search returns one sequence per prompt"):
        grpc.infer(INFER, infer_inputs(grpcclient, ["Aspirin"], {"temperature": 0.0, "num_return_sequences": 2}))
    with pytest.raises(InferenceServerException, match="unexpected inference input 'bogus'"):
        http.infer(INFER, [tensor(httpclient, "text_input", np.array([["Aspirin"]], dtype=object)),
                           tensor(httpclient, "bogus", np.array([[1]], dtype=np.int32))])
    assert http.is_server_ready()


@pytest.mark.parametrize("inputs, message", [
    ([{"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [8]}], "text_input"),
    ([{"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": ["Aspirin"]},
      {"name": "beam_width", "shape": [1, 1], "datatype": "INT32", "data": [1000]}], "beam_width"),
    ([{"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": ["Aspirin"]},
      {"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [-1]}], "max_tokens"),
])
def test_client_errors_on_the_infer_model_are_400_and_invalid_argument(server, grpc, inputs, message):
    """The client's mistakes are INVALID_ARGUMENT (HTTP 400), not INTERNAL (500), on both protocols."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    response = httpx.post(f"{server.http_url}/v2/models/{INFER}/infer", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    arrays = []
    for item in inputs:
        dtype = object if item["datatype"] == "BYTES" else np.int32
        arrays.append(tensor(grpcclient, item["name"], np.array(item["data"], dtype=dtype).reshape(item["shape"])))
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer(INFER, arrays)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and message in caught.value.message()
    assert server.ready()


def test_the_repository_config_has_the_parameters_its_readme_names(python_repo):
    config = (python_repo / NAME / "config.pbtxt").read_text()
    readme = (python_repo / "README.md").read_text()
    for name in ("threads", "max_running", "max_queue", "kv_budget_bytes"):
        assert f'key: "{name}"' in config and f"`{name}`" in readme, name


def test_scheduler_metrics_on_tritons_metrics_port(server):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(server.metrics_url, timeout=10).text
        if f'ortgen_requests_running{{model="{NAME}"}}' in text:
            break
        time.sleep(0.5)
    assert f'ortgen_requests_waiting{{model="{NAME}"}}' in text
