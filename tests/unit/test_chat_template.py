"""Chat templates rendered by ortgen equal transformers' ``apply_chat_template``, character for character.

The fixtures are the real chat templates of Llama 2 / 3 / 3.1, Mistral v0.1 (and Mixtral, the v0.2
variant) and Qwen2 / 2.5 (tests/fixtures/chat_templates, sources in its README). transformers renders
them through a tiny tokenizer built in memory: nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("jinja2")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

from ortgen.errors import OrtgenError  # noqa: E402
from ortgen.package.chat_template import ChatTemplate, find_chat_template  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
SPECIAL_TOKENS: dict[str, dict[str, str | None]] = json.loads((FIXTURES / "special_tokens.json").read_text("utf-8"))
TEMPLATE_FILES = sorted(SPECIAL_TOKENS)

ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."

SYSTEM = {"role": "system", "content": "You are a concise assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello, how are you?"}],
    "system+user": [SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
    "multi-turn": [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "And an even one?"},
    ],
    "system+multi-turn": [
        SYSTEM,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "unicode": [
        {"role": "user", "content": "Grüße aus Köln 👋 — 日本語は話せますか？ naïve café ✓"},
        {"role": "assistant", "content": "はい、少し 🙂 ¡Claro! Ελληνικά, русский, עברית"},
        {"role": "user", "content": "🧪🔬 emoji only: 👩‍🔬🏳️‍🌈"},
    ],
    "whitespace": [
        {"role": "system", "content": "\n  Be exact.  \n"},
        {"role": "user", "content": "   padded question \t\n"},
        {"role": "assistant", "content": "\n  spaced answer   "},
        {"role": "user", "content": " next\n\n"},
    ],
    "whitespace, no system": [
        {"role": "user", "content": "\n\n  leading and trailing  \t"},
        {"role": "assistant", "content": "  answer with spaces\n"},
        {"role": "user", "content": "\tlast "},
    ],
    "empty content": [{"role": "user", "content": ""}],
}


def hf_tokenizer(template: str, special_tokens: dict[str, str | None]) -> PreTrainedTokenizerFast:
    """A transformers tokenizer whose only point is its chat template and special tokens."""
    tokens = {role: text for role, text in special_tokens.items() if text is not None}
    vocab = {text: i for i, text in enumerate(dict.fromkeys(["<unk>", *tokens.values()]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=template, **tokens)


def transformers_render(template: str, special_tokens: dict[str, str | None], messages, **kwargs):
    """(text, None) as transformers renders it, or (None, message) when transformers refuses."""
    try:
        return hf_tokenizer(template, special_tokens).apply_chat_template(messages, tokenize=False, **kwargs), None
    except Exception as exc:  # jinja2.TemplateError from raise_exception, mostly
        return None, str(exc)


def ortgen_render(template: str, special_tokens: dict[str, str | None], messages, **kwargs):
    try:
        return ChatTemplate(template, special_tokens).render(messages, **kwargs), None
    except OrtgenError as exc:
        return None, str(exc)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen", "nogen"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_renders_as_transformers(name, conversation, add_generation_prompt):
    template, tokens, messages = fixture(name), SPECIAL_TOKENS[name], CONVERSATIONS[conversation]
    expected = transformers_render(template, tokens, messages, add_generation_prompt=add_generation_prompt)
    got = ortgen_render(template, tokens, messages, add_generation_prompt=add_generation_prompt)
    assert got == expected
    if name.startswith(("llama-2", "mistral", "mixtral")) and conversation == "multi-turn":
        assert got[0] is not None  # these must render, not merely fail alike


def test_fixture_set_is_complete():
    assert sorted(p.name for p in FIXTURES.glob("*.jinja")) == TEMPLATE_FILES
    assert {"llama-2-7b-chat.jinja", "llama-3-8b-instruct.jinja", "llama-3.1-8b-instruct.jinja",
            "mistral-7b-instruct-v0.1.jinja", "qwen2-instruct.jinja", "qwen2.5-instruct.jinja"} <= set(TEMPLATE_FILES)


def test_render_jinja_template_agrees_when_given_the_special_tokens():
    """The lower-level transformers entry point gives the same text when the tokens are passed as variables."""
    for name in TEMPLATE_FILES:
        tokens = {k: v for k, v in SPECIAL_TOKENS[name].items() if v is not None}
        messages = CONVERSATIONS["multi-turn"]
        rendered, _ = render_jinja_template([messages], chat_template=fixture(name), add_generation_prompt=True,
                                            **tokens)
        assert ChatTemplate(fixture(name), tokens).render(messages) == rendered[0]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_temperature",
        "description": "Get the current temperature at a location — in °C.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "\"City, Country\" <exact>"}},
            "required": ["location"],
        },
    },
}
TOOL_CHAT = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "How warm is it in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
        "name": "get_current_temperature", "arguments": {"location": "Paris, France"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21.5}"},
]


@pytest.mark.parametrize("messages", [TOOL_CHAT[:2], TOOL_CHAT], ids=["ask", "tool-call-and-result"])
@pytest.mark.parametrize("name", ["llama-3.1-8b-instruct.jinja", "qwen2.5-instruct.jinja"])
def test_tools_render_as_transformers(name, messages):
    template, tokens = fixture(name), SPECIAL_TOKENS[name]
    expected = transformers_render(template, tokens, messages, tools=[WEATHER_TOOL], add_generation_prompt=True)
    assert expected[0] is not None
    assert ortgen_render(template, tokens, messages, tools=[WEATHER_TOOL], add_generation_prompt=True) == expected


def test_extra_variables_reach_the_template_and_win_over_special_tokens():
    template, tokens = fixture("llama-3.1-8b-instruct.jinja"), SPECIAL_TOKENS["llama-3.1-8b-instruct.jinja"]
    messages = CONVERSATIONS["system+user"]
    extra = {"date_string": "01 Jan 2030", "bos_token": "<BOS>"}
    expected = transformers_render(template, tokens, messages, add_generation_prompt=True, **extra)
    got = ortgen_render(template, tokens, messages, add_generation_prompt=True, **extra)
    assert got == expected
    assert got[0].startswith("<BOS>") and "Today Date: 01 Jan 2030" in got[0]


@pytest.mark.parametrize("template, variables", [
    ("{{ x | tojson }}|{{ x | tojson(indent=2, sort_keys=true) }}|{{ x | tojson(separators=(',', ':')) }}",
     {"x": {"b": "<é> & 'q' \"d\"", "a": [1, 2.5, None, True]}}),
    ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
     "{{ dict(a=1) | tojson }}{{ dict.fromkeys(['k'], 0) | tojson }}", {}),
    ("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}", {}),
    ("{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}", {}),
    ("{% for m in messages %}\n  {% if m.role == 'user' %}\n    {{ m.content }}\n  {% endif %}\n{% endfor %}\n", {}),
    ("{{ bos_token is defined }} {{ eos_token }} {{ tools }} {{ documents }} {{ add_generation_prompt }}", {}),
    ("{% for d in documents %}{{ d.title }}: {{ d.text }};{% endfor %}", {"documents": [{"title": "T", "text": "x"}]}),
    ("{% for m in messages %}{% for p in m.content %}{{ p.type }}={{ p.text }},{% endfor %}{% endfor %}", {}),
])
def test_environment_matches_transformers(template, variables):
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}] \
        if "p.type" in template else CONVERSATIONS["multi-turn"]
    tokens = {"bos_token": None, "eos_token": "</s>"}
    expected = transformers_render(template, tokens, messages, add_generation_prompt=True, **variables)
    assert expected[0] is not None
    assert ortgen_render(template, tokens, messages, add_generation_prompt=True, **variables) == expected


def test_strftime_now():
    before = datetime.now().strftime("%Y-%m-%d")
    text = ChatTemplate("{{ strftime_now('%Y-%m-%d') }}").render([{"role": "user", "content": "x"}])
    assert text in {before, datetime.now().strftime("%Y-%m-%d")}  # midnight may pass in between


def test_reasoning_is_aliased_as_transformers_does():
    template = "{% for m in messages %}[{{ m.reasoning_content }}|{{ m.thinking }}]{% endfor %}"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "because"}]
    assert ortgen_render(template, {}, messages) == transformers_render(template, {}, messages)


# --- the template refuses ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama-2-7b-chat.jinja", "mistral-7b-instruct-v0.1.jinja"])
def test_non_alternating_roles_raise_the_templates_message(name):
    messages = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    with pytest.raises(OrtgenError) as caught:
        ChatTemplate(fixture(name), SPECIAL_TOKENS[name]).render(messages)
    assert str(caught.value) == ALTERNATE
    assert transformers_render(fixture(name), SPECIAL_TOKENS[name], messages) == (None, ALTERNATE)


def test_mistral_v01_refuses_a_system_message():
    name = "mistral-7b-instruct-v0.1.jinja"
    template = ChatTemplate(fixture(name), SPECIAL_TOKENS[name])
    first = [SYSTEM, {"role": "user", "content": "hi"}]  # index 0 must be the user
    with pytest.raises(OrtgenError, match=r"^Conversation roles must alternate user/assistant/user/assistant/\.\.\.$"):
        template.render(first)
    later = [{"role": "user", "content": "hi"}, SYSTEM]  # in an assistant's place
    with pytest.raises(OrtgenError) as caught:
        template.render(later)
    assert str(caught.value) == "Only user and assistant roles are supported!"
    assert transformers_render(fixture(name), SPECIAL_TOKENS[name], later)[1] == str(caught.value)


def test_a_template_error_is_an_ortgen_error():
    template = ChatTemplate("{{ messages[0].content + 1 }}")
    with pytest.raises(OrtgenError, match="the chat template failed"):
        template.render([{"role": "user", "content": "x"}])
    with pytest.raises(OrtgenError, match="underscore-prefixed"):
        ChatTemplate("{% set ns = namespace() %}{% set ns._x = 1 %}").render([{"role": "user", "content": "x"}])


def test_a_template_that_does_not_compile():
    with pytest.raises(OrtgenError, match=r"does not compile \(line 2\)") as caught:
        ChatTemplate("{% for m in messages %}\n{{ m.content }")
    assert "\n" not in str(caught.value)


def test_the_sandbox_holds():
    with pytest.raises(OrtgenError, match="the chat template failed"):
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([{"role": "user", "content": "x"}])


# --- malformed messages -----------------------------------------------------------------------------

@pytest.mark.parametrize("messages, where", [
    ("hello", "messages must be a list"),
    ({"role": "user", "content": "x"}, "messages must be a list"),
    (None, "messages must be a list"),
    ([], "messages is empty"),
    (["hello"], "messages[0] is a str"),
    ([{"content": "x"}], "messages[0] has no 'role'"),
    ([{"role": "user", "content": "x"}, {"role": 3, "content": "x"}], "messages[1] has a 'role' of type int"),
    ([{"role": "user"}], "messages[0] (user) has no 'content'"),
    ([{"role": "user", "content": None}], "messages[0] (user) has no 'content'"),
    ([{"role": "user", "content": 42}], "messages[0] (user) has a 'content' of type int"),
    ([{"role": "user", "content": {"text": "x"}}], "messages[0] (user) has a 'content' of type dict"),
    ([{"role": "user", "content": ["x"]}], "messages[0].content[0] is not a content part"),
])
def test_malformed_messages_get_one_line_errors(messages, where):
    template = ChatTemplate(fixture("qwen2-instruct.jinja"), SPECIAL_TOKENS["qwen2-instruct.jinja"])
    with pytest.raises(OrtgenError) as caught:
        template.render(messages)
    message = str(caught.value)
    assert message.startswith(where)
    assert "\n" not in message
    assert "string 'role'" in message or "at least one message" in message  # says what is allowed


def test_tool_call_messages_may_omit_content():
    ChatTemplate(fixture("qwen2.5-instruct.jinja")).render(TOOL_CHAT)


@pytest.mark.parametrize("kwargs, where", [
    ({"tools": {"type": "function"}}, "tools must be a list"),
    ({"tools": ["get_weather"]}, "tools[0] is a str"),
    ({"documents": "text"}, "documents must be a list"),
])
def test_malformed_tools_and_documents(kwargs, where):
    with pytest.raises(OrtgenError, match=r"^" + where.replace("[", r"\[").replace("]", r"\]")):
        ChatTemplate("x").render(CONVERSATIONS["user"], **kwargs)


def test_special_tokens_must_be_strings():
    with pytest.raises(OrtgenError, match="special token 'bos_token'"):
        ChatTemplate("x", {"bos_token": 1})  # type: ignore[dict-item]


# --- which template a checkpoint carries ------------------------------------------------------------

def write_config(directory: Path, **config) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def transformers_choice(directory: Path) -> str | None:
    """The template transformers' from_pretrained + apply_chat_template would use (None: it refuses)."""
    hf_tokenizer("", {"eos_token": "</s>"}).backend_tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    try:
        return tokenizer.get_chat_template()
    except ValueError:
        return None


