"""The WebRelease spec: one set of pydantic models, the single source of truth.

The copier validates a release file with these models, the operator re-validates every
resource with them, and the CRD's OpenAPI schema is generated from them
(``webrelease.operator.crd``). Field names are camelCase on the wire (``targetUrl`` style),
snake_case in Python. Models are frozen: a parsed spec is a value, never mutated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

# targets.py, globs.py and places.py depend on nothing that imports spec, so spec can import them
from webrelease.copier.globs import check_globs
from webrelease.copier.places import layout_problems
from webrelease.copier.targets import check_target_template

API_GROUP = "webrelease.dev"
API_VERSION = "v1alpha1"
KIND = "WebRelease"

#: A customer id (docs/design.md "The id rule"). Always matched whole (``CUSTOMER_ID_RE.fullmatch``):
#: Python's ``$`` also matches before a final newline, the apiserver's (Go RE2) does not.
CUSTOMER_ID_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
CUSTOMER_ID_RE = re.compile(CUSTOMER_ID_PATTERN)

#: `inline` customer lists are for small lists only; larger ones belong in object storage.
INLINE_CUSTOMERS_MAX = 100
#: A Job has at most this many indexes (docs/design.md "The API": at most a few thousand shards).
MAX_SHARDS = 5000
#: Default ``templateTimeoutSeconds``: CPU seconds one template file may take for one customer.
TEMPLATE_TIMEOUT_SECONDS = 5.0

URL_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file://.+)$"
ENDPOINT_PATTERN = r"^https?://[^\s/]+(/.*)?$"
REGION_PATTERN = r"^[a-z0-9-]{1,32}$"
S3_OR_FILE_URL = Annotated[str, Field(pattern=URL_PATTERN, max_length=1024)]


class FieldProblems(ValueError):
    """Raised by a model validator for problems of named fields: ``[(camelCase path below the
    model, message)]``; :func:`describe_validation_error` names each field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


class SpecError(ValueError):
    """A release spec that cannot run; ``field`` is the dotted camelCase path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        # messages built from model errors already start with their path: name the field once
        named = not field or message.startswith(field)
        super().__init__(message if named else f"{field}: {message}")
        self.field = field
        self.message = message


class Model(BaseModel):
    """Base of every spec model: frozen, camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        # the string under each field is its description in the CRD (`kubectl explain`)
        use_attribute_docstrings=True,
    )


class SecretKeyRef(Model):
    """A key of a Secret in the release's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret's name."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key whose value is used."""


class SecretRef(Model):
    """A Secret in the release's namespace holding S3 credentials
    (keys ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret's name."""


class Source(Model):
    """The build: an immutable prefix of web assets."""

    url: S3_OR_FILE_URL
    """Where the build is, e.g. `s3://builds/web/2026-11-28/` (`file://` for local runs only)."""


class Target(Model):
    """Where each customer's site goes: a template on the customer's fields, e.g. ``s3://sites/{id}/``."""

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=1024)]
    """A folder per customer, with placeholders for the customer's fields after the bucket, ending
    in `/`: `s3://sites/{id}/`, `s3://sites/{region}/{slug}/`. Two customers may not share one."""

    @field_validator("url")
    @classmethod
    def _has_id_placeholder(cls, v: str) -> str:
        check_target_template(v)
        return v


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the release's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The ConfigMap's name."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key (in `data` or `binaryData`) that holds the list."""


class SqlQuery(Model):
    """A relational database: a SQLAlchemy URL read from a Secret key, and a query returning an
    ``id`` column."""

    secret_ref: SecretKeyRef
    """The Secret key holding the database URL (`postgresql://user:password@host/db`)."""
    query: Annotated[str, Field(min_length=1, max_length=16384)]
    """A read-only query; each row is a customer, its columns the fields (one of them `id`)."""


