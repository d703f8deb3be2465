"""Search filters: Milvus-syntax expressions parsed once, rendered for Milvus and as bound SQL, and every
bad expression refused with a one-line message that says where and what is allowed."""

from __future__ import annotations

import sqlite3

import pytest

from ortgen.rag.filters import FilterError, Filters, SearchError

ROWS = [("PMID:1", 0, "Statins", "a.medline#PMID:1", "statins lower LDL"),
        ("PMID:1", 1, "Statins", "a.medline#PMID:1", "50% fewer events"),
        ("notes.md", 0, "My notes", "docs/notes.md", "aspirin and \"quotes\""),
        ("doc_x", 2, "under_score", "x.jsonl:3", "back\\slash")]


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA case_sensitive_like=ON")
    conn.execute("CREATE TABLE passages (doc_id TEXT, number INTEGER, title TEXT, source TEXT, text TEXT)")
    conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?)", ROWS)
    return conn


def _select(db, filters: Filters) -> list[tuple[str, int]]:
    where, params = filters.to_sql()
    return db.execute(f"SELECT doc_id, number FROM passages WHERE {where} ORDER BY rowid", params).fetchall()


@pytest.mark.parametrize("expr, expected", [
    ('doc_id == "PMID:1"', [("PMID:1", 0), ("PMID:1", 1)]),
    ('doc_id like "PMID:%" and number >= 1', [("PMID:1", 1)]),
    ('doc_id in ["notes.md", "doc_x"] || number == 1', [("PMID:1", 1), ("notes.md", 0), ("doc_x", 2)]),
    ("not (doc_id like 'PMID%')", [("notes.md", 0), ("doc_x", 2)]),
    ('doc_id not in ["PMID:1"] && !(number > 1)', [("notes.md", 0)]),
    ('text like "50\\\\%%"', [("PMID:1", 1)]),  # \% is a literal percent sign
    ('title like "under\\\\_%"', [("doc_x", 2)]),
    ('text like "%\\"quotes\\""', [("notes.md", 0)]),
    ('text == "back\\\\slash"', [("doc_x", 2)]),
    ('title like "statins"', []),  # like is case-sensitive, as in Milvus
    ("number in []", []),
])
def test_expressions_select_what_they_say(db, expr, expected):
    assert _select(db, Filters(expr=expr)) == expected


def test_structured_filters_combine_and_escape_like_wildcards(db):
    assert _select(db, Filters(doc_ids=("PMID:1", "doc_x"), title_contains="der_sc")) == [("doc_x", 2)]
    assert _select(db, Filters(source_prefix="docs/")) == [("notes.md", 0)]
    assert _select(db, Filters(source_prefix="a.medline#", expr="number == 0")) == [("PMID:1", 0)]
    assert Filters().to_sql() == ("1", []) and Filters().to_expr() == "" and not Filters()


def test_the_milvus_rendering_is_canonical_and_reparses_to_the_same_rows(db):
    filters = Filters(doc_ids=('say "hi"',), source_prefix="50%", expr="number<3 or title like 'x\\\\_y'")
    rendered = filters.to_expr()
    assert rendered == ('(doc_id in ["say \\"hi\\""] and source like "50\\\\%%" and (number < 3 or title like '
                        '"x\\\\_y"))')
    assert _select(db, Filters(expr=rendered)) == _select(db, filters)


def test_values_never_become_sql(db):
    evil = 'doc_id == "x\\" OR 1=1 --"'
    assert _select(db, Filters(expr=evil)) == []
    assert _select(db, Filters(doc_ids=("') OR 1=1 --",))) == []


@pytest.mark.parametrize("expr, message", [
    ("doc_id ==== )", r"filter expression 'doc_id ==== \)': expected a value .* at character 10, found '=='"),
    ('doc_id == "a" and', "expected a field .* at character 18, found the end"),
    ("foo == 1", "unknown field 'foo' at character 1; fields: doc_id"),
    ('number == "x"', "number is a number, compared with a string"),
    ("doc_id == 3", "doc_id is a string; quote the value"),
    ("title like 5", "expected a quoted pattern after like"),
    ('(doc_id == "a"', "expected '\\)' at character 15"),
    ('doc_id == "a" $', "unexpected '\\$' at character 15"),
    ('doc_id == "unterminated', "unexpected '\"' at character 11"),
    ("(" * 40 + 'doc_id == "a"' + ")" * 40, "nests deeper than 32 levels"),
    ("doc_id == 'a' " * 1000, "at most 8192"),
])
def test_bad_expressions_are_one_line_errors(expr, message):
    with pytest.raises(FilterError, match=message) as caught:
        Filters(expr=expr)
    assert "\n" not in str(caught.value) and isinstance(caught.value, SearchError)


def test_bad_filter_objects_are_refused():
    with pytest.raises(FilterError, match="unknown filter"):
        Filters.from_dict({"doc": "x"})
    with pytest.raises(FilterError, match="doc_ids must be a list of strings"):
        Filters.from_dict({"doc_ids": "PMID:1"})
    with pytest.raises(FilterError, match="doc_ids must be a list of strings"):
        Filters.from_dict({"doc_ids": [1, 2]})
    with pytest.raises(FilterError, match="expr must be a string"):
        Filters.from_dict({"expr": 5})
    with pytest.raises(FilterError, match="filters must be an object"):
        Filters.from_dict(["x"])  # type: ignore[arg-type]
