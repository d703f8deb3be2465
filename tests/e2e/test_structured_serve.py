"""Structured output through ``ortgen serve`` with the openai client (chat and completions, streamed and
not, greedy / seeded sampling / beam search) and KServe's generate; each answer equals the same
request to ``Generator`` and follows its schema, choices or regex."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
httpx = pytest.importorskip("httpx")

from ortgen.runtime.generator import Generator  # noqa: E402
from ortgen.serve.process import running_server  # noqa: E402
from tests.helpers.structured import build_package, parses_and_validates  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates" / "llama-3-8b-instruct.jinja"
MESSAGES = [{"role": "user", "content": "Is aspirin an antiplatelet drug? Answer in JSON."}]
SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no", "maybe"]},
                                           "citations": {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                                                    "maximum": 5}, "maxItems": 3}},
          "required": ["answer", "citations"], "additionalProperties": False}


@pytest.fixture(scope="module")
def package(zoo, tmp_path_factory):
    return build_package("llama", tmp_path_factory.mktemp("structured-serve"), zoo, chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def server(package):
    with running_server(package) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def generator(package):
    with Generator.load(package) as loaded:
        yield loaded


RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}


@pytest.mark.parametrize("fields, options", [
    ({"temperature": 0}, {"do_sample": False}),
    ({"n": 2, "seed": 7}, {"do_sample": True, "seed": 7, "num_return_sequences": 2, "top_k": 0}),
    ({"n": 2, "extra_body": {"use_beam_search": True}}, {"num_beams": 2, "num_return_sequences": 2}),
])
def test_chat_json_schema_answers_validate_and_equal_generator_chat(client, server, generator, fields, options):
    response = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=40,
                                              response_format=RESPONSE_FORMAT, **fields)
    expected = generator.chat(MESSAGES, max_new_tokens=40, constraint={"json_schema": SCHEMA}, **options)
    texts = [s.text for s in expected.sequences[0]]
    assert [c.message.content for c in response.choices] == texts
    for choice in response.choices:
        assert choice.finish_reason == "length" or parses_and_validates(choice.message.content, SCHEMA)
    assert any(c.finish_reason == "stop" for c in response.choices)


def test_streamed_json_concatenates_to_the_whole_answer(client, server):
    whole = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=40,
                                           temperature=0, response_format={"type": "json_object"})
    chunks = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=40,
                                            temperature=0, response_format={"type": "json_object"}, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    if whole.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("extra", [
    {"guided_choice": ["yes", "no", "maybe"]},
    {"structured_outputs": {"choice": ["yes", "no", "maybe"]}},
    {"guided_regex": r"[0-9]{2}-[a-z]{2,4}"},
    {"guided_json": {"type": "object", "properties": {"dose": {"type": "integer"}}, "required": ["dose"]}},
])
def test_completions_take_vllm_fields_in_beam_search(client, server, generator, extra):
    response = client.completions.create(model=server.model, prompt="Aspirin is", max_tokens=24, n=3,
                                         extra_body={"use_beam_search": True, **extra})
    name, value = next(iter(extra.items()))
    for choice in response.choices:
        text = choice.text
        if "choice" in name or (name == "structured_outputs"):
            assert choice.finish_reason == "stop" and text in ["yes", "no", "maybe"]
        elif name == "guided_regex":
            assert choice.finish_reason == "length" or re.fullmatch(value, text)
        else:
            assert choice.finish_reason == "length" or parses_and_validates(text, value)
    kind = {"guided_choice": "choice", "guided_regex": "regex", "guided_json": "json_schema"}.get(name)
    constraint = {kind: value} if kind else {"choice": value["choice"]}
    expected = generator.generate("Aspirin is", max_new_tokens=24, num_beams=3, num_return_sequences=3,
                                  constraint=constraint)
    assert [c.text for c in response.choices] == [s.text for s in expected.sequences[0]]


def test_kserve_generate_takes_tensorrt_llm_guided_decoding(server, generator):
    body = {"text_input": "Aspirin is", "max_tokens": 16, "beam_width": 2,
            "guided_decoding_guide_type": "regex", "guided_decoding_guide": "(yes|no), [0-9]{1,3}"}
    reply = httpx.post(f"{server.url}/v2/models/{server.model}/generate", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    expected = generator.generate("Aspirin is", max_new_tokens=16, num_beams=2,
                                  constraint={"regex": "(yes|no), [0-9]{1,3}"})
    assert reply.json()["text_output"] == expected.sequences[0][0].text
    bad = httpx.post(f"{server.url}/v2/models/{server.model}/generate",
                     json={**body, "guided_decoding_guide_type": "xml"}, timeout=60)
    assert bad.status_code == 400 and "guided_decoding_guide_type must be one of" in bad.text


@pytest.mark.parametrize("extra, message", [
    ({"guided_regex": "a+", "guided_choice": ["a"]}, "each constrain the output: pass one"),
    ({"guided_json": {"type": "object", "properties": {"a": {"type": "strin"}}}}, "strin"),
    ({"structured_outputs": {"xml": "<a/>"}}, "unsupported field(s) xml"),
])
def test_bad_structured_fields_are_a_400(client, server, extra, message):
    with pytest.raises(openai.BadRequestError, match=re.escape(message)):
        client.completions.create(model=server.model, prompt="Aspirin is", max_tokens=4, extra_body=extra)