class Customers(Model):
    """Exactly one source of the customer list."""

    url: S3_OR_FILE_URL | None = None
    """An object holding the list (JSON lines, a JSON array or CSV; `.gz` is unpacked)."""
    config_map_ref: ConfigMapKeyRef | None = None
    """A ConfigMap key holding the list. Waited for when it does not exist yet."""
    inline: Annotated[list[dict[str, Any]], Field(max_length=INLINE_CUSTOMERS_MAX)] | None = None
    """The records themselves (at most 100; larger lists belong in object storage)."""
    sql: SqlQuery | None = None
    """A relational database and a query."""
    format: Literal["auto", "jsonl", "json", "csv"] = "auto"
    """How the list of `url` or `configMapRef` is written; `auto` tells by its name and first byte."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Customers:
        given = [n for n in ("url", "config_map_ref", "inline", "sql") if getattr(self, n) is not None]
        if len(given) != 1:
            names = ", ".join(to_camel(n) for n in given) or "none"
            raise ValueError(f"exactly one of url, configMapRef, inline, sql must be set (got: {names})")
        return self


class Overrides(Model):
    """A per-customer prefix whose files replace or add to the build's, e.g. ``s3://overrides/{id}/``."""

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=1024)]
    """A folder per customer with placeholders like `target.url`, ending in `/`; a customer without
    such a folder gets the build as is."""

    @field_validator("url")
    @classmethod
    def _template_ok(cls, v: str) -> str:
        check_target_template(v)
        return v


class Sharding(Model):
    """How the customers are split into shards (one pod each, Job indexes)."""

    customers_per_shard: Annotated[int, Field(ge=1, le=100_000)] = 50
    """Customers one shard pod releases; more shards are made if the list would need over 5,000."""
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 10
    """Shard pods running at once."""


class FailurePolicy(Model):
    """Retries per shard and how many failed customers are tolerated (Degraded) before the run is Failed."""

    retries_per_shard: Annotated[int, Field(ge=0, le=20)] = 2
    """New pods for a shard that failed (a retry redoes only what differs); bad input is not retried."""
    tolerated_failed_customers: Annotated[int, Field(ge=0)] = 0
    """Failed customers that still make the run Degraded rather than Failed."""
    tolerated_failed_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    """The same as a percentage of the run's customers; the larger of the two counts."""


class Canary(Model):
    """Customers released first; the rest only if all of them succeed."""

    ids: (
        Annotated[
            list[Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, max_length=63)]], Field(max_length=100)
        ]
        | None
    ) = None
    """These customers (all must be in the list)."""
    count: Annotated[int, Field(ge=1, le=1000)] | None = None
    """This many customers, chosen by a hash of their id (the same ones run after run); a count that
    covers the whole list means no canary step, which the run says."""

    @model_validator(mode="after")
    def _one(self) -> Canary:
        if (self.ids is None) == (self.count is None):
            raise ValueError("exactly one of ids, count must be set")
        return self


class Storage(Model):
    """How to reach S3. Credentials from a Secret, or the pod's own identity (ServiceAccount /
    environment)."""

    endpoint_url: Annotated[str, Field(pattern=ENDPOINT_PATTERN, max_length=512)] | None = None
    """The S3 endpoint, `http(s)://host[:port]`; empty for AWS."""
    region: Annotated[str, Field(pattern=REGION_PATTERN, max_length=32)] = "us-east-1"
    """The region: lowercase letters, digits and dashes."""
    addressing_style: Literal["auto", "path", "virtual"] = "path"
    """`path` (`host/bucket/key`, what most S3-compatible servers want) or `virtual` (`bucket.host/key`)."""
    secret_ref: SecretRef | None = None
    """The Secret with the credentials; none: the pods' own identity. Waited for when missing."""
    fast_path: Annotated[
        bool,
        Field(
            description="Send single-part copies, puts and listing pages through the lean S3 request "
            "path (the default); false sends every request through boto3, as does the environment "
            "variable WEBRELEASE_S3_FAST_PATH=0 (docs/storage.md)."
        ),
    ] = True