def test_chat_template_jinja_wins_over_tokenizer_config(tmp_path):
    (tmp_path / "chat_template.jinja").write_text("FILE {{ messages }}", encoding="utf-8")
    write_config(tmp_path, chat_template="CONFIG")
    assert find_chat_template(tmp_path) == "FILE {{ messages }}" == transformers_choice(tmp_path)


def test_tokenizer_config_string(tmp_path):
    write_config(tmp_path, chat_template=fixture("llama-3-8b-instruct.jinja"))
    assert find_chat_template(tmp_path) == fixture("llama-3-8b-instruct.jinja") == transformers_choice(tmp_path)


def test_tokenizer_config_list_takes_default(tmp_path):
    write_config(tmp_path, chat_template=[{"name": "tool_use", "template": "TOOLS"},
                                          {"name": "default", "template": "DEFAULT"}])
    assert find_chat_template(tmp_path) == "DEFAULT" == transformers_choice(tmp_path)


def test_tokenizer_config_list_without_default(tmp_path, caplog):
    write_config(tmp_path, chat_template=[{"name": "tool_use", "template": "TOOLS"}])
    with caplog.at_level(logging.WARNING, logger="ortgen"):
        assert find_chat_template(tmp_path) is None
    assert "none named 'default'" in caplog.text
    assert transformers_choice(tmp_path) is None


