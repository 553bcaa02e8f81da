"""Every regex of the generated CRD means the same to the apiserver (Go's regexp, RE2 semantics) as
to the Python checks (``re.fullmatch``; pydantic's Rust engine). One corpus goes through both; the
Go side is a small program run with the Go toolchain that ``make tools`` already needs.

Found by this (issue 11): ``CUSTOMER_ID_RE.match("acme\\n")`` matched — Python's ``$`` also matches
before a final newline — so ``acme`` and ``acme\\n`` were both released; RE2's ``$`` does not.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.id_corpus import ID_CORPUS
from webrelease.copier.customers import id_problem
from webrelease.copier.spec import CUSTOMER_ID_PATTERN, Canary
from webrelease.operator.crd import build_crd

GO_MATCHER = """package main

import (
	"encoding/json"
	"os"
	"regexp"
)

type job struct {
	Patterns []string `json:"patterns"`
	Inputs   []string `json:"inputs"`
}

func main() {
	var j job
	if err := json.NewDecoder(os.Stdin).Decode(&j); err != nil {
		panic(err)
	}
	out := make([][]bool, len(j.Patterns))
	for i, p := range j.Patterns {
		re := regexp.MustCompile(p)
		out[i] = make([]bool, len(j.Inputs))
		for k, s := range j.Inputs {
			out[i][k] = re.MatchString(s)
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


_MATCHES = re.compile(r"^self\.matches\(r'(.*)'\)$")


def _regex_of(node: dict[str, Any]) -> str | None:
    """A node's regular expression: its ``pattern``, or the expression of a CEL rule
    ``self.matches(r'...')`` (what the spec's patterns become, so that errors say them in words)."""
    if isinstance(node.get("pattern"), str):
        return str(node["pattern"])
    for rule in node.get("x-kubernetes-validations") or []:
        found = _MATCHES.match(str(rule.get("rule", "")))
        if found:
            return found.group(1)
    return None


def _patterns(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        regex = _regex_of(node)
        if regex is not None:
            yield path, regex
        for key, value in node.items():
            yield from _patterns(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item, path)


def _random_strings(n: int) -> list[str]:
    rng = random.Random(11)
    alphabet = "az09.-_/\\\n\r\t \x00AZé\u2028%:{}"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def go_match(tmp_path_factory: pytest.TempPathFactory) -> Any:
    go = shutil.which("go")
    if go is None:  # make tools needs Go to build the S3 server and the control plane
        pytest.fail("the Go toolchain is needed (it builds the test servers too)")
    src = tmp_path_factory.mktemp("re2") / "match.go"
    src.write_text(GO_MATCHER)
    binary = src.with_suffix("")
    subprocess.run([go, "build", "-o", str(binary), str(src)], check=True, capture_output=True, timeout=300)

    def match(patterns: list[str], inputs: list[str]) -> list[list[bool]]:
        job = json.dumps({"patterns": patterns, "inputs": inputs})
        done = subprocess.run(
            [str(binary)], input=job, capture_output=True, text=True, check=True, timeout=60
        )
        result: list[list[bool]] = json.loads(done.stdout)
        return result

    return match


def test_the_id_rule_agrees_with_the_apiserver(go_match: Any) -> None:
    crd = build_crd()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    canary = schema["properties"]["spec"]["properties"]["canary"]["properties"]["ids"]["items"]
    assert _regex_of(canary) == CUSTOMER_ID_PATTERN
    corpus = list(ID_CORPUS) + _random_strings(3000) + [c + "\n" for c in ID_CORPUS]
    (go,) = go_match([CUSTOMER_ID_PATTERN], corpus)
    disagree = []
    for text, apiserver in zip(corpus, go, strict=True):
        python = id_problem(text) is None
        try:
            Canary(ids=[text])
            model = True
        except ValueError:
            model = False
        if not (python == model == apiserver):
            disagree.append((text, python, model, apiserver))
    assert not disagree, disagree[:20]
    assert sum(go) >= 8  # the good ones are good


def test_every_crd_pattern_full_matches_in_python_as_in_re2(go_match: Any) -> None:
    """Each pattern of the CRD, over the corpus and random strings: ``re.fullmatch`` (what every
    Python check now does) gives what the apiserver gives."""
    import re

    found = dict(_patterns(build_crd()))
    assert len(found) >= 5, found
    patterns = sorted(set(found.values()))
    corpus = [
        *ID_CORPUS,
        *_random_strings(2000),
        "s3://bucket/x/",
        "s3://bucket/x/\n",
        "file:///tmp/x/",
        "https://s3.example:9000",
        "https://s3.example:9000\n",
        "us-east-1",
        "us-east-1\n",
        "rel.name",
        "rel.name\n",
    ]
    results = go_match(patterns, corpus)
    bad = []
    for pattern, row in zip(patterns, results, strict=True):
        compiled = re.compile(pattern)
        for text, apiserver in zip(corpus, row, strict=True):
            if (compiled.fullmatch(text) is not None) != apiserver:
                bad.append((pattern, text, apiserver))
    assert not bad, bad[:20]
