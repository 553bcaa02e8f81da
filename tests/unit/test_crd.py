"""The committed CRD is exactly what the pydantic models generate, and it is a structural schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from webrelease.copier.spec import URL_PATTERN, WebReleaseSpec
from webrelease.operator import crd
from webrelease.operator.status import WebReleaseStatus

ROOT = Path(__file__).resolve().parents[2]


def _schema(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("relpath", crd.DEFAULT_OUTPUTS, ids=str)
def test_committed_crd_matches_the_models(relpath: Path) -> None:
    path = ROOT / relpath
    if relpath == crd.CHART_PATH and not path.parent.parent.is_dir():
        pytest.skip("the chart does not exist yet")
    assert path.exists(), f"{relpath} is missing: run `make generate`"
    assert path.read_text(encoding="utf-8") == crd.render_crd(), (
        f"{relpath} differs from the models: run `make generate` and commit the result"
    )


def test_schema_is_structural() -> None:
    schema = _schema(crd.build_crd())
    for path, node in _nodes(schema):
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "not", "$defs", "title", "const"):
            assert banned not in node, f"{path or '.'} has {banned}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), (
                f"{path}: additionalProperties must be a schema"
            )
        if "default" in node:
            assert node["default"] is not None, path


def test_spec_schema_has_every_model_field_by_its_wire_name() -> None:
    spec = _schema(crd.build_crd())["properties"]["spec"]
    wire = {f.validation_alias or name for name, f in WebReleaseSpec.model_fields.items()}
    assert set(spec["properties"]) == wire
    assert set(spec["required"]) == {"source", "target", "customers", "reports"}
    assert spec["properties"]["sharding"]["properties"]["customersPerShard"]["minimum"] == 1
    # optional fields are nullable (pydantic: None means absent)
    assert spec["properties"]["overrides"]["nullable"] is True
    # dict[str, str] and dict[str, Any]
    selector = spec["properties"]["worker"]["properties"]["nodeSelector"]
    assert selector["additionalProperties"] == {"type": "string"}
    inline_item = spec["properties"]["customers"]["properties"]["inline"]["items"]
    assert inline_item == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_cross_field_rules_are_cel() -> None:
    spec = _schema(crd.build_crd())["properties"]["spec"]["properties"]
    customers_rules = spec["customers"]["x-kubernetes-validations"]
    assert any("configMapRef" in r["rule"] and "== 1" in r["rule"] for r in customers_rules)
    canary_rules = spec["canary"]["x-kubernetes-validations"]
    assert canary_rules[0]["rule"] == "has(self.ids) != has(self.count)"


def test_status_is_declared_not_preserved() -> None:
    status = _schema(crd.build_crd())["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    wire = {f.validation_alias or name for name, f in WebReleaseStatus.model_fields.items()}
    assert set(status["properties"]) == wire
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert status["properties"]["shardStatuses"]["x-kubernetes-list-type"] == "atomic"
    for path, node in _nodes(status):
        assert "default" not in node, f"status{path} has a default"


def test_names_columns_and_subresource() -> None:
    doc = crd.build_crd()
    assert doc["metadata"]["name"] == "webreleases.webrelease.dev"
    assert doc["spec"]["names"]["shortNames"] == ["wr"]
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Progress", "Succeeded", "Failed", "Condition"]
    default = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default[-1] == "Age"
    assert {"Reason", "Gen", "Observed", "DryRun", "Build", "Canary"} <= set(columns)


def test_the_first_true_condition_says_what_is_going_on() -> None:
    """The Reason column shows the first True condition's reason: never Accepted's "Valid"."""
    from webrelease.operator.conditions import Outcome, Reason, finished, invalid, running

    def first_true(conds: list[Any]) -> str:
        return str(next(c.reason for c in conds if c.status == "True"))

    run = running([], Reason.SECRET_NOT_FOUND, "Secret 's3' not found", generation=1, now="t")
    assert first_true(run) == "SecretNotFound"
    done = finished(run, Outcome.FAILED, Reason.CANARY_FAILED, "canary", generation=1, now="t")
    assert first_true(done) == "CanaryFailed"
    assert first_true(invalid(run, "spec.x: bad", generation=2, now="t")) == "InvalidSpec"


def test_rendered_yaml_has_no_anchors_and_round_trips() -> None:
    text = crd.render_crd()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == crd.build_crd()


def test_unsupported_union_is_an_error() -> None:
    with pytest.raises(crd.SchemaError, match="anyOf"):
        crd.to_structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crd.yaml"
    assert crd.main([str(out)]) == 0
    assert out.read_text() == crd.render_crd()
    assert crd.main(["--check", str(out)]) == 0
    out.write_text(out.read_text().replace("shortNames", "shortNamez"))
    assert crd.main(["--check", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    out = []
    for key, child in (node.get("properties") or {}).items():
        where = f"{path}.{key}"
        if not str(child.get("description") or "").strip():
            out.append(where)
        out.extend(_undescribed(child, where))
    if isinstance(node.get("items"), dict):
        out.extend(_undescribed(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        out.extend(_undescribed(node["additionalProperties"], f"{path}{{}}"))
    return out


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    """`kubectl explain wr.spec.X` has something to say for every field of spec and status: the
    descriptions come from the models (the string under each field)."""
    schema = _schema(crd.build_crd())
    assert _undescribed(schema["properties"]["spec"], "spec") == []
    assert _undescribed(schema["properties"]["status"], "status") == []


def test_descriptions_cite_nothing_outside_the_repository() -> None:
    text = crd.render_crd()
    for needle in ("SPEC §", "SPEC.md", "the brief", "research/"):
        assert needle not in text, needle


def _patterns(node: Any, path: str = "spec") -> list[str]:
    out = []
    if isinstance(node, dict):
        if "pattern" in node:
            out.append(path)
        for key, child in node.items():
            out.extend(_patterns(child, f"{path}.{key}"))
    elif isinstance(node, list):
        for child in node:
            out.extend(_patterns(child, path))
    return out


def test_spec_patterns_are_said_in_words() -> None:
    """No raw regular expression in `kubectl apply`'s errors: every spec pattern is a CEL rule whose
    message says what is allowed (the same expression, so the check is unchanged)."""
    spec = _schema(crd.build_crd())["properties"]["spec"]
    assert _patterns(spec) == []
    url = spec["properties"]["source"]["properties"]["url"]
    (rule,) = url["x-kubernetes-validations"]
    assert rule["message"].startswith("must be s3://<bucket>/<prefix>")
    assert rule["rule"] == f"self.matches(r'{URL_PATTERN}')"


def test_the_name_limit_is_a_cel_rule_naming_it() -> None:
    (rule,) = _schema(crd.build_crd())["x-kubernetes-validations"]
    assert rule["rule"] == "size(self.metadata.name) <= 63"
    assert "at most 63 characters" in rule["message"]
