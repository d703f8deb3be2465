"""Search filters: the structured ones (documents, source prefix, title) and boolean expressions in
Milvus's syntax, parsed here once so that every store gets a checked expression and a bad one is a
one-line error naming the problem (not a store's traceback).

    expr       := or ( ("or" | "||") or )*            doc_id == "PMID:1" or number < 3
    and-level  := not ( ("and" | "&&") not )*         title like "Statin%" and not (source like "%.md")
    not        := ("not" | "!") not | "(" expr ")" | comparison
    comparison := FIELD (== | != | < | <= | > | >=) VALUE
                | FIELD [not] in [VALUE, ...]
                | FIELD like "PATTERN"                  % any run of characters, _ one; \\% and \\_ literal

FIELD is one of doc_id, title, source, text (strings) and number (an integer: the passage's position
in its document); VALUE a "double" or 'single' quoted string or a number, of the field's type. The
parsed tree renders as a canonical Milvus expression (for a Milvus store) or as SQL with bound
parameters (for the local store): the user's text never reaches either verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from ortgen.errors import OrtgenError

STRING_FIELDS = ("doc_id", "title", "source", "text")
NUMBER_FIELDS = ("number",)
FIELDS = STRING_FIELDS + NUMBER_FIELDS
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
MAX_EXPR_CHARS = 8192
MAX_DEPTH = 32
MAX_LIST = 1024
_SYNTAX = ("fields doc_id, number, title, source, text; operators == != < <= > >=, in [...], not in [...], like "
           "\"pattern\", and/&&, or/||, not/!, parentheses; strings in double or single quotes")


class SearchError(OrtgenError, ValueError):
    """A question or search setting that cannot be used."""


class FilterError(SearchError):
    """A filter that cannot be used (bad expression, unknown filter, wrong type)."""


# -- the tree --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Union[str, int, float]


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Union[str, int, float], ...]
    negated: bool = False


@dataclass(frozen=True)
class Like:
    field: str
    pattern: str


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple["Node", ...]


Node = Union[Compare, InList, Like, Not, BoolOp]


# -- parsing ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    | (?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\)|\[|\]|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""", re.VERBOSE)


@dataclass
class _Token:
    kind: str  # string, number, op, word, end
    text: str
    position: int  # 1-based character position, for messages


