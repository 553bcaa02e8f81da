"""The corpus of bad customer lists: every one fails validation with a message naming the line or
the cause (first 20 problems, then a count). Sources parse from memory here; the same corpus goes
through the bounded-memory snapshot writer in tests/storage/test_sources_snapshot.py."""

from __future__ import annotations

import pytest

from tests.harness.customer_lists import BAD_LISTS, BadList
from webrelease.copier.customers import CustomerListError, load_customers

CHECKED_HERE = [case for case in BAD_LISTS if not case.needs_required_fields]


def test_the_corpus_covers_every_kind_of_bad_list() -> None:
    assert len(BAD_LISTS) >= 25
    names = " ".join(case.name for case in BAD_LISTS)
    for kind in (
        "malformed",
        "missing id",
        "duplicate",
        "empty",
        "BOM",
        "UTF-16",
        "Latin-1",
        "CSV",
        "Secret",
    ):
        assert kind in names, kind


@pytest.mark.parametrize("case", CHECKED_HERE, ids=[c.name for c in CHECKED_HERE])
def test_a_bad_list_names_the_line_or_the_cause(case: BadList) -> None:
    source = case.make()
    with pytest.raises(CustomerListError) as info:
        load_customers(source, target_template=case.target)
    message = str(info.value)
    assert message.startswith(f"customer list {source.name}: ")
    for fragment in case.expected:
        assert fragment in message, message
    assert len(info.value.problems) <= 45
