"""One corpus of would-be customer ids, run through the Python check and through the CRD's regex as
the apiserver evaluates it (Go's regexp: RE2, where ``$`` is the end of the text)."""

from __future__ import annotations

ID_CORPUS: tuple[str, ...] = (
    # good ones
    "a",
    "0",
    "acme",
    "acme-co",
    "a.b_c-d",
    "a" * 63,
    "a" + "-" * 61 + "z",
    "9lives",
    # newlines and other line ends, where Python's `$` and RE2's differ
    "acme\n",
    "acme\r\n",
    "acme\r",
    "\nacme",
    "ac\nme",
    "acme\n\n",
    "a\n",
    "acme\u2028",
    "acme\x85",
    # everything else the rule refuses
    "",
    "-acme",
    "acme-",
    ".acme",
    "acme.",
    "_a",
    "ACME",
    "Acme",
    "a" * 64,
    "ac me",
    "acme ",
    " acme",
    "acme\t",
    "acme\x00",
    "a/b",
    "a\\b",
    "..",
    ".",
    "café",
    "\u0430cme",
    "acme%2F",
    "a:b",
    "a\u0661",  # an Arabic-Indic digit: Python's \\d would take it, [0-9] does not
)
