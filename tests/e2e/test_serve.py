"""``ortgen serve`` over loopback, with the real clients: openai, tritonclient.http, plain HTTP.

Each response's text must equal ``Generator.generate`` for the same settings, in this process.
Servers run in processes of their own on free ports and are always stopped (tests/helpers/servers.py).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
tritonclient_http = pytest.importorskip("tritonclient.http")

from ortgen.runtime.generator import Generator  # noqa: E402
from ortgen.serve.process import running_server  # noqa: E402

KEY = "test-key-123"
PROMPT = "Aspirin reduces the risk of"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(demo_package):
    with running_server(demo_package, "--api-key", KEY, "--max-n", "4", "--max-beam-width", "8",
                        "--max-body-bytes", "65536") as running:
        yield running


@pytest.fixture(scope="module")
def generator(demo_package):
    with Generator.load(demo_package) as loaded:
        result_generator[:] = [loaded]
        yield loaded


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _texts(result) -> list[str]:
    """The texts the server returns for ``result``: each completion in the context of its prompt (BioGPT's
    Moses detokenizer puts a space between the prompt and the completion that decoding it alone omits)."""
    from ortgen.serve.text_alignment import continuation

    decode = lambda ids: result_generator[0]._decode_text(ids) or ""  # noqa: E731
    return [continuation(decode, result.prompt_ids[0], s.token_ids) for s in result.sequences[0]]


result_generator: list = []


def test_completion_equals_generate(client, server, generator):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=12)
    assert [c.text for c in response.choices] == _texts(generator.generate(PROMPT, max_new_tokens=12))
    assert response.choices[0].finish_reason in ("stop", "length")
    expected_prompt = len(generator.encode([PROMPT])[0])
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.completion_tokens == len(generator.generate(PROMPT, max_new_tokens=12).sequences[0][0].token_ids)


def test_n_samples_with_a_seed(client, server, generator):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=10, n=2, temperature=0.8,
                                         seed=5)
    expected = generator.generate(PROMPT, max_new_tokens=10, do_sample=True, num_return_sequences=2, temperature=0.8,
                                  top_k=0, seed=5)
    assert [c.text for c in response.choices] == _texts(expected)
    assert [c.index for c in response.choices] == [0, 1]


def test_a_list_of_prompts_and_token_ids(client, server, generator):
    ids = generator.encode(["The primary outcome was"])[0]
    response = client.completions.create(model=server.model, prompt=[PROMPT, "Statins"], max_tokens=6)
    assert [c.text for c in response.choices] == [_texts(generator.generate(p, max_new_tokens=6))[0]
                                                  for p in (PROMPT, "Statins")]
    response = client.completions.create(model=server.model, prompt=ids, max_tokens=6)
    assert response.choices[0].text == _texts(generator.generate(input_ids=[ids], max_new_tokens=6))[0]


def test_logprobs(client, server, generator):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, logprobs=2)
    ours = generator.generate(PROMPT, max_new_tokens=6, logprobs=2).sequences[0][0]
    logprobs = response.choices[0].logprobs
    assert logprobs.token_logprobs == pytest.approx([r.logprob for r in ours.logprobs], abs=1e-5)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs) and len(logprobs.tokens) == 6
    assert logprobs.text_offset[0] == 0
    exact = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, logprobs=0,
                                      extra_body={"return_tokens_as_token_ids": True}).choices[0].logprobs
    assert exact.tokens == [f"token_id:{t}" for t in ours.token_ids]


def test_streaming_with_usage(client, server, generator):
    stream = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=16, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == _texts(generator.generate(PROMPT, max_new_tokens=16))[0]
    assert len([c for c in chunks if c.choices]) > 1, "streams as it goes"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_beam_search_through_extra_body_streamed_and_not(client, server, generator):
    extra = {"use_beam_search": True, "best_of": 4, "length_penalty": 0.5}
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=10, n=2, extra_body=extra)
    expected = _texts(generator.generate(PROMPT, max_new_tokens=10, num_beams=4, num_return_sequences=2,
                                         length_penalty=0.5))
    assert [c.text for c in response.choices] == expected
    streamed = ["", ""]
    for chunk in client.completions.create(model=server.model, prompt=PROMPT, max_tokens=10, n=2, extra_body=extra,
                                           stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == expected


def test_stop_strings_end_the_text_and_are_left_out(client, server, generator):
    full = _texts(generator.generate(PROMPT, max_new_tokens=20))[0]
    stop = full.split()[2][:2] if len(full.split()) > 2 else full[3:5]
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=20, stop=[stop])
    ours = _texts(generator.generate(PROMPT, max_new_tokens=20, stop_strings=[stop]))[0]
    assert response.choices[0].text == ours[:ours.find(stop)]
    assert response.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=server.model, prompt=PROMPT, max_tokens=20, stop=[stop], stream=True))
    assert streamed == response.choices[0].text


def test_echo_and_models(client, server, generator):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4, echo=True)
    assert response.choices[0].text == PROMPT + _texts(generator.generate(PROMPT, max_new_tokens=4))[0]
    assert [m.id for m in client.models.list().data] == [server.model]


def test_chat_completions_explain_there_is_no_chat_template(client, server):
    with pytest.raises(openai.BadRequestError, match="has no chat template"):
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}])


def test_tritonclient_http(server, generator):
    triton = tritonclient_http.InferenceServerClient(server.url.removeprefix("http://"), connection_timeout=30,
                                                     network_timeout=60)
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(server.model, headers=dict(AUTH))
    metadata = triton.get_model_metadata(server.model, headers=dict(AUTH))
    assert metadata["inputs"][0]["name"] == "text_input" and metadata["outputs"][0]["name"] == "text_output"
    prompts = [PROMPT, "Statins lower"]
    for binary in (True, False):
        text = tritonclient_http.InferInput("text_input", [2], "BYTES")
        text.set_data_from_numpy(np.array([p.encode() for p in prompts], dtype=object), binary_data=binary)
        tokens = tritonclient_http.InferInput("max_tokens", [1], "INT32")
        tokens.set_data_from_numpy(np.array([8], dtype=np.int32), binary_data=binary)
        beams = tritonclient_http.InferInput("beam_width", [1], "INT32")
        beams.set_data_from_numpy(np.array([3], dtype=np.int32), binary_data=binary)
        # a fresh dict each call: tritonclient writes its binary header length into the one it is given
        result = triton.infer(server.model, [text, tokens, beams], headers=dict(AUTH),
                              outputs=[tritonclient_http.InferRequestedOutput("text_output", binary_data=binary)])
        got = [t.decode() if isinstance(t, bytes) else t for t in result.as_numpy("text_output").reshape(-1)]
        assert got == [t[0] for t in generator.generate(prompts, max_new_tokens=8, num_beams=3).texts], binary
    triton.close()


def test_generate_and_generate_stream(server, generator):
    body = {"text_input": PROMPT, "max_tokens": 10, "beam_width": 2}
    expected = generator.generate(PROMPT, max_new_tokens=10, num_beams=2).texts[0][0]  # the output tokens decoded
    response = httpx.post(f"{server.url}/v2/models/{server.model}/generate", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200 and response.json()["text_output"] == expected
    parts = []
    with httpx.stream("POST", f"{server.url}/v2/models/{server.model}/generate_stream", json={
            **body, "parameters": {"stop_words": []}}, headers=AUTH, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                parts.append(json.loads(line[6:]))
    assert "".join(p["text_output"] for p in parts) == expected and parts[-1]["finish_reason"]


def test_metrics_count_requests_and_tokens(server):
    text = httpx.get(server.url + "/metrics", headers=AUTH, timeout=30).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:request_queue_time_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "ortgen_step_rows_bucket", 'ortgen_http_requests_total{model_name="demo-biogpt",route="/v1/completions",'
                                            'status="200"}'):
        assert name in text, name
    assert httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()["paths"]["/v1/completions"]


def _post(server, path: str, content: bytes | None = None, body=None, headers=None):
    headers = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    if body is not None:
        content = json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers, timeout=60)


def _completion(**fields):
    return {"model": "demo-biogpt", "prompt": PROMPT, "max_tokens": 4, **fields}


BAD_REQUESTS = [
    ("not JSON", "/v1/completions", b"{not json", None, 400, "not valid JSON"),
    ("not UTF-8", "/v1/completions", b'{"model": "demo-biogpt", "prompt": "\xff\xfe"}', None, 400, "not valid JSON"),
    ("wrong type", "/v1/completions", None, _completion(max_tokens="ten"), 400, "max_tokens: Input should be a valid"),
    ("string number", "/v1/completions", None, _completion(temperature="0.5"), 400, "temperature: Input should be"),
    ("unknown field", "/v1/completions", None, _completion(beams=3), 400, "beams: unknown field"),
    ("NaN", "/v1/completions", b'{"model": "demo-biogpt", "prompt": "x", "temperature": NaN}', None, 400,
     "temperature: Input should be a finite number"),
    ("Infinity", "/v1/completions", b'{"model": "demo-biogpt", "prompt": "x", "top_p": Infinity}', None, 400,
     "top_p: Input should be a finite number"),
    ("negative temperature", "/v1/completions", None, _completion(temperature=-1), 400, "temperature: Input should be"),
    ("top_p over 1", "/v1/completions", None, _completion(top_p=1.5, temperature=1.0), 400, "top_p"),
    ("n = 0", "/v1/completions", None, _completion(n=0), 400, "n: Input should be greater than or equal to 1"),
    ("empty prompt", "/v1/completions", None, _completion(prompt=""), 400, "prompt is empty"),
    ("prompt over the context", "/v1/completions", None, _completion(prompt=[5] * 300), 400,
     "prompt has 300 tokens; this server takes at most 256"),
    ("prompt + max_tokens over the context", "/v1/completions", None, _completion(prompt=[5] * 250, max_tokens=10),
     400, "needs 260 positions; the model has 256"),
    ("n over the limit", "/v1/completions", None, _completion(n=5, temperature=1.0), 400,
     "n is 5; this server allows at most 4"),
    ("beam width over the limit", "/v1/completions", None, _completion(use_beam_search=True, best_of=9), 400,
     "the beam width is 9; this server allows at most 8"),
    ("unknown model", "/v1/completions", None, _completion(model="gpt-4"), 404, "the model 'gpt-4' does not exist"),
    ("huge body", "/v1/completions", None, _completion(prompt="word " * 20000), 413, "this server takes at most 65536"),
    ("stream_options without stream", "/v1/completions", None, _completion(stream_options={"include_usage": True}),
     400, "stream_options needs stream: true"),
    ("greedy with n > 1", "/v1/completions", None, _completion(n=2, temperature=0), 400, "temperature 0 is greedy"),
    ("token id outside the vocabulary", "/v1/completions", None, _completion(prompt=[10**6]), 400,
     "outside the vocabulary"),
    ("KServe: no text_input", "/v2/models/demo-biogpt/infer", None,
     {"inputs": [{"name": "max_tokens", "shape": [1], "datatype": "INT32", "data": [4]}]}, 400, "no text_input"),
    ("KServe: NaN temperature", "/v2/models/demo-biogpt/infer",
     b'{"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["a"]}, '
     b'{"name": "temperature", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', None, 400, "finite"),
    ("KServe: unknown input", "/v2/models/demo-biogpt/infer", None,
     {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["a"]},
                 {"name": "beams", "shape": [1], "datatype": "INT32", "data": [4]}]}, 400, "unknown input(s) beams"),
    ("KServe: unknown output", "/v2/models/demo-biogpt/infer", None,
     {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
      "outputs": [{"name": "logits"}]}, 400, "unknown output(s) logits"),
    ("KServe: shape mismatch", "/v2/models/demo-biogpt/infer", None,
     {"inputs": [{"name": "text_input", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, 400,
     "shape [2] needs 2 values, got 1"),
    ("generate: out of range", "/v2/models/demo-biogpt/generate", None, {"text_input": "a", "top_p": 3.0}, 400,
     "top_p must be a number in (0, 1], got 3.0"),
    ("generate: empty text", "/v2/models/demo-biogpt/generate", None, {"text_input": " "}, 400, "text_input is empty"),
    ("generate: unknown model", "/v2/models/other/generate", None, {"text_input": "a"}, 404, "unknown model 'other'"),
]


@pytest.mark.parametrize("name, path, content, body, status, message", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_clear_json_error_and_the_server_stays_healthy(server, name, path, content, body, status,
                                                                       message):
    response = _post(server, path, content, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    text = error["message"] if path.startswith("/v1") else error
    assert message in text, text
    assert "Traceback" not in response.text
    assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200


@pytest.mark.parametrize("headers, message", [({}, "no API key"), ({"Authorization": "Bearer nope"}, "a wrong API key")])
def test_the_api_key_guards_every_route_but_health(server, headers, message):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("GET", "/v2/models/demo-biogpt"),
                         ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/v2")):
        response = httpx.request(method, server.url + path, headers=headers, timeout=10)
        assert response.status_code == 401 and message in response.text, path
    assert httpx.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_schemathesis_finds_no_server_error(server, tmp_path):
    """Property-based requests generated from the served OpenAPI schema: never a 5xx. Bounded in time."""
    pytest.importorskip("schemathesis")
    command = [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json",
               "--header", f"Authorization: Bearer {KEY}", "--checks", "not_a_server_error",
               "--max-examples", "15", "--request-timeout", "60", "--phases", "examples,coverage,fuzzing",
               "--exclude-path", "/metrics", "--no-color"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200


def test_a_burst_over_capacity_gets_429_and_every_accepted_request_completes(demo_package, generator):
    with running_server(demo_package, "--max-running", "1", "--max-queue", "2") as server:
        results: list = [None] * 12
        body = {"model": server.model, "prompt": PROMPT, "max_tokens": 40}

        def call(i: int) -> None:
            results[i] = httpx.post(server.url + "/v1/completions", json=body, timeout=120)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        statuses = [r.status_code for r in results]
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses, statuses
        expected = _texts(generator.generate(PROMPT, max_new_tokens=40))[0]
        for r in results:
            if r.status_code == 429:
                assert r.headers["Retry-After"] == "1" and r.json()["error"]["type"] == "overloaded"
            else:
                assert r.json()["choices"][0]["text"] == expected


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def _wait_for(server, name: str, value: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _metric(server, name) < value:
        time.sleep(0.05)


def test_a_client_that_disconnects_cancels_its_request(small_package):
    with running_server(small_package) as server:
        # streaming: read one event, then hang up
        with httpx.stream("POST", server.url + "/v1/completions", json={
                "model": server.model, "prompt": PROMPT, "max_tokens": 400, "stream": True}, timeout=60) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    break
        _wait_for(server, "ortgen_requests_cancelled_total", 1)
        assert _metric(server, "ortgen_requests_cancelled_total") == 1, "the streaming request was cancelled"
        # not streaming: send the request on a raw socket and close it
        host, port = server.url.removeprefix("http://").split(":")
        body = json.dumps({"model": server.model, "prompt": PROMPT, "max_tokens": 400}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            deadline = time.monotonic() + 30
            while _metric(server, "vllm:num_requests_running") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)  # hang up only once it runs
        _wait_for(server, "ortgen_requests_cancelled_total", 2)
        assert _metric(server, "ortgen_requests_cancelled_total") == 2, "the request on the raw socket was cancelled"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _metric(server, "vllm:num_requests_running") > 0:
            time.sleep(0.1)
        assert _metric(server, "vllm:num_requests_running") == 0


def test_sigterm_refuses_new_requests_finishes_running_ones_and_exits_0(small_package):
    with running_server(small_package, "--grace", "60") as server:
        body = {"model": server.model, "prompt": PROMPT, "max_tokens": 300}
        outcome: dict = {}
        long = threading.Thread(target=lambda: outcome.update(
            response=httpx.post(server.url + "/v1/completions", json=body, timeout=120)))
        long.start()
        deadline = time.monotonic() + 30
        while _metric(server, "vllm:num_requests_running") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(server.url + "/v1/completions", json={**body, "max_tokens": 2}, timeout=30)
        ready = httpx.get(server.url + "/v2/health/ready", timeout=10)
        long.join(120)
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
        assert ready.status_code == 503
        assert outcome["response"].status_code == 200
        with Generator.load(small_package) as generator:
            expected = _texts(generator.generate(PROMPT, max_new_tokens=300))[0]
        assert outcome["response"].json()["choices"][0]["text"] == expected
        assert server.process.wait(30) == 0
        assert "all requests finished" in server.stderr()
