"""What real clients found in ``ortgen serve`` (issue 21), each reproduced against a running server:
invalid Unicode, unbounded stop strings, BioGPT's Moses text with echo / logprobs / stop strings, deep JSON,
HEAD /metrics and tritonclient's get_model_config; and the prompt log-probabilities lm-eval needs."""

from __future__ import annotations

import json
import random
import time

import httpx
import pytest

from ortgen.runtime.stop_matcher import StopMatcher
from ortgen.serve.process import running_server

openai = pytest.importorskip("openai")
tritonclient_http = pytest.importorskip("tritonclient.http")

PROMPT = "Aspirin reduces the risk of"


@pytest.fixture(scope="module")
def server(demo_package):
    with running_server(demo_package, "--max-body-bytes", "1048576") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def _post(server, path: str, content: bytes) -> httpx.Response:
    return httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"}, timeout=60)


# -- 1. invalid Unicode -------------------------------------------------------------------------------


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", b'{"model": "demo-biogpt", "prompt": "abc\\ud800def", "echo": true, "max_tokens": 2}'),
    ("/v1/completions", b'{"model": "demo-biogpt", "prompt": "abc\\ud800def", "echo": true, "max_tokens": 2, '
                        b'"stream": true}'),
    ("/v1/completions", b'{"model": "demo-biogpt", "prompt": "abc", "stop": ["\\udfff"], "max_tokens": 2}'),
    ("/v2/models/demo-biogpt/generate", b'{"text_input": "abc\\udc00"}'),
    ("/v2/models/demo-biogpt/generate_stream", b'{"text_input": "abc\\udc00"}'),
], ids=["echo", "echo streamed", "stop string", "generate", "generate_stream"])
def test_a_lone_surrogate_is_refused_with_a_400_everywhere(server, path, body):
    response = _post(server, path, body)
    assert response.status_code == 400, response.text
    assert "lone surrogate" in response.text and "must be valid Unicode" in response.text
    assert response.headers["content-type"].startswith("application/json"), "refused before any stream starts"


def test_a_surrogate_pair_is_valid_unicode(server):
    response = _post(server, "/v1/completions", '{"model": "demo-biogpt", "prompt": "pain \\ud83d\\ude00", '
                                                '"echo": true, "max_tokens": 2}'.encode())
    assert response.status_code == 200 and response.json()["choices"][0]["text"].startswith("pain \U0001F600")


# -- 2. stop strings: bounded, and matched at a cost independent of their number -----------------------


@pytest.mark.parametrize("stop, message", [
    (["x"] * 65, "at most 64"), (["y" * 257], "at most 256 characters")])
def test_too_many_or_too_long_stop_strings_are_refused(client, server, stop, message):
    with pytest.raises(openai.BadRequestError, match=message):
        client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4, stop=stop)


def test_the_most_stop_strings_allowed_change_nothing_when_none_matches(client, server):
    rng = random.Random(0)
    stops = ["".join(rng.choice("QXZJ") for _ in range(256)) for _ in range(64)]
    plain = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=40)
    stopped = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=40, stop=stops)
    assert stopped.choices[0].text == plain.choices[0].text and stopped.choices[0].finish_reason == "length"


def _best_seconds(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def test_matching_cost_does_not_grow_with_the_number_of_stop_strings():
    """What a decoder step costs: does a stop string end in the newest token (a window of the last
    ``longest`` characters)? With 1 stop string and with 10,000 the cost is the window's length."""
    rng = random.Random(1)
    alphabet = "abcdefgh "
    text = "".join(rng.choice(alphabet) for _ in range(4_000))

    def stops(n: int) -> StopMatcher:
        return StopMatcher(["".join(rng.choice(alphabet) for _ in range(60)) + "zz" for _ in range(n)])

    def steps(matcher: StopMatcher) -> None:
        for i in range(0, 2_000):
            assert not matcher.ends_after(text[:i + 62], i)

    one, many = stops(1), stops(10_000)
    t_one, t_many = _best_seconds(lambda: steps(one)), _best_seconds(lambda: steps(many))
    assert t_many < 4 * t_one, f"1 stop string: {t_one:.4f}s; 10,000: {t_many:.4f}s"


def test_the_matcher_finds_what_a_plain_search_finds():
    rng = random.Random(2)
    for _ in range(300):
        text = "".join(rng.choice("ab ") for _ in range(rng.randint(0, 30)))
        stops = ["".join(rng.choice("ab ") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 5))]
        ends = [(text.find(s) + len(s), -len(s)) for s in stops if s in text]
        expected = None if not ends else (min(ends)[0] + min(ends)[1], min(ends)[0])
        assert StopMatcher(stops).first(text) == expected, (text, stops)
        position = rng.randint(0, len(text))
        naive = any(text.find(s, i) == i for s in stops for i in range(len(text)) if i + len(s) > position)
        assert StopMatcher(stops).ends_after(text, position) == naive, (text, stops, position)


