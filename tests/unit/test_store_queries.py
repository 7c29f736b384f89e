"""The named-query loader (taskd/store/queries.py) and the queries shipped in sql/tasks.sql."""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskd.store.tasks as tasks_module
from taskd.store.queries import load, parse


def test_blocks_are_split_at_name_lines() -> None:
    text = """-- a header comment that belongs to no query

-- name: first
SELECT 1;

-- name: second
-- a comment inside the block is kept
SELECT *
FROM t
WHERE x = $1;
"""
    assert parse(text) == {
        "first": "SELECT 1",
        "second": "-- a comment inside the block is kept\nSELECT *\nFROM t\nWHERE x = $1",
    }


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse("-- name: q\nSELECT 1;\n-- name: other\nSELECT 2;\n-- name: q\nSELECT 3;\n")


def test_a_file_without_names_has_no_queries() -> None:
    assert parse("SELECT 1;\n-- just a comment\n") == {}


def test_name_must_start_the_line() -> None:
    queries = parse("-- name: q\nSELECT '-- name: not_a_block';\n")
    assert list(queries) == ["q"]


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=20)
lines = st.text("abcdefghijklmnopqrstuvwxyz0123456789_ ,=$()*'.", max_size=40)
statements = st.lists(lines, min_size=1, max_size=4).map(
    lambda body: "SELECT " + "\n".join(body).strip() + " FROM t"
)


@given(st.dictionaries(names, statements, min_size=1, max_size=8))
def test_rendered_files_parse_back(queries: dict[str, str]) -> None:
    text = "".join(f"-- name: {name}\n{sql};\n\n" for name, sql in queries.items())
    parsed = parse(text)
    assert list(parsed) == list(queries)
    for name, sql in queries.items():
        assert parsed[name] == sql.strip().rstrip(";").strip()


def test_every_query_in_tasks_sql_loads() -> None:
    queries = load("tasks.sql")
    assert queries, "tasks.sql holds no queries"
    for name, sql in queries.items():
        assert re.fullmatch(r"[a-z_]+", name), name
        assert sql and not sql.endswith(";"), name
        assert "-- name:" not in sql, name
        assert re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|WITH)\b", sql), name


def test_every_query_the_store_uses_exists() -> None:
    used = set(re.findall(r'Q\["(\w+)"\]', inspect.getsource(tasks_module)))
    assert used, "the store names no queries"
    assert used <= set(load("tasks.sql")), used - set(load("tasks.sql"))