def _tokens(expr: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        while position < len(expr) and expr[position].isspace():
            position += 1
        if position >= len(expr):
            tokens.append(_Token("end", "", position + 1))
            return tokens
        match = _TOKEN.match(expr, position)
        if not match or match.end() == position:
            raise FilterError(f"filter expression {_show(expr)}: unexpected {expr[position]!r} at character "
                              f"{position + 1}; allowed: {_SYNTAX}")
        kind = match.lastgroup or "op"
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()


def _show(expr: str) -> str:
    return repr(expr if len(expr) <= 80 else expr[:77] + "...")


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


def _unquote(text: str) -> str:
    r"""A quoted literal's value: \\ \" \' \n \t are escapes; any other backslash stays (so a like
    pattern's \% and \_ keep meaning a literal % and _)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text[1:-1])


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokens(expr)
        self.at = 0

    def fail(self, token: _Token, expected: str) -> FilterError:
        found = "the end" if token.kind == "end" else repr(token.text)
        return FilterError(f"filter expression {_show(self.expr)}: expected {expected} at character "
                           f"{token.position}, found {found}; allowed: {_SYNTAX}")

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.text.lower() in words if token.kind in ("word", "op") else False

    def parse(self) -> Node:
        node = self.disjunction(0)
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "'and', 'or' or the end")
        return node

    def disjunction(self, depth: int) -> Node:
        operands = [self.conjunction(depth)]
        while self.keyword("or", "||"):
            self.take()
            operands.append(self.conjunction(depth))
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def conjunction(self, depth: int) -> Node:
        operands = [self.negation(depth)]
        while self.keyword("and", "&&"):
            self.take()
            operands.append(self.negation(depth))
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def negation(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter expression nests deeper than {MAX_DEPTH} levels")
        if self.keyword("not", "!"):
            self.take()
            return Not(self.negation(depth + 1))
        if self.peek().text == "(":
            self.take()
            node = self.disjunction(depth + 1)
            if self.peek().text != ")":
                raise self.fail(self.peek(), "')'")
            self.take()
            return node
        return self.comparison()

    def value(self, field: str) -> Union[str, int, float]:
        token = self.take()
        if token.kind == "string":
            if field in NUMBER_FIELDS:
                raise FilterError(f"filter expression {_show(self.expr)}: {field} is a number, compared with a string "
                                  f"at character {token.position}")
            return _unquote(token.text)
        if token.kind == "number":
            if field in STRING_FIELDS:
                raise FilterError(f"filter expression {_show(self.expr)}: {field} is a string; quote the value at "
                                  f"character {token.position}")
            number = float(token.text)
            return int(number) if re.fullmatch(r"[-+]?\d+", token.text) else number
        raise self.fail(token, 'a value (a "string" or a number)')

    def comparison(self) -> Node:
        token = self.take()
        if token.kind != "word" or token.text not in FIELDS:
            if token.kind == "word" and token.text.lower() not in ("and", "or", "not", "in", "like"):
                raise FilterError(f"filter expression {_show(self.expr)}: unknown field {token.text!r} at character "
                                  f"{token.position}; fields: {', '.join(FIELDS)}")
            raise self.fail(token, "a field (" + ", ".join(FIELDS) + ")")
        field = token.text
        negated = False
        if self.keyword("not"):
            self.take()
            negated = True
            if not self.keyword("in"):
                raise self.fail(self.peek(), "'in' after 'not'")
        if self.keyword("in"):
            self.take()
            return self.in_list(field, negated)
        if self.keyword("like"):
            self.take()
            if field not in STRING_FIELDS:
                raise FilterError(f"filter expression {_show(self.expr)}: like needs a string field, {field} is a number")
            pattern = self.take()
            if pattern.kind != "string":
                raise self.fail(pattern, 'a quoted pattern after like, e.g. "PMID:%"')
            return Like(field, _unquote(pattern.text))
        op = self.take()
        if op.text not in COMPARISONS:
            raise self.fail(op, "a comparison (== != < <= > >=), 'in', 'not in' or 'like'")
        return Compare(field, op.text, self.value(field))

    def in_list(self, field: str, negated: bool) -> Node:
        if self.peek().text != "[":
            raise self.fail(self.peek(), "'[' after in")
        self.take()
        values: list[Union[str, int, float]] = []
        if self.peek().text != "]":
            while True:
                values.append(self.value(field))
                if self.peek().text == ",":
                    self.take()
                    continue
                break
        if self.peek().text != "]":
            raise self.fail(self.peek(), "',' or ']'")
        self.take()
        if len(values) > MAX_LIST:
            raise FilterError(f"filter expression: an 'in' list has {len(values)} values; at most {MAX_LIST}")
        return InList(field, tuple(values), negated)


def parse_expression(expr: str) -> Node | None:
    """The tree of a Milvus-syntax boolean expression (None for an empty one), or :class:`FilterError`."""
    if not isinstance(expr, str):
        raise FilterError(f"a filter expression must be a string, got {type(expr).__name__}")
    if not expr.strip():
        return None
    if len(expr) > MAX_EXPR_CHARS:
        raise FilterError(f"the filter expression has {len(expr)} characters; at most {MAX_EXPR_CHARS}")
    return _Parser(expr).parse()


# -- rendering -------------------------------------------------------------------------------------


def _milvus_literal(value: Union[str, int, float]) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def to_milvus(node: Node) -> str:
    """The canonical Milvus expression for ``node`` (strings re-quoted: nothing of the input passes raw)."""
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {_milvus_literal(node.value)}"
    if isinstance(node, InList):
        inner = ", ".join(_milvus_literal(v) for v in node.values)
        return f"{node.field} {'not in' if node.negated else 'in'} [{inner}]"
    if isinstance(node, Like):
        return f"{node.field} like {_milvus_literal(node.pattern)}"
    if isinstance(node, Not):
        return f"not ({to_milvus(node.operand)})"
    return "(" + f" {node.op} ".join(to_milvus(o) for o in node.operands) + ")"


def _like_to_sql(pattern: str) -> str:
    """Milvus's like pattern (backslash escapes) -> SQLite's (ESCAPE '\\'); the wildcards are the same."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append("\\" + ch if ch in "%_\\" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    if escaped:
        out.append("\\\\")
    return "".join(out)


def to_sql(node: Node) -> tuple[str, list[Any]]:
    """SQL (over the columns of the same names) and its bound parameters."""
    if isinstance(node, Compare):
        op = {"==": "=", "!=": "<>"}.get(node.op, node.op)
        return f"{node.field} {op} ?", [node.value]
    if isinstance(node, InList):
        if not node.values:
            return ("1" if node.negated else "0"), []
        marks = ", ".join("?" for _ in node.values)
        return f"{node.field} {'NOT IN' if node.negated else 'IN'} ({marks})", list(node.values)
    if isinstance(node, Like):
        return f"{node.field} LIKE ? ESCAPE '\\'", [_like_to_sql(node.pattern)]
    if isinstance(node, Not):
        sql, params = to_sql(node.operand)
        return f"NOT ({sql})", params
    parts, params = [], []
    for operand in node.operands:
        sql, more = to_sql(operand)
        parts.append(f"({sql})")
        params += more
    return f" {node.op.upper()} ".join(parts), params


# -- the filters a search takes --------------------------------------------------------------------


def like_escape(text: str) -> str:
    """``text`` as a literal inside a like pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Filters:
    """Restrict a search; all given conditions must hold.

    ``doc_ids``: only these documents; ``source_prefix``: passages whose source (file path,
    ``file:line`` for JSONL) starts with it; ``title_contains``: a substring of the title;
    ``expr``: a boolean expression in Milvus's syntax over doc_id, number, title, source, text
    (checked when the filter is made: a bad one is a :class:`FilterError`).
    """

    doc_ids: tuple[str, ...] = ()
    source_prefix: str = ""
    title_contains: str = ""
    expr: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.doc_ids, str) or not all(isinstance(d, str) for d in self.doc_ids):
            raise FilterError("filter doc_ids must be a list of strings")
        if len(self.doc_ids) > MAX_LIST:
            raise FilterError(f"filter doc_ids has {len(self.doc_ids)} ids; at most {MAX_LIST}")
        for name in ("source_prefix", "title_contains", "expr"):
            if not isinstance(getattr(self, name), str):
                raise FilterError(f"filter {name} must be a string, got {type(getattr(self, name)).__name__}")
        parse_expression(self.expr)  # refuse a bad expression now, not inside a store

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Filters":
        """From JSON-like input (``{"doc_ids": [...], "source_prefix": ..., ...}``), e.g. an HTTP body."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise FilterError(f"filters must be an object, got {type(data).__name__}")
        unknown = set(data) - {"doc_ids", "source_prefix", "title_contains", "expr"}
        if unknown:
            raise FilterError(f"unknown filter(s) {', '.join(sorted(unknown))}; allowed: doc_ids, source_prefix, "
                              "title_contains, expr")
        doc_ids = data.get("doc_ids") or ()
        if isinstance(doc_ids, str) or not isinstance(doc_ids, (list, tuple)):
            raise FilterError("filter doc_ids must be a list of strings")
        return cls(tuple(doc_ids), data.get("source_prefix") or "", data.get("title_contains") or "",
                   data.get("expr") or "")

    def tree(self) -> Node | None:
        """All conditions as one tree (None: no filter)."""
        parts: list[Node] = []
        if self.doc_ids:
            parts.append(InList("doc_id", tuple(self.doc_ids)))
        if self.source_prefix:
            parts.append(Like("source", like_escape(self.source_prefix) + "%"))
        if self.title_contains:
            parts.append(Like("title", "%" + like_escape(self.title_contains) + "%"))
        parsed = parse_expression(self.expr)
        if parsed is not None:
            parts.append(parsed)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def __bool__(self) -> bool:
        return bool(self.doc_ids or self.source_prefix or self.title_contains or self.expr.strip())

    def to_expr(self) -> str:
        """The Milvus expression ('' for no filter)."""
        tree = self.tree()
        return to_milvus(tree) if tree is not None else ""

    def to_sql(self) -> tuple[str, list[Any]]:
        """SQL condition and parameters ("1" for no filter)."""
        tree = self.tree()
        return to_sql(tree) if tree is not None else ("1", [])
