"""Customer lists through the live parsers (``sources.TextSource``, ``sources.InlineSource``) and
``load_customers``: every format, every problem reported with its line, sorted output."""

from __future__ import annotations

import pytest

from webrelease.copier.customers import MAX_REPORTED_ERRORS, CustomerListError, load_customers
from webrelease.copier.sources import InlineSource, TextSource


def load(text: str, name: str = "list.jsonl", **kw: object) -> list[dict[str, object]]:
    return load_customers(TextSource(text.encode(), name, key=name), **kw)  # type: ignore[arg-type]


def problems(text: str, name: str = "list.jsonl", **kw: object) -> list[str]:
    with pytest.raises(CustomerListError) as info:
        load(text, name, **kw)
    return info.value.problems


def test_jsonl_is_sorted_by_id_with_id_first() -> None:
    out = load('{"name": "B", "id": "b"}\n\n{"id": "a", "x": [1]}\n')
    assert out == [{"id": "a", "x": [1]}, {"id": "b", "name": "B"}]
    assert list(out[1]) == ["id", "name"]


def test_json_array_and_csv_and_bom() -> None:
    assert [r["id"] for r in load('[{"id": "z"}, {"id": "y"}]', "c.json")] == ["y", "z"]
    assert load('\ufeffid,name,plan\nb,Bee,\na,"A, Inc",team\n', "c.csv") == [
        {"id": "a", "name": "A, Inc", "plan": "team"},
        {"id": "b", "name": "Bee", "plan": ""},
    ]
    # auto-detection without a telling extension
    assert load('[{"id": "q"}]', "list")[0]["id"] == "q"
    assert load("id\nr\n", "list")[0]["id"] == "r"


def test_every_problem_is_reported_with_its_line() -> None:
    text = "\n".join(
        [
            '{"id": "ok"}',
            '{"id": "Bad_Id"}',
            '{"name": "no id"}',
            '{"id": "ok"}',
            "{not json",
            "[1, 2]",
            '{"id": 42}',
            '{"id": "-dash"}',
            '{"id": "' + "a" * 64 + '"}',
        ]
    )
    got = problems(text)
    assert got[0].startswith("line 2: id 'Bad_Id' is not a valid customer id")
    assert got[1] == "line 3: missing id"
    assert got[2] == "line 4: duplicate id 'ok' (first at line 1)"
    assert got[3].startswith("line 5: malformed JSON")
    assert got[4] == "line 6: expected a JSON object, got an array"
    assert got[5].startswith("line 7: id must be a string, got int")
    assert got[6].startswith("line 8: id '-dash'")
    assert got[7].startswith("line 9: id 'aaaa")
    assert len(got) == 8


def test_json_array_problems_name_the_line_of_the_element() -> None:
    got = problems('[\n  {"id": "a"},\n  {"id": "a"},\n  {"id": "B"}\n]', "c.json")
    assert got == [
        "line 3: duplicate id 'a' (first at line 2)",
        "line 4: id 'B' is not a valid customer id (1 to 63 characters: lowercase letters, digits, "
        "'.', '_' or '-', starting and ending with a letter or digit)",
    ]
    assert problems('[{"id": "a"},\n {"id": ', "c.json")[0].startswith("line 2: malformed JSON")
    assert load('{"id": "a"}', "c.json") == [{"id": "a"}]  # one object in a .json is read as JSON Lines
    assert problems('[{"id": "a"}] trailing', "c.json") == [
        "line 1: data after the end of the JSON array ('t'); a list is one array"
    ]


def test_csv_problems() -> None:
    assert problems("name\nx\n", "c.csv") == ["line 1: the CSV header has no 'id' column (columns: 'name')"]
    got = problems("id,name\na,A\nb\nc,C,extra\n", "c.csv")
    assert got == [
        "line 3: 1 CSV fields, the header (line 1) has 2",
        "line 4: 3 CSV fields, the header (line 1) has 2",
    ]


def test_not_utf8_names_the_line() -> None:
    with pytest.raises(CustomerListError) as info:
        load_customers(TextSource(b'{"id": "a"}\n{"id": "b\xff"}\n', "l.jsonl", key="l.jsonl"))
    assert info.value.problems == ["line 2: not valid UTF-8 (byte 0xff at column 10); save the list as UTF-8"]


def test_the_message_lists_the_first_twenty_and_counts_the_rest() -> None:
    text = "\n".join(f'{{"id": "X{i}"}}' for i in range(45))
    with pytest.raises(CustomerListError) as info:
        load(text)
    assert len(info.value.problems) == 45
    message = str(info.value)
    assert "45 problem(s)" in message and "... and 25 more" in message
    assert message.count("is not a valid customer id") == MAX_REPORTED_ERRORS


def test_empty_list_is_an_error_unless_allowed() -> None:
    assert problems("\n\n") == ["the list is empty"]
    assert load("", allow_empty=True) == []


def test_two_customers_with_the_same_site_are_refused() -> None:
    text = (
        '{"id": "a", "domain": "x.example"}\n{"id": "b", "domain": "x.example"}\n{"id": "c", "domain": "y"}'
    )
    got = problems(text, target_template="s3://sites/{domain}/")
    assert got == ["line 2: customer 'b' has the same site s3://sites/x.example/ as 'a' (line 1)"]
    # a record whose site cannot render is left to the shard (that customer fails alone)
    assert len(load('{"id": "a"}\n{"id": "b", "domain": "d"}', target_template="s3://sites/{domain}/")) == 2


def test_inline_items_are_named_by_position() -> None:
    with pytest.raises(CustomerListError) as info:
        load_customers(InlineSource([{"id": "a"}, {"id": "A"}]))
    assert info.value.problems[0].startswith("item 1: id 'A'")
    assert info.value.source == "spec.customers.inline"
