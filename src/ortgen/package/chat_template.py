"""Chat templates rendered without transformers, the way transformers' ``apply_chat_template`` does.

A Hugging Face chat checkpoint carries a Jinja template that turns a list of messages into the prompt
text the model was trained on. ortgen's runtime needs neither torch nor transformers, so this module
finds the template a checkpoint carries (:func:`find_chat_template`, with transformers' precedence)
and renders it (:class:`ChatTemplate`) in the same sandboxed Jinja environment transformers builds
(``transformers/utils/chat_template_utils.py``: ``_cached_compile_jinja_template`` and
``render_jinja_template``), so the prompt text is identical character for character.

The rendered text already holds the template's special tokens (a Llama template writes ``<s>``
itself): encode it without the tokenizer's own BOS/EOS post-processing, as transformers does
(``add_special_tokens=False``), or the prompt starts with two BOS tokens.

Only jinja2 is needed, and only to render: it is imported when the first template is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ortgen.errors import OrtgenError
from ortgen.jsonfile import read_json

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # transformers' CHAT_TEMPLATE_FILE
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # transformers' CHAT_TEMPLATE_DIR: NAME.jinja each
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
DEFAULT_TEMPLATE_NAME = "default"
MIN_JINJA2 = (3, 1, 6)  # transformers refuses older jinja2: known sandbox escapes, and templates are untrusted

# Names a message's reasoning arrives under; transformers copies it to `reasoning_content` (what
# templates read) and `thinking` (what gpt-oss templates read).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_MESSAGE_SHAPE = ("each message is a dict with a string 'role' and a 'content' that is a string or a list "
                  "of content parts (dicts with a string 'type')")


def find_chat_template(directory: Path) -> str | None:
    """The chat template a Hugging Face checkpoint (or tokenizer) directory carries, or None.

    Precedence is transformers' (``PreTrainedTokenizerBase.from_pretrained``): template files win over
    ``tokenizer_config.json``. ``chat_template.jinja`` is the template named "default", and each
    ``additional_chat_templates/NAME.jinja`` the one named NAME (a ``default.jinja`` there replaces
    ``chat_template.jinja``). Without template files, ``tokenizer_config.json["chat_template"]`` holds
    either one template (a string) or named ones (a list of ``{"name", "template"}``). Of named
    templates this returns "default" (what ``apply_chat_template`` uses when no other name is asked
    for); with none named so, transformers refuses to render, and this logs a warning and returns None.
    """
    directory = Path(directory)
    templates: dict[str, str] = {}
    main_file = directory / CHAT_TEMPLATE_FILE
    if main_file.is_file():
        templates[DEFAULT_TEMPLATE_NAME] = _read_text(main_file)
    extra_dir = directory / CHAT_TEMPLATE_DIR
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = _read_text(path)
    if templates:  # files replace whatever tokenizer_config.json says
        return _default_of(templates, f"{directory} ({CHAT_TEMPLATE_FILE}, {CHAT_TEMPLATE_DIR}/)")

    config_path = directory / TOKENIZER_CONFIG_FILE
    if not config_path.is_file():
        return None
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise OrtgenError(f"{config_path} must hold a JSON object, not {type(config).__name__}")
    value = config.get("chat_template")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named: dict[str, str] = {}
        for entry in value:
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                    and isinstance(entry.get("template"), str)):
                raise OrtgenError(f"{config_path}: chat_template entry {entry!r} is not a "
                                  f'{{"name": string, "template": string}} object')
            named[entry["name"]] = entry["template"]
        return _default_of(named, str(config_path))
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return _default_of(value, str(config_path))
    raise OrtgenError(f"{config_path}: chat_template must be a string or a list of "
                      f'{{"name", "template"}} objects, not {type(value).__name__}')


def _read_text(path: Path) -> str:
    """A template file's text (UTF-8, universal newlines, as transformers' ``open(...).read()``)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OrtgenError(f"cannot read the chat template {path}: {exc}") from exc


def _default_of(templates: Mapping[str, str], where: str) -> str | None:
    if DEFAULT_TEMPLATE_NAME in templates:
        return templates[DEFAULT_TEMPLATE_NAME]
    log.warning("%s has chat templates named %s but none named %r: no chat template is used",
                where, ", ".join(sorted(templates)), DEFAULT_TEMPLATE_NAME)
    return None