def test_no_template(tmp_path):
    assert find_chat_template(tmp_path) is None  # an empty directory
    write_config(tmp_path, eos_token="</s>")
    assert find_chat_template(tmp_path) is None
    assert transformers_choice(tmp_path) is None


def test_additional_templates_replace_the_config(tmp_path, caplog):
    (tmp_path / "additional_chat_templates").mkdir()
    (tmp_path / "additional_chat_templates" / "rag.jinja").write_text("RAG", encoding="utf-8")
    write_config(tmp_path, chat_template="CONFIG")
    with caplog.at_level(logging.WARNING, logger="ortgen"):
        assert find_chat_template(tmp_path) is None  # files win, and none of them is the default
    assert transformers_choice(tmp_path) is None
    (tmp_path / "chat_template.jinja").write_text("FILE", encoding="utf-8")
    assert find_chat_template(tmp_path) == "FILE" == transformers_choice(tmp_path)


def test_a_broken_tokenizer_config(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(OrtgenError, match="not valid JSON"):
        find_chat_template(tmp_path)
    write_config(tmp_path, chat_template=3)
    with pytest.raises(OrtgenError, match="chat_template must be a string"):
        find_chat_template(tmp_path)


def test_found_template_renders_like_the_loaded_tokenizer(tmp_path):
    """End to end: a checkpoint directory saved by transformers, read back by both."""
    name = "llama-2-7b-chat.jinja"
    hf_tokenizer(fixture(name), SPECIAL_TOKENS[name]).save_pretrained(tmp_path)
    text = find_chat_template(tmp_path)
    assert text == fixture(name)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    messages = CONVERSATIONS["system+multi-turn"]
    assert ChatTemplate(text, loaded.special_tokens_map).render(messages) == loaded.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
