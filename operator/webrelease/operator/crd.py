"""The WebRelease CustomResourceDefinition, generated from the pydantic models.

``spec`` comes from :class:`webrelease.copier.spec.WebReleaseSpec` (the models the copier and the
operator validate with), ``status`` from :class:`webrelease.operator.status.WebReleaseStatus`.
Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema:

- ``$ref`` to ``$defs`` are inlined (the models have no recursion);
- ``anyOf: [X, {type: null}]`` (an optional field) becomes ``X`` with ``nullable: true``;
- ``dict[str, X]`` becomes ``additionalProperties: X``; ``dict[str, Any]`` and ``Any`` keep
  unknown fields (``x-kubernetes-preserve-unknown-fields``); ``extra="forbid"``'s
  ``additionalProperties: false`` is dropped (the apiserver prunes and, with ``kubectl``'s
  strict field validation, rejects unknown fields);
- ``title`` goes, ``const`` becomes a one-value ``enum``, ``null`` defaults go;
- the cross-field rules of model validators, which JSON Schema cannot say, are added as CEL
  ``x-kubernetes-validations`` (:data:`CEL_RULES`), keyed by model name.

Run ``python -m webrelease.operator.crd`` to (re)write the committed copies
(:data:`DEFAULT_OUTPUTS`), ``--check`` to fail when they differ from the models.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from webrelease.copier.spec import (
    CUSTOMER_ID_PATTERN,
    ENDPOINT_PATTERN,
    INLINE_CUSTOMERS_MAX,
    REGION_PATTERN,
    URL_PATTERN,
    WebReleaseSpec,
)
from webrelease.operator.constants import (
    CRD_NAME,
    GROUP,
    KIND,
    MAX_RELEASE_NAME,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from webrelease.operator.status import WebReleaseStatus

#: Where ``python -m webrelease.operator.crd`` writes, relative to the repository root.
MANIFEST_PATH: Final = Path("manifests/crd/webrelease.dev_webreleases.yaml")
CHART_PATH: Final = Path("charts/webrelease/crds/webrelease.dev_webreleases.yaml")
DEFAULT_OUTPUTS: Final = (MANIFEST_PATH, CHART_PATH)

#: CEL rules for the cross-field checks of model validators, by model (``$defs``) name.
#: Each mirrors a ``@model_validator`` in ``webrelease.copier.spec``; the operator re-validates
#: with the models anyway, so these exist to reject bad objects at ``kubectl apply`` time.
CEL_RULES: Final[Mapping[str, Sequence[Mapping[str, str]]]] = {
    "Customers": (
        {
            "rule": "(has(self.url) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0)"
            " + (has(self.inline) ? 1 : 0) + (has(self.sql) ? 1 : 0) == 1",
            "message": "exactly one of url, configMapRef, inline, sql must be set",
            "fieldPath": "",
        },
    ),
    "Canary": (
        {
            "rule": "has(self.ids) != has(self.count)",
            "message": "exactly one of ids, count must be set",
            "fieldPath": "",
        },
    ),
    "Target": (
        {
            "rule": "self.url.contains('{') && self.url.endsWith('/')",
            "message": "target.url must contain a placeholder such as {id} and end with '/'",
            "fieldPath": ".url",
        },
    ),
}

#: What each pattern of the spec allows, in words. In the CRD a pattern becomes a CEL rule with this
#: message (the same regular expression), so that ``kubectl apply`` says what is allowed instead of
#: printing the expression. A spec pattern missing here fails ``tests/unit/test_crd.py``.
PATTERN_WORDS: Final[Mapping[str, str]] = {
    URL_PATTERN: "must be s3://<bucket>/<prefix> (a bucket of 3 to 63 lowercase letters, digits, dots "
    "and dashes, starting and ending with a letter or digit), or file://<path> for local runs",
    ENDPOINT_PATTERN: "must be http:// or https:// followed by a host and optional port, e.g. "
    "https://s3.example.com:9000",
    REGION_PATTERN: "must be 1 to 32 lowercase letters, digits and dashes, e.g. eu-west-1",
    CUSTOMER_ID_PATTERN: "must be a customer id: 1 to 63 lowercase letters, digits, '.', '_' and '-', "
    "starting and ending with a letter or digit",
}

#: CEL rules on the whole object: the name becomes a label value on every Job and pod.
OBJECT_RULES: Final[Sequence[Mapping[str, str]]] = (
    {
        "rule": f"size(self.metadata.name) <= {MAX_RELEASE_NAME}",
        "message": f"metadata.name must be at most {MAX_RELEASE_NAME} characters: it is a label value "
        "on every Job and pod of the release",
    },
)

#: kubectl get wr: what a user looks at first. (The apiserver shows the first match of a JSONPath:
#: conditions are listed so that the first True one says what is going on, see conditions.py.)
PRINTER_COLUMNS: Final = (
    {
        "name": "Progress",
        "type": "string",
        "jsonPath": ".status.progress",
        "description": "Customers done/total.",
    },
    {"name": "Succeeded", "type": "integer", "jsonPath": ".status.customers.succeeded"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.customers.failed"},
    {
        "name": "Condition",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Progressing")].reason',
        "description": "What the run is doing, or how it ended (Complete, Degraded, Failed).",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.status=="True")].reason',
        "description": "Why: the reason of the condition that is true (e.g. SecretNotFound, CanaryFailed).",
    },
    {
        "name": "Gen",
        "type": "integer",
        "jsonPath": ".metadata.generation",
        "description": "The generation of the spec.",
    },
    {
        "name": "Observed",
        "type": "integer",
        "jsonPath": ".status.observedGeneration",
        "description": "The generation the status describes: less than Gen means the status is stale.",
    },
    {
        "name": "DryRun",
        "type": "boolean",
        "jsonPath": ".spec.dryRun",
        "description": "True: a plan only, nothing is written.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Shards", "type": "integer", "jsonPath": ".status.shards.total", "priority": 1},
    {
        "name": "Build",
        "type": "string",
        "jsonPath": ".spec.source.url",
        "priority": 1,
        "description": "The build being released.",
    },
    {
        "name": "Canary",
        "type": "string",
        "jsonPath": ".status.canary.ids",
        "priority": 1,
        "description": "The canary customers of the run (the first 20).",
    },
)

# OpenAPI formats the apiserver knows; others pydantic may emit are dropped.
_K8S_FORMATS: Final = frozenset(
    {"int32", "int64", "float", "double", "byte", "date", "date-time", "password", "uuid", "duration"}
)
_DROP: Final = frozenset({"title", "$defs", "examples", "discriminator", "readOnly", "writeOnly"})


class SchemaError(ValueError):
    """A pydantic schema construct with no structural OpenAPI equivalent."""


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _ref_name(ref: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return ref[len(prefix) :]


def to_structural(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str = "", *, defaults: bool = True
) -> dict[str, Any]:
    """One pydantic JSON Schema node as a structural OpenAPI v3 node (see the module doc).

    ``defaults=False`` leaves every ``default`` out (for ``status``, which only the operator writes).
    """
    node = dict(node)
    rules: list[Mapping[str, str]] = []
    if "$ref" in node:
        name = _ref_name(node.pop("$ref"))
        if name not in defs:
            raise SchemaError(f"{path or '.'}: $ref to unknown definition {name!r}")
        rules.extend(CEL_RULES.get(name, ()))
        node = {**defs[name], **node}
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{path or '.'}: allOf with {len(parts)} parts is not supported")
        inner = to_structural(parts[0], defs, path, defaults=defaults)
        rules.extend(inner.pop("x-kubernetes-validations", []))
        node = {**inner, **node}
    nullable = False
    if "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) != 1 or len(options) != 2:
            raise SchemaError(f"{path or '.'}: anyOf other than [X, null] is not supported: {options}")
        inner = to_structural(non_null[0], defs, path, defaults=defaults)
        rules.extend(inner.pop("x-kubernetes-validations", []))
        node = {**inner, **node}
        nullable = True

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default":
            if value is not None and defaults:
                out["default"] = _strip_none(value)
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {
                k: to_structural(v, defs, f"{path}.{k}", defaults=defaults) for k, v in value.items()
            }
        elif key == "items":
            out["items"] = to_structural(value, defs, f"{path}[]", defaults=defaults)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = to_structural(value, defs, f"{path}{{}}", defaults=defaults)
            # False (extra="forbid"): the apiserver prunes unknown fields; nothing to say.
        elif key == "format":
            if value in _K8S_FORMATS:
                out["format"] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "pattern" and defaults and value in PATTERN_WORDS:
            rules.append({"rule": f"self.matches(r'{value}')", "message": PATTERN_WORDS[value]})
        elif key == "description":
            out["description"] = " ".join(str(value).split()).replace("``", "`")
        elif key == "x-kubernetes-validations":
            rules.extend(value)
        else:
            out[key] = value
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        if "properties" in out:
            out["type"] = "object"
        elif "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        else:
            # Any: whatever the user gives, kept as is.
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if nullable:
        out["nullable"] = True
    if rules:
        out["x-kubernetes-validations"] = [dict(r) for r in rules]
    return {k: out[k] for k in sorted(out, key=_key_rank)}


_KEY_ORDER: Final = ("type", "description", "nullable", "format", "enum", "default", "required", "properties")


def _key_rank(key: str) -> tuple[int, str]:
    return (_KEY_ORDER.index(key), "") if key in _KEY_ORDER else (len(_KEY_ORDER), key)


def model_schema(model: type[Any], *, defaults: bool = True) -> dict[str, Any]:
    """The structural schema of a pydantic model (camelCase names, as on the wire)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = to_structural(raw, defs, defaults=defaults)
    rules = CEL_RULES.get(model.__name__, ())
    if rules:
        schema.setdefault("x-kubernetes-validations", []).extend(dict(r) for r in rules)
    return schema