# -- 3. BioGPT's Moses text: echo, logprobs tokens and offsets, stop strings with a leading space ----------


def test_echo_logprob_tokens_and_offsets_spell_the_detokenised_text(client, server):
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=8, echo=True, logprobs=1)
    choice = response.choices[0]
    completion = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=8).choices[0].text
    assert completion.startswith(" "), "the completion continues the prompt's text: a space between words"
    assert choice.text == PROMPT + completion
    tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
    assert "".join(tokens) == choice.text, "the tokens spell the text, spaces included"
    for token, offset in zip(tokens, offsets):
        assert choice.text[offset:offset + len(token)] == token
    assert choice.logprobs.token_logprobs[0] is None and all(v is not None for v in choice.logprobs.token_logprobs[1:])


def test_a_stop_string_starting_with_a_space_is_cut(client, server):
    full = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=24).choices[0].text
    words = full.split()
    assert len(words) >= 4
    stop = " " + " ".join(words[2:4])  # e.g. " is is": only found with the spaces the detokeniser puts
    assert stop in full
    for stream in (False, True):
        if stream:
            chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=24, stop=[stop],
                                                    stream=True))
            text, reason = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            choice = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=24, stop=[stop]).choices[0]
            text, reason = choice.text, choice.finish_reason
        assert text == full[:full.find(stop)] and reason == "stop", stream


# -- 4. deep JSON, HEAD /metrics, tritonclient's get_model_config -----------------------------------------


def test_deeply_nested_json_is_refused_with_the_limit(server):
    body = b'{"model": "demo-biogpt", "prompt": "a", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    response = _post(server, "/v1/completions", body)
    assert response.status_code == 400
    assert "nests 10001 levels deep; this server accepts at most 64" in response.json()["error"]["message"]


def test_head_metrics_and_tritonclient_get_model_config(server):
    assert httpx.head(server.url + "/metrics", timeout=30).status_code == 200
    triton = tritonclient_http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        config = triton.get_model_config(server.model)
        assert config["name"] == server.model and config["input"][0]["name"] == "text_input"
        assert config["output"][0]["name"] == "text_output"
        assert triton.get_model_config(server.model, model_version="1")["name"] == server.model
    finally:
        triton.close()


# -- prompt log-probabilities (what lm-evaluation-harness asks for) -----------------------------------------


def test_max_tokens_0_with_echo_scores_the_prompt_and_vllm_prompt_logprobs_agree(client, server, demo_package):
    from ortgen.runtime.generator import Generator

    scored = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=2)
    choice = scored.choices[0]
    assert choice.text == PROMPT and scored.usage.completion_tokens == 0
    with Generator.load(demo_package) as generator:
        records = generator.logprobs_of(PROMPT, top=2)
        ids = generator.encode([PROMPT])[0]
    assert len(choice.logprobs.token_logprobs) == len(ids) and choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[1:] == pytest.approx([r.logprob for r in records[1:]], abs=1e-5)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs[1:])
    vllm = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": PROMPT, "max_tokens": 1,
                                                            "prompt_logprobs": 1}, timeout=60).json()
    prompt_logprobs = vllm["choices"][0]["prompt_logprobs"]
    assert prompt_logprobs[0] is None and len(prompt_logprobs) == len(ids)
    for token, record, entry in zip(ids[1:], records[1:], prompt_logprobs[1:]):
        assert entry[str(token)]["logprob"] == pytest.approx(record.logprob, abs=1e-5)
    refused = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": PROMPT,
                                                               "max_tokens": 0}, timeout=60)
    assert refused.status_code == 400 and "max_tokens 0" in refused.text
    json.dumps(vllm)  # plain JSON all the way down