class ChatTemplate:
    """One chat template, compiled once, rendering message lists to prompt text.

    ``special_tokens`` maps a role to its token text (``{"bos_token": "<s>", "eos_token": "</s>"}``,
    as ``TokenizerInfo.special_tokens``); the template sees each as a variable, as it sees
    transformers' ``special_tokens_map``. Roles whose text is None are left out, as transformers
    leaves out unset tokens.
    """

    def __init__(self, template: str, special_tokens: Mapping[str, str | None] | None = None) -> None:
        if not isinstance(template, str):
            raise OrtgenError(f"a chat template must be a string, not {type(template).__name__}")
        tokens: dict[str, str] = {}
        for role, text in (special_tokens or {}).items():
            if text is None:
                continue
            if not isinstance(role, str) or not isinstance(text, str):
                raise OrtgenError(f"special token {role!r}: {text!r} is not a string; special tokens map "
                                  "a role (such as 'bos_token') to its text")
            tokens[role] = text
        self.text = template
        self.special_tokens = tokens
        self._compiled = _compile(template)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **extra: Any) -> str:
        """The prompt text for ``messages``, equal to transformers'
        ``apply_chat_template(messages, tokenize=False, add_generation_prompt=..., tools=..., documents=...,
        **extra)`` on a tokenizer with this template and these special tokens.

        ``add_generation_prompt`` ends the text with the header of the assistant's next turn (when the
        template has one). ``tools`` are JSON schemas (dicts; unlike transformers, Python functions are
        not turned into schemas) and ``documents`` dicts (for RAG templates: "title", "text"). ``extra``
        reaches the template as variables (``date_string``, ``enable_thinking``, ...) and, as in
        transformers, wins over a special token of the same name.
        Raises :class:`OrtgenError` for malformed messages and when the template refuses them (its
        ``raise_exception`` message, e.g. "Conversation roles must alternate ...").
        """
        chat = _checked_messages(messages)
        if tools is not None:
            if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
                raise OrtgenError(f"tools must be a list of JSON schemas (dicts), not {type(tools).__name__}")
            for i, tool in enumerate(tools):
                if not isinstance(tool, Mapping):
                    raise OrtgenError(f"tools[{i}] is a {type(tool).__name__}; each tool is a JSON schema (a dict)")
        if documents is not None:
            if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Sequence):
                raise OrtgenError(f"documents must be a list of dicts, not {type(documents).__name__}")
            for i, document in enumerate(documents):
                if not isinstance(document, Mapping):
                    raise OrtgenError(f"documents[{i}] is a {type(document).__name__}; each document is a dict "
                                      "(with 'title' and 'text')")
        variables = _plain({**self.special_tokens, **extra})
        try:
            return self._compiled.render(messages=chat, tools=_plain(tools), documents=_plain(documents),
                                         add_generation_prompt=add_generation_prompt, **variables)
        except OrtgenError:
            raise  # the template's raise_exception
        except Exception as exc:  # jinja2.TemplateError, or a Python error inside an expression
            raise OrtgenError(f"the chat template failed: {_one_line(exc)}") from exc


def _checked_messages(messages: Any) -> list[dict[str, Any]]:
    """``messages`` checked and copied as the template will see them: plain data, keys whose value is
    None dropped (transformers' ``_normalize_chat_messages``), reasoning under its standard names."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise OrtgenError(f"messages must be a list of messages, not {type(messages).__name__}; {_MESSAGE_SHAPE}")
    if not messages:
        raise OrtgenError(f"messages is empty: a chat needs at least one message; {_MESSAGE_SHAPE}")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise OrtgenError(f"messages[{i}] is a {type(message).__name__}, not a dict; {_MESSAGE_SHAPE}")
        message = {key: value for key, value in message.items() if value is not None}
        role = message.get("role")
        if not isinstance(role, str):
            problem = "has no 'role'" if role is None else f"has a 'role' of type {type(role).__name__}"
            raise OrtgenError(f"messages[{i}] {problem}; {_MESSAGE_SHAPE}")
        content = message.get("content")
        if content is None:
            if "tool_calls" not in message:  # an assistant's tool call may come without content
                raise OrtgenError(f"messages[{i}] ({role}) has no 'content'; {_MESSAGE_SHAPE}")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not (isinstance(part, Mapping) and isinstance(part.get("type"), str)):
                    raise OrtgenError(f"messages[{i}].content[{j}] is not a content part; {_MESSAGE_SHAPE}")
        elif not isinstance(content, str):
            raise OrtgenError(f"messages[{i}] ({role}) has a 'content' of type {type(content).__name__}; "
                              f"{_MESSAGE_SHAPE}")
        reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        chat.append(_plain(message))
    return chat


def _plain(value: Any) -> Any:
    """``value`` rebuilt from plain JSON types, as transformers' ``_plain_template_data``: the sandbox
    then sees no object whose methods it does not know (anything else becomes "<TypeName>")."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums, numpy strings) can carry extra methods
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, np.generic):
        return _plain(value.item())  # a numpy scalar: np.bool_(False) must not become a truthy placeholder
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _raise_exception(message: Any) -> None:
    """The template's ``raise_exception(message)``: the template refuses its input."""
    raise OrtgenError(str(message))


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson`` filter: plain ``json.dumps`` (Jinja's own escapes HTML characters)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _compile(template: str) -> "jinja2.Template":
    """``template`` compiled in the environment transformers builds for chat templates."""
    env = _environment()
    try:
        return env.from_string(template)
    except Exception as exc:  # jinja2.TemplateSyntaxError, mostly
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise OrtgenError(f"the chat template does not compile{where}: {_one_line(exc)}") from exc


_ENVIRONMENT: Any = None


def _environment() -> "jinja2.Environment":
    """The shared sandboxed environment (built on first use, so that importing this module never needs
    jinja2): ``ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`` with the
    ``loopcontrols`` extension and ``{% generation %}`` (which renders its body; transformers uses it to
    mark assistant tokens), the ``tojson`` filter, and the globals ``raise_exception``,
    ``strftime_now``, ``dict`` and ``namespace`` (restricted as transformers restricts them)."""
    global _ENVIRONMENT
    if _ENVIRONMENT is not None:
        return _ENVIRONMENT
    try:
        import jinja2
        import jinja2.ext
        import jinja2.nodes
        import jinja2.utils
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise OrtgenError("chat templates need jinja2 (pip install 'jinja2>=3.1.6')") from exc
    version = tuple(int(part) for part in jinja2.__version__.split(".")[:3] if part.isdigit())
    if version < MIN_JINJA2:
        raise OrtgenError(f"chat templates need jinja2>=3.1.6 (older versions have sandbox escapes); "
                          f"this is jinja2 {jinja2.__version__}")

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    class TemplateDict:
        """``dict(...)`` and ``dict.fromkeys(...)``, without the dict type itself to poke at."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    def check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute.")

    class TemplateNamespace(jinja2.utils.Namespace):
        """``namespace(...)`` refusing underscore-prefixed attributes (no reach into CPython internals)."""

        def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick: namespace(self=...) works
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    _ENVIRONMENT = env
    return env