class Reports(Model):
    """Where snapshots and reports go (``s3://bucket/prefix/`` or ``file://``)."""

    url: S3_OR_FILE_URL
    """A folder; each run writes `<url>/<namespace>/<name>/g<generation>-<uid>/` below it (the
    frozen list, every shard's results, `index.json`)."""


class Toleration(Model):
    """A Kubernetes toleration of the shard pods."""

    key: str | None = None
    """The taint key (none with `Exists`: every taint)."""
    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (the default) or `Exists`."""
    value: str | None = None
    """The taint value, with `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect; none: every effect."""
    toleration_seconds: int | None = None
    """With `NoExecute`: how long the pod stays once tainted."""


class Resources(Model):
    """Kubernetes resource requests and limits of the shard container."""

    requests: dict[str, str] | None = None
    """E.g. `{cpu: 250m, memory: 256Mi}`."""
    limits: dict[str, str] | None = None
    """E.g. `{memory: 1Gi}`."""


class Worker(Model):
    """The shard pods."""

    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """The shard pods' image; none: the operator's default."""
    resources: Resources | None = None
    """Requests and limits; none: the operator's default."""
    service_account_name: Annotated[str, Field(max_length=253)] | None = None
    """The pods' ServiceAccount (e.g. for IAM roles); they never get an API token."""
    node_selector: dict[str, str] | None = None
    """Node labels the pods must run on."""
    tolerations: list[Toleration] | None = None
    """Taints the pods tolerate."""
    objects_in_flight: Annotated[int, Field(ge=1, le=1024)] = 64
    """Object requests one shard pod has going at once."""


DEFAULT_ENTRYPOINTS = ("index.html", "**/*.html")


def _folder_cel(url: str) -> str:
    """CEL: the URL ``url`` (a CEL expression) as a folder, ending with '/'."""
    return f"({url}.endsWith('/') ? {url} : {url} + '/')"


_TARGET_FIXED = "self.target.url.substring(0, self.target.url.indexOf('{'))"
_OVERRIDES_FIXED = "self.overrides.url.substring(0, self.overrides.url.indexOf('{'))"
_SOURCE = _folder_cel("self.source.url")
_REPORTS = _folder_cel("self.reports.url")
_PLACEHOLDER = "self.target.url.contains('{')"

#: The layout rules of ``webrelease.copier.places.layout_problems`` that CEL can say (on the URLs as
#: written: the models also compare ``file://`` URLs percent-decoded, and relative ones), so that
#: ``kubectl apply`` refuses them; the operator re-validates with the models anyway.
LAYOUT_CEL_RULES: Final[tuple[dict[str, JsonValue], ...]] = (
    {
        "rule": f"!{_PLACEHOLDER} || !{_TARGET_FIXED}.startsWith({_SOURCE})",
        "message": "every site would lie inside the build (spec.source.url): put the sites in a "
        "folder of their own, beside the build",
        "fieldPath": ".target.url",
    },
    {
        "rule": f"!{_PLACEHOLDER} || !{_TARGET_FIXED}.startsWith({_REPORTS})",
        "message": "every site would lie inside the reports (spec.reports.url): put the sites in a "
        "folder of their own, beside the reports",
        "fieldPath": ".target.url",
    },
    {
        "rule": "!has(self.overrides) || !(self.overrides.url.startsWith(self.target.url)"
        " || self.target.url.startsWith(self.overrides.url))",
        "message": "every customer's overrides would lie inside or around its own site: put "
        "overrides in a folder beside the sites",
        "fieldPath": ".overrides.url",
    },
    {
        "rule": f"!({_REPORTS}.startsWith({_SOURCE}) || {_SOURCE}.startsWith({_REPORTS}))",
        "message": "the reports and the build overlap: every site would receive the reports; keep "
        "spec.reports.url outside spec.source.url",
        "fieldPath": ".reports.url",
    },
    {
        "rule": f"!has(self.customers.url) || !self.customers.url.startsWith({_SOURCE})",
        "message": "the customer list lies inside the build: every site would receive it; keep "
        "spec.customers.url outside spec.source.url",
        "fieldPath": ".customers.url",
    },
    {
        "rule": "!has(self.overrides) || !self.overrides.url.contains('{')"
        f" || !{_OVERRIDES_FIXED}.startsWith({_SOURCE})",
        "message": "the overrides lie inside the build: every site would receive every customer's "
        "overrides; keep spec.overrides.url outside spec.source.url",
        "fieldPath": ".overrides.url",
    },
)


class WebReleaseSpec(Model):
    """``spec`` of a WebRelease: one build, released to every customer's own site."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": list(LAYOUT_CEL_RULES)})

    source: Source
    target: Target
    customers: Customers
    reports: Reports
    templates: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=100)
    ] = []
    """Build files rendered per customer (Jinja, sandboxed), as globs relative to the build:
    `index.html`, `config.js`, `docs/**/*.html`. Every other file is copied as is."""
    template_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = TEMPLATE_TIMEOUT_SECONDS
    """CPU seconds rendering one template file for one customer may take; a template that loops
    longer fails that customer."""
    overrides: Overrides | None = None
    """Per-customer files that replace or add to the build's."""
    entrypoints: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=100)
    ] = list(DEFAULT_ENTRYPOINTS)
    """Files written last, once everything they load is in place (globs, like `templates`)."""
    prune: bool = False
    """Delete objects of a customer's site that the release does not have."""
    sharding: Sharding = Sharding()
    """How the customers are split into shard pods."""
    failure_policy: FailurePolicy = FailurePolicy()
    """Retries, and how many failed customers make the run Degraded rather than Failed."""
    canary: Canary | None = None
    """Release these customers first; the others only if every one of them succeeded."""
    dry_run: bool = False
    """Plan every customer (what would be copied, rendered, deleted) and write nothing to any site."""
    storage: Storage = Storage()
    """How the operator and the pods reach object storage."""
    worker: Worker = Worker()
    """The shard pods."""

    @field_validator("templates", "entrypoints")
    @classmethod
    def _globs_compile(cls, v: list[str]) -> list[str]:
        check_globs(v)  # a pattern outside the build root is refused here, naming the field
        return v

    @model_validator(mode="after")
    def _locations_apart(self) -> WebReleaseSpec:
        """No site may lie in the build or the reports, overrides not in or around their own site,
        the reports, list and overrides not in the build (``webrelease.copier.places``)."""
        problems = layout_problems(
            source=self.source.url,
            target=self.target.url,
            reports=self.reports.url,
            overrides=self.overrides.url if self.overrides is not None else None,
            customers=self.customers.url,
        )
        if problems:
            raise FieldProblems(problems)
        return self


#: A Kubernetes object name (DNS-1123 subdomain): the release name is also a folder of the report.
RELEASE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Metadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=RELEASE_NAME_PATTERN)] = "release"
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None


class WebRelease(BaseModel):
    """A whole manifest as a user writes it in ``release.yaml``."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)
    api_version: Literal["webrelease.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["WebRelease"]
    metadata: Metadata = Metadata()
    spec: WebReleaseSpec


def describe_validation_error(exc: ValidationError, prefix: str = "spec") -> SpecError:
    """One readable SpecError naming every bad field by its camelCase path."""
    parts = []
    first_field = ""
    for err in exc.errors():
        path = ".".join(p for p in [prefix, *(str(p) for p in err["loc"])] if p) or "(root)"
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblems):
            for field, message in cause.problems:
                named = ".".join(p for p in (path if path != "(root)" else "", field) if p)
                first_field = first_field or named
                parts.append(f"{named}: {message}")
            continue
        first_field = first_field or path
        parts.append(f"{path}: {err['msg']}")
    return SpecError(first_field, "; ".join(parts))


def parse_spec(data: Any) -> WebReleaseSpec:
    """Validate a ``spec`` mapping; raise SpecError naming the field."""
    try:
        return WebReleaseSpec.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


#: A release document may hold at most this many characters (the apiserver stores at most
#: about 1.5 MiB per object)...
MAX_RELEASE_CHARS: Final = 4 * 1024 * 1024
#: ... and expand, counting every alias as often as it is used, to at most this many YAML nodes
#: and characters of scalars: a few lines of anchors can otherwise stand for billions of nodes
#: ("billion laughs"), and validating or sending them on exhausts memory.
MAX_RELEASE_NODES: Final = 200_000
MAX_RELEASE_SCALAR_CHARS: Final = 8 * 1024 * 1024

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _ReleaseLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                earlier = first.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if earlier is not None:
                raise _YamlProblem(
                    line,
                    f"the key {key!r} appears twice in one mapping (also on line {earlier}); YAML "
                    "would keep only the last: remove one",
                )
            first[key] = line
        return super().construct_mapping(node, deep=deep)


class _YamlProblem(ValueError):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


def _expanded_size(root: yaml.Node) -> None:
    """Raise _YamlProblem when ``root`` expands (aliases counted at every use) beyond the bounds."""
    memo: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in open_nodes:
            raise _YamlProblem(node.start_mark.line + 1, "an alias refers to a node that contains it")
        if isinstance(node, yaml.ScalarNode):
            result = (1, len(node.value))
        else:
            open_nodes.add(key)
            children: list[yaml.Node] = (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
            )
            nodes, chars = 1, 0
            for child in children:
                n, c = size(child)
                nodes, chars = nodes + n, chars + c
                if nodes > MAX_RELEASE_NODES or chars > MAX_RELEASE_SCALAR_CHARS:
                    raise _YamlProblem(
                        None,
                        f"the document expands to more than {MAX_RELEASE_NODES} nodes or "
                        f"{MAX_RELEASE_SCALAR_CHARS} characters once its aliases (*name) are "
                        "expanded; write it without (or with fewer) anchors and aliases",
                    )
            open_nodes.discard(key)
            result = (nodes, chars)
        memo[key] = result
        return result

    size(root)


def load_yaml_document(text: str, origin: str) -> Any:
    """One YAML (or JSON) document, bounded: at most :data:`MAX_RELEASE_CHARS` characters, no key
    twice in a mapping, aliases expanding to at most :data:`MAX_RELEASE_NODES` nodes. SpecError
    naming ``origin`` and the line."""
    if len(text) > MAX_RELEASE_CHARS:
        raise SpecError(
            "", f"{origin}: {len(text)} characters, more than a release may hold ({MAX_RELEASE_CHARS})"
        )
    loader = _ReleaseLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _YamlProblem as exc:
        where = f", line {exc.line}" if exc.line is not None else ""
        raise SpecError("", f"{origin}{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError("", f"{origin}: not valid YAML: {exc}") from None
    except RecursionError:
        raise SpecError("", f"{origin}: nested too deeply to be a release") from None
    finally:
        loader.dispose()


def read_release_text(path: str | Path) -> str:
    """The text of a release file; SpecError naming the file when it is missing, a folder,
    unreadable or not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError("", f"{path}: no such file; give the path of a release.yaml") from None
    except IsADirectoryError:
        raise SpecError("", f"{path}: is a folder; give the path of a release.yaml") from None
    except OSError as exc:
        raise SpecError("", f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            "", f"{path}: not UTF-8 (byte {exc.start}, line {line}); save the file as UTF-8"
        ) from None


def load_release(path: str | Path) -> WebRelease:
    """Read a ``release.yaml`` (the same manifest a user would ``kubectl apply``)."""
    text = read_release_text(path)
    data = load_yaml_document(text, str(path))
    if not isinstance(data, dict):
        raise SpecError("", f"{path}: expected a WebRelease manifest (a mapping)")
    try:
        return WebRelease.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc, prefix="") from None
