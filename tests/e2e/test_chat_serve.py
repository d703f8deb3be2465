"""``POST /v1/chat/completions`` with the openai client, on a tiny Llama 3 style package carrying Llama 3's
real chat template: each answer's text equals ``Generator.chat`` and transformers' ``generate()`` on
``apply_chat_template``'s ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

from ortgen.export.package import ExportOptions, export_package  # noqa: E402
from ortgen.runtime.generator import Generator, left_pad  # noqa: E402
from ortgen.serve.process import running_server  # noqa: E402
from ortgen.serve.text_alignment import continuation  # noqa: E402
from ortgen.validate.reference import Reference  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates" / "llama-3-8b-instruct.jinja"
MESSAGES = [{"role": "system", "content": "You answer biomedical questions."},
            {"role": "user", "content": "What does aspirin inhibit?"}]


@pytest.fixture(scope="module")
def chat_model(zoo, tmp_path_factory):
    source = tmp_path_factory.mktemp("chat") / "llama3-chat"
    shutil.copytree(zoo.model("llama3").directory, source)
    shutil.copyfile(TEMPLATE, source / "chat_template.jinja")
    package = source.parent / "package"
    export_package(str(source), package, ExportOptions(show_progress=False))
    return zoo.model("llama3"), source, package


@pytest.fixture(scope="module")
def server(chat_model):
    with running_server(chat_model[2]) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def generator(chat_model):
    with Generator.load(chat_model[2]) as loaded:
        yield loaded


def _text(generator, ids, tokens) -> str:
    return continuation(lambda t: generator._decode_text(t) or "", ids, tokens)


@pytest.mark.parametrize("options, extra", [
    (dict(temperature=0), {}),
    (dict(n=2), {"use_beam_search": True}),
])
def test_chat_answers_equal_generator_chat_and_transformers(client, server, generator, chat_model, options, extra):
    from transformers import AutoTokenizer

    model, source, _ = chat_model
    response = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=10,
                                              extra_body=extra, **options)
    assert response.object == "chat.completion"
    ids = generator.chat_ids(MESSAGES)
    expected_ids = AutoTokenizer.from_pretrained(source).apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                             tokenize=True, return_dict=False)
    assert ids == list(expected_ids)
    beams = dict(num_beams=2, num_return_sequences=2) if extra else dict(do_sample=False)
    ours = generator.chat(MESSAGES, max_new_tokens=10, **beams)
    theirs = Reference(model.load(), "tiny").generate(*left_pad([ids], model.pad_token_id), ours.settings,
                                                      eos=model.eos_token_id, pad=model.pad_token_id)[0]
    assert [s.token_ids for s in ours.sequences[0]] == [t.token_ids for t in theirs]
    assert [c.message.content for c in response.choices] == [_text(generator, ids, s.token_ids)
                                                             for s in ours.sequences[0]]
    assert all(c.message.role == "assistant" for c in response.choices)
    assert response.usage.prompt_tokens == len(ids)


def test_streamed_chat_concatenates_to_the_answer_and_reports_usage(client, server):
    whole = client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=12,
                                           temperature=0)
    chunks = list(client.chat.completions.create(model=server.model, messages=MESSAGES, max_completion_tokens=12,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_seeded_sampling_repeats_and_logprobs_come_in_chat_shape(client, server):
    ask = dict(model=server.model, messages=MESSAGES, max_completion_tokens=6, n=2, seed=7, temperature=0.9,
               logprobs=True, top_logprobs=2)
    a, b = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    for choice in a.choices:
        content = choice.logprobs.content
        assert content and all(len(entry.top_logprobs) == 2 and entry.logprob <= 0 for entry in content)
        assert len(content) == 6 or choice.finish_reason == "stop"
        if all(entry.bytes is not None for entry in content):  # whole characters: the tokens spell the answer
            assert bytes(b for entry in content for b in entry.bytes).decode() == choice.message.content


@pytest.mark.parametrize("request_fields, message", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools / function calling"),
    ({"response_format": {"type": "xml"}}, "response_format type must be 'text', 'json_object' or 'json_schema'"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"guided_regex": "a+"}},
     "guided_regex and response_format each constrain the output"),
    ({"extra_body": {"guided_regex": "(a"}}, "regex cannot be enforced"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
      "top_logprobs": 2}, "top_logprobs needs logprobs"),
])
def test_what_chat_cannot_do_is_a_clear_400(client, server, request_fields, message):
    fields = {"model": server.model, "messages": MESSAGES, **request_fields}
    with pytest.raises(openai.BadRequestError, match=message):
        client.chat.completions.create(**fields)


def test_chat_cli_prints_the_answer_generator_chat_gives(chat_model, generator, capsys, monkeypatch):
    import io

    from ortgen.cli import main

    _, _, package = chat_model
    expected = generator.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
                              max_new_tokens=6, do_sample=False).sequences[0][0].text
    assert main(["chat", str(package), "Hello", "--system", "Be brief.", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello"))  # not a terminal: one message from stdin
    assert main(["chat", str(package), "--system", "Be brief.", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_chat_cli_without_a_template_says_what_to_use(demo_package, capsys):
    from ortgen.cli import main

    assert main(["chat", str(demo_package), "Hello"]) != 0
    assert "has no chat template" in capsys.readouterr().err