def _inline_cost_bound(spec: dict[str, Any]) -> None:
    """CEL cost estimation needs bounded lists; make sure the inline customer list says its cap."""
    inline = spec["properties"]["customers"]["properties"]["inline"]
    inline.setdefault("maxItems", INLINE_CUSTOMERS_MAX)


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec = model_schema(WebReleaseSpec)
    _inline_cost_bound(spec)
    status = model_schema(WebReleaseStatus, defaults=False)
    schema = {
        "type": "object",
        "description": "A release of one web build to every customer's own site.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [dict(r) for r in OBJECT_RULES],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "webrelease", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER: Final = (
    "# Generated by `python -m webrelease.operator.crd` from the pydantic models\n"
    "# (webrelease.copier.spec, webrelease.operator.status). Do not edit: change the models and regenerate.\n"
)


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no ``&id001`` anchors where the schema shares a list between nodes."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_crd() -> str:
    """The CRD as the YAML text committed to the repository."""
    body = yaml.dump(build_crd(), Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)
    return HEADER + body


def default_outputs(root: Path) -> list[Path]:
    """The committed copies under ``root``: the manifest, and the chart's once the chart exists."""
    return [
        root / p for p in DEFAULT_OUTPUTS if p == MANIFEST_PATH or (root / p.parts[0] / p.parts[1]).is_dir()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webrelease.operator.crd",
        description="Write the WebRelease CRD generated from the models.",
    )
    parser.add_argument(
        "outputs",
        nargs="*",
        type=Path,
        help=f"files to write (default: {', '.join(map(str, DEFAULT_OUTPUTS))} under --root)",
    )
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root for the default outputs"
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    parser.add_argument("--stdout", action="store_true", help="print the CRD and write nothing")
    args = parser.parse_args(argv)
    text = render_crd()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    outputs = args.outputs or default_outputs(args.root)
    stale = []
    for out in outputs:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(out)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    if stale:
        print(
            "out of date (run `python -m webrelease.operator.crd`): " + ", ".join(map(str, stale)),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
